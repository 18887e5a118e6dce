"""Config of the built-in demo (`python -m metatalk_jax.demo`): render the offline face model.

Launch:  python -m metatalk_jax.demo --config configs/demo.py            (512 px, 72 frames)
         python -m metatalk_jax.demo --config configs/demo.py:tiny       (CPU tests, seconds)
Override any key:  --config.size=1024
"""

import ml_collections


def get_config(arg=None):
    config = ml_collections.ConfigDict()
    config.model = "offline"          # "offline" (BFM-derived, downloaded once) or "procedural"
    config.size = 512                 # rendered image side, pixels
    config.frames = 72                # turntable frames (3 s at 24 fps)
    config.fps = 24.0
    config.max_yaw_deg = 40.0         # turntable sweep is +-max_yaw_deg
    config.mouth_cycles = 3.0         # open/close cycles of the mouth over the turntable
    config.batch = 8                  # frames rendered per jit call
    config.seed = 0
    if arg == "tiny":
        config.model = "procedural"
        config.size = 96
        config.frames = 8
        config.batch = 4
    elif arg not in (None, ""):
        raise ValueError(f"configs/demo.py: unknown variant {arg!r} (known: tiny)")
    return config
