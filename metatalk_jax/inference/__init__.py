"""Inference: audio + a prepared subject + trained A2E and renderer -> lip-synced HD video.

background.py       the subject's frames in ping-pong order, streamed (block-reversed decoding)
trained_models.py   A2E / renderer checkpoints (a training work dir or one step) -> callables
audio_drive.py      audio -> per-frame expressions through the A2E
face_blend.py       the renderer's face into the frame: blend mask, feathered paste-back
pipeline.py         the streaming pipeline behind `python -m metatalk_jax.infer`
"""
