"""Default settings of pseudo-video generation (`python -m metatalk_jax.pseudo`).

Loaded with metatalk_jax.config_loading.load_config(this file, overrides), so every key can be
overridden on the command line as --config.key=value (e.g. --config.fit.steps=40).
"""

import ml_collections


def get_config(arg=None):
    config = ml_collections.ConfigDict()
    config.batch_size = 128                # Wav2Lip frames per compiled call
    config.clips_per_part = 16             # clips per published corpus part (a kill loses < 1)
    config.max_clips = 0                   # only the first N clips of the sorted list (0 = all)
    config.feather_fraction = 0.15         # paste feather, fraction of the box's shorter side
    config.min_seconds = 0.5               # shorter clips are skipped
    config.silence_dbfs = -60.0            # quieter clips are skipped
    config.validation_fraction = 0.1       # of clips, by a hash of the clip id
    config.previews = True                 # one side-by-side PNG per part
    config.model = ""                      # the morphable model .npz prepare used ("" = offline)
    config.fit = ml_collections.ConfigDict()
    config.fit.steps = 30                  # Adam steps per batch
    config.fit.landmarks = "dlib"          # backend reading the pseudo frames' 68 landmarks for
                                           # the landmark term ("" = photometric only)
    config.fit.batch = 16                  # frames per compiled fitting call
    config.fit.lr = 0.1                    # expression step size
    config.fit.visibility_refresh = 4
    config.fit.weights = ml_collections.ConfigDict(dict(
        photometric=1.9, landmark=1.6e-3, regularization=3e-4, expression=0.8))
    if arg not in (None, ""):
        raise ValueError(f"configs/pseudo.py: unknown variant {arg!r}")
    return config
