"""Config of the built-in demo (`python -m metatalk_jax.demo`): a talking face from nothing.

Launch:  python -m metatalk_jax.demo --out demo_out                  (<= 10 min on 2 CPU cores)
         python -m metatalk_jax.demo --config demo:tiny               (the tests' smaller run)
Override any key:  --config.renderer.total_steps=2000 --config.sentence="Hello there."

The demo runs the real stages on offline material: the carphone clip (a man talking, 4 s, no
audio) is prepared as the subject with the offline BFM-derived model; the viseme teacher
(espeak-ng sentences -> mouth shapes) stands in for Wav2Lip pseudo videos; the A2E and the
renderer train with the stages' `cpu` configs; `sentence`, spoken by espeak-ng, drives the
inference. `prepare`, `a2e` and `renderer` are the stages' own nested configs: the stage
config named in `bases` with the few changes below (the demo prints each stage's equivalent
command line).
"""

import ml_collections

from metatalk_jax.config_loading import load_config, set_keys
from metatalk_jax.configs.renderer import use_faithful_renderer


def get_config(arg=None):
    if arg not in (None, "", "tiny"):
        raise ValueError(f"demo: unknown variant {arg!r} (known: tiny)")
    tiny = arg == "tiny"
    config = ml_collections.ConfigDict()
    config.sentence = ("Hello there." if tiny else
                       "Hello! I am a talking face made from a few seconds of video. "
                       "My lips move with every word you hear.")
    config.voice = "en-us"
    config.rate_wpm = 150
    config.viseme_clips = 6 if tiny else 40    # espeak-ng sentences the A2E learns from
    config.lip_sync_frames = 250               # output frames measured on pixels (0 = off)
    variant = "tiny" if tiny else "cpu"
    config.bases = ml_collections.ConfigDict(dict(
        prepare="prepare:tiny", a2e=f"a2e:{variant}", renderer=f"renderer:{variant}"))
    config.prepare = set_keys(load_config(config.bases.prepare), {
        "audio_required": False})              # the carphone clip has no sound
    # The carphone clip has no audio: the A2E learns from the viseme corpus alone.
    config.a2e = set_keys(load_config(config.bases.a2e), {
        "data.pseudo_ratio": 1.0, "data.eval_on": "pseudo"})
    config.renderer = load_config(config.bases.renderer)
    if tiny:
        set_keys(config.a2e, {"total_steps": 20})
        set_keys(config.renderer, {"total_steps": 4})
        use_faithful_renderer(config.renderer)
    return config
