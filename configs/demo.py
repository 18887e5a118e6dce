"""Config of the built-in demo (`python -m metatalk_jax.demo`): a talking face from nothing.

Launch:  python -m metatalk_jax.demo --out demo_out                   (<= 10 min on 2 CPU cores)
         python -m metatalk_jax.demo --config configs/demo.py:tiny   (the tests' smaller run)
Override any key:  --config.renderer_steps=2000 --config.sentence="Hello there."

The demo runs the real stages on offline material: the carphone clip (a man talking, 4 s, no
audio) is prepared as the subject with the offline BFM-derived model; the viseme teacher
(espeak-ng sentences -> mouth shapes) stands in for Wav2Lip pseudo videos; the A2E and the
renderer train with small settings; `sentence`, spoken by espeak-ng, drives the inference.
"""

import ml_collections


def get_config(arg=None):
    config = ml_collections.ConfigDict()
    config.sentence = ("Hello! I am a talking face made from a few seconds of video. "
                       "My lips move with every word you hear.")
    config.voice = "en-us"
    config.rate_wpm = 150
    config.viseme_clips = 40               # espeak-ng sentences the A2E learns from
    # The A2E (configs/a2e.py:tiny with these changes).
    config.a2e_steps = 700
    config.a2e_batch = 32
    config.a2e_window = 9                  # frames per example
    config.a2e_mel_columns = 16            # Wav2Lip's 0.2 s of mel per frame
    config.a2e_channels = (16, 32, 64)
    config.a2e_features = 64
    # The renderer (configs/renderer.py:tiny with these changes).
    config.renderer_steps = 1200
    config.renderer_resolution = 64        # divides the subject's 128-px crops
    config.renderer_batch = 8
    config.renderer_num_downs = 6
    config.renderer_ngf = 16
    if arg == "tiny":
        config.sentence = "Hello there."
        config.viseme_clips = 6
        config.a2e_steps = 20
        config.a2e_batch = 16
        config.a2e_window = 7
        config.a2e_mel_columns = 8
        config.a2e_channels = (8, 16, 32)
        config.a2e_features = 32
        config.renderer_steps = 4
        config.renderer_resolution = 32
        config.renderer_num_downs = 5
        config.renderer_ngf = 8
    elif arg not in (None, ""):
        raise ValueError(f"configs/demo.py: unknown variant {arg!r} (known: tiny)")
    return config
