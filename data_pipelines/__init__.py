"""Training data: TFDS datasets as ArrayRecord files (written and read without TensorFlow) and
the one windowed grain pipeline that feeds both trained models.

tfds_shards.py     the shard writer, metadata and atomic publication both formats share
subject_frames.py  the subject's frame dataset (the `target_video` format), one example per
                   frame: writing and reading back
pseudo_corpus.py   the pseudo-video corpus: immutable parts of whole clips, split by clip
windows.py         W-frame windows over stored frames and the mixed, process-count independent,
                   checkpointable batch stream (make_window_batches)
a2e_windows.py     what an A2E window holds (mel, expression); renderer_windows.py: what a
                   renderer window holds (cached renders, mouth masks, the target crop)
"""
