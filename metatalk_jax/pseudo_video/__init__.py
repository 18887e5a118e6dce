"""Pseudo-video generation (Meta Talk's contribution 1): Wav2Lip re-voices the target video with
many audio clips, an expression-only 3DMM fit turns the pseudo frames into extra A2E data.

Modules: audio_dir (clip scanning), wav2lip_run (boxes, inference, feathered paste),
fit_expression (expression-only fit), generate (the resumable driver), config (defaults).
"""
