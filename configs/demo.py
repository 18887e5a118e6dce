"""Config of the built-in demo (`python -m metatalk_jax.demo`): a talking face from nothing, or
from your own clip.

Launch:  python -m metatalk_jax.demo --out demo_out                  (<= 10 min on 2 CPU cores)
         python -m metatalk_jax.demo --video my.mp4 --text "Hello." --out my_demo
                               (your own 30-60 s clip: 11-17 min on 2 quiet cores; variant video)
         python -m metatalk_jax.demo --config demo:tiny               (the tests' smaller run)
Override any key:  --config.renderer.total_steps=2000 --config.sentence="Hello there."

The demo runs the real stages on offline material: the carphone clip (a man talking, 4 s, no
audio) is prepared as the subject with the offline BFM-derived model; the viseme teacher
(espeak-ng sentences -> mouth shapes) stands in for Wav2Lip pseudo videos; the A2E and the
renderer train with the stages' `cpu` configs; `sentence`, spoken by espeak-ng, drives the
inference. `prepare`, `a2e` and `renderer` are the stages' own nested configs: the stage config
named in `bases` with the few changes below (the demo prints each stage's equivalent command).

Variant `video` (chosen by `--video`): your clip, with its own sound, is the subject; the A2E
learns from its audio and the viseme corpus half and half, and the training steps grow with the
clip's length (`scale_to_clip`, settings under `scale`).
"""

import ml_collections

from metatalk_jax.config_loading import load_config, set_keys
from metatalk_jax.configs.renderer import use_faithful_renderer, use_mouth_reference
from metatalk_jax.errors import InputError

VARIANTS = ("tiny", "video")


def get_config(arg=None):
    if arg not in (None, "", *VARIANTS):
        raise InputError(f"demo: unknown variant {arg!r} (known: {', '.join(VARIANTS)})")
    tiny, video = arg == "tiny", arg == "video"
    config = ml_collections.ConfigDict()
    config.sentence = ("Hello there." if tiny else
                       "Hello! I am a talking face made from a few seconds of video. "
                       "My lips move with every word you hear.")
    config.voice = "en-us"
    config.rate_wpm = 150
    config.pause_s = 1.0                       # silence between the sentence's sentences
    config.viseme_clips = 6 if tiny else 40    # espeak-ng sentences the A2E learns from
    config.lip_sync_frames = 250               # output frames measured on pixels (0 = off)
    variant = "tiny" if tiny else "cpu"
    config.bases = ml_collections.ConfigDict(dict(
        prepare=f"prepare:{'cpu' if video else 'tiny'}", a2e=f"a2e:{variant}",
        renderer=f"renderer:{variant}"))
    config.prepare = load_config(config.bases.prepare)
    config.a2e = load_config(config.bases.a2e)
    config.renderer = load_config(config.bases.renderer)
    if video:
        # steps = clip(steps_per_frame x frames, min, max): a 60 s clip reaches the maximum
        # (time per clip length: benchmarks/BENCHMARKS.md, "Your own clip")
        config.scale = ml_collections.ConfigDict(dict(
            a2e_steps_per_frame=1.0, a2e_steps=(700, 1500),
            renderer_steps_per_frame=2.0, renderer_steps=(1200, 3000)))
        return config
    # The carphone clip has no sound: the A2E learns from the viseme corpus alone.
    set_keys(config.prepare, {"audio_required": False})
    set_keys(config.a2e, {"data.pseudo_ratio": 1.0, "data.eval_on": "pseudo"})
    if tiny:
        set_keys(config.a2e, {"total_steps": 20})
        set_keys(config.renderer, {"total_steps": 4})
        use_faithful_renderer(config.renderer)
        use_mouth_reference(config.renderer)
    return config


def scale_to_clip(config, frames: int, given=()):
    """Sets the A2E's and the renderer's training steps for a clip of `frames` frames (variant
    `video`), with checkpoints at the middle and the end and one evaluation at the end.

    given: the keys the user set on the command line ("renderer.total_steps", ...); those are
    kept, and a given total_steps sets the middle and end of the others in place of the scaled
    one (a user's `--config.renderer.total_steps=500` is not overwritten by the scaling)."""
    given = set(given)
    for stage in ("a2e", "renderer"):
        low, high = config.scale[f"{stage}_steps"]
        steps = int(min(max(config.scale[f"{stage}_steps_per_frame"] * frames, low), high))
        if f"{stage}.total_steps" in given:
            steps = int(config[stage].total_steps)
        wanted = {"total_steps": steps, "checkpoint_every_steps": max(steps // 2, 1),
                  "eval_every_steps": steps, "preview_every_steps": steps}
        set_keys(config[stage], {key: value for key, value in wanted.items()
                                 if f"{stage}.{key}" not in given})
    return config
