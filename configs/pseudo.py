"""Default settings of pseudo-video generation (`python -m metatalk_jax.pseudo`).

Loaded with metatalk_jax.config_loading.load_config(this file, overrides), so every key can be
overridden on the command line as --config.key=value (e.g. --config.fit.steps=40). The Wav2Lip
teacher (default) reads the top-level keys and `fit`; the viseme teacher (`--teacher visemes`,
metatalk_jax/pseudo_video/viseme_teacher.py) reads `visemes` plus clips_per_part,
validation_fraction, previews and model. Tuples are overridden as tuples, e.g.
--config.visemes.voices="('en-us','en+m3')" --config.visemes.rates_wpm="(150,170)".
"""

import ml_collections

from metatalk_jax.errors import InputError


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
    config.visemes = ml_collections.ConfigDict()
    v = config.visemes
    v.sentences_file = ""                  # UTF-8 text, one sentence per line ("" = built-in 40)
    v.max_clips = 0                        # only the first N sentences (0 = all)
    v.voices = ("en-us", "en", "en-us+f3", "en+m3", "en-gb-x-rp", "en-us+m2", "en-029+f2",
                "en-gb-scotland")          # espeak-ng voice[+variant] names, cycled over clips
    v.rates_wpm = (135, 150, 165, 180, 200)  # speaking rates drawn per clip (words/minute)
    v.pitches = (35, 50, 65)               # espeak base pitches drawn per clip (0-100)
    v.gain_db_range = (-6.0, 0.0)          # audio gain drawn per clip, dB
    v.seed = 0                             # of the per-clip draws (fixed: resumes match)
    v.lead_silence_s = 0.2                 # silence before each sentence (the mouth at rest)
    v.smoothing_s = 0.03                   # Gaussian sigma of the mouth-control tracks, s
    v.min_pause_s = 0.1                    # shorter pauses are word gaps (no rest)
    v.opening_scale = 1.0                  # multiplies every viseme's lip opening
    v.match_subject_opening = True         # ... after scaling it to the subject's own range
                                           # (95th percentile of its fitted openings)
    v.width_scale = 1.0                    # ... mouth-width change (spread/rounded)
    v.protrusion_scale = 1.0               # ... lip protrusion
    v.closed_gap = 0.0                     # inner-lip gap of closed lips, fraction of face height
    v.max_delta_norm = 4.0                 # cap of |expression - neutral| per frame
    v.preview_resolution = 160             # pixels per viseme tile in previews/visemes.png
    if arg not in (None, ""):
        raise InputError(f"configs/pseudo.py: unknown variant {arg!r}")
    return config
