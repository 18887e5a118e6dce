"""Silence is silence: in the driving audio's pauses the drive settles on the subject's own
resting mouth.

An A2E trained on speech has seen few long pauses, and what it predicts for silence is whatever
its features of near-zero audio map to, often a half-open mouth. The pauses are known from the
audio itself (media/voice_activity.py: per frame, thresholds from the clip's own levels, pauses
of at least 0.4 s), so in them the expression is blended towards the subject's rest expression
by `silence_weight`'s raised-cosine ramps, which lie inside the pause: speech frames keep the
A2E's expression untouched and the mouth closes and reopens smoothly (no pops).

The rest expression is the subject's own face at rest with the lips together: its neutral
expression (the per-coefficient median of its fitted frames) with the inner-lip gap closed by
the mouth-shape directions of its own model (subject/mouth_shapes.py), the same closed mouth the
viseme teacher gives its corpus's silences. (Its most closed fitted frames are no substitute:
someone who keeps the lips slightly apart, like the carphone clip's speaker, never shows one.)
"""

from __future__ import annotations

import numpy as np

from metatalk_jax.face3d.morphable import MorphableModel
from metatalk_jax.media.voice_activity import silence_weight, voice_activity
from metatalk_jax.subject.mouth_shapes import MouthShapes, neutral_expression


def rest_expression(model: MorphableModel, expressions) -> np.ndarray:
    """float32 [E]: the subject's face at rest with the lips together (module docstring), from
    its folded model and fitted expressions [T, E]."""
    return MouthShapes(model, neutral_expression(expressions)).closed()


def settle_in_silence(expressions, weight, rest) -> np.ndarray:
    """float32 [N, E]: expressions [N, E] blended towards `rest` [E] by weight [N] in [0, 1]."""
    w = np.asarray(weight, np.float32)[:, None]
    return ((1.0 - w) * np.asarray(expressions, np.float32)
            + w * np.asarray(rest, np.float32)[None]).astype(np.float32)


def silent_drive(expressions, audio, sample_rate: int, fps: float, model: MorphableModel,
                 fitted_expressions, threshold_db: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(expressions [N, E] settled in the pauses of `audio`, voiced bool [N]) for the A2E's
    expressions [N, E] of N output frames at `fps`; model / fitted_expressions: the subject's
    folded model and its fitted expressions [T, E] (where its rest expression comes from);
    threshold_db: the speech threshold (None: measured on `audio`, voice_activity)."""
    n = len(expressions)
    voiced = voice_activity(audio, sample_rate, fps, n, threshold_db=threshold_db)
    weight = silence_weight(voiced, fps)
    rest = rest_expression(model, fitted_expressions)
    return settle_in_silence(expressions, weight, rest), voiced
