"""TFDS builders (ArrayRecord, written and read without TensorFlow) and grain loaders.

target_video.py: one subject's target video, one example per frame (write_target_video_shards);
target_loader.py: reading it back (open_target_source, decode_example, make_target_loader).
The pseudo-video builder follows with the Wav2Lip pseudo-video issue.
"""
