"""Phonemes -> visemes -> mouth controls -> 3DMM expressions: the viseme teacher's mouth.

Three stages, each a plain function or table:

1. `phoneme_visemes(symbol)`: an espeak-ng English phoneme name (metatalk_jax/media/speech.py,
   stress marks removed) -> one or more viseme classes of VISEME_CLASSES (a diphthong such as
   "aI" gives ("open", "spread"), its halves in order). Pauses ("_", "_:") are "rest";
   unknown names fall back on their stem, then on their first letter, then on "other".
2. `control_tracks(phonemes, num_frames, fps)`: per-frame mouth controls [T, 3] with
   coarticulation. Each phoneme puts its viseme's control target at its centre (a bilabial or
   labiodental consonant holds its target over its middle 40%, a long pause holds "rest");
   targets are linearly interpolated on a 5 ms grid, smoothed with a Gaussian of
   `smoothing_s`, and sampled at the frame times t = k / fps (the centre of frame k's audio
   window). Lip closures win over smoothing: inside a hold the unsmoothed target is kept, and
   the frame nearest each hold's middle gets the hold's opening, so every /p b m/ closes the
   lips in at least one frame even when it is shorter than a frame.
3. `MouthShapes(model, neutral).expressions(controls)`: controls -> expression vectors [T, E].

The controls (CONTROLS), in units of the face, measured on the 68 landmarks of the 3D shape:
  opening     inner-lip gap above `closed_gap`: mean y distance of the inner-lip pairs
              (61,67), (62,66), (63,65), as a fraction of the face height H (landmark 27,
              the nose bridge, to 8, the chin); ABSOLUTE, so 0 closes the lips whatever the
              neutral expression is
  width       change of the mouth width (outer corners 48-54) from the neutral, fraction of
              the face width W (landmarks 0-16)
  protrusion  forward (+z) movement of the lips (48-67) from the neutral, fraction of H

Mouth-shape directions are solved once per model in its own expression basis, by ridge least
squares on 3D displacement targets of the landmarks (lips and jaw move as the control says, the
upper face keeps still), then scaled so one unit moves the measured quantity by exactly one
(directions a model cannot express are capped by `max_delta_norm`). Everything is linear in the
expression, so each frame's opening is met exactly: the gap direction's amount is solved after
the width and protrusion deltas are applied. This works for any model (the offline
10-component model, BFM's 64, the procedural test model).
"""

from __future__ import annotations

import re

import numpy as np
from scipy.ndimage import gaussian_filter1d

CONTROLS = ("opening", "width", "protrusion")

# Mouth controls of each viseme class: (opening [H], width change [W], protrusion [H]).
VISEME_CONTROLS = {
    "rest": (0.0, 0.0, 0.0),             # silence: lips lightly closed
    "bilabial": (0.0, 0.0, 0.0),         # p b m: lips pressed together
    "labiodental": (0.01, 0.0, 0.0),     # f v: lower lip tucked under the upper teeth
    "dental": (0.035, 0.01, 0.0),        # th: tongue between the teeth
    "alveolar": (0.03, 0.01, 0.0),       # t d n s z l: teeth nearly together
    "postalveolar": (0.03, -0.04, 0.02),  # sh zh ch j: lips pushed forward
    "velar": (0.045, 0.0, 0.0),          # k g ng h: jaw follows the neighbouring vowel
    "approximant_r": (0.025, -0.04, 0.015),
    "rounded": (0.025, -0.08, 0.03),     # oo, w: small round opening
    "rounded_open": (0.07, -0.05, 0.02),  # aw, o
    "open": (0.12, 0.02, 0.0),           # a, ah: jaw dropped
    "mid": (0.075, 0.02, 0.0),           # e, eh, uh
    "schwa": (0.045, 0.0, 0.0),
    "spread": (0.035, 0.05, 0.0),        # ee, i, y: corners drawn back
    "other": (0.035, 0.0, 0.0),          # anything unrecognised: a relaxed half-open mouth
}
VISEME_CLASSES = tuple(VISEME_CONTROLS)
HOLD_CLASSES = ("bilabial", "labiodental")   # contacts that must be reached, not approximated

# espeak-ng English phoneme names (en, en-us, en-gb-x-rp, en-029, ... voices) -> visemes.
PHONEME_VISEMES = {
    **{p: ("bilabial",) for p in ("p", "b", "m")},
    **{p: ("labiodental",) for p in ("f", "v")},
    **{p: ("dental",) for p in ("T", "D", "t[")},
    **{p: ("alveolar",) for p in ("t", "d", "n", "s", "z", "l", "t#", "d#", "n-", "l/", "L")},
    **{p: ("postalveolar",) for p in ("S", "Z", "tS", "dZ")},
    **{p: ("velar",) for p in ("k", "g", "N", "x", "h", "?")},
    **{p: ("approximant_r",) for p in ("r", "r-", "3")},
    **{p: ("rounded",) for p in ("w", "w#", "W", "u", "u:", "U")},
    **{p: ("rounded_open",) for p in ("0", "O", "O:", "O2", "O@", "o@", "o")},
    **{p: ("open",) for p in ("a", "aa", "A:", "A", "A@", "a#")},
    **{p: ("mid",) for p in ("e", "E", "e@", "3:", "V")},
    **{p: ("schwa",) for p in ("@", "@-")},
    **{p: ("spread",) for p in ("i", "i:", "I", "j")},
    "aI": ("open", "spread"), "aI@": ("open", "spread", "schwa"), "aI3": ("open", "spread",
                                                                          "approximant_r"),
    "aU": ("open", "rounded"), "aU@": ("open", "rounded", "schwa"),
    "eI": ("mid", "spread"), "oU": ("rounded_open", "rounded"), "OI": ("rounded_open", "spread"),
    "i@": ("spread", "schwa"), "i@3": ("spread", "approximant_r"), "I@": ("spread", "schwa"),
    "U@": ("rounded", "schwa"), "@L": ("schwa", "alveolar"), "VR": ("mid", "approximant_r"),
    "IR": ("spread", "approximant_r"), "@r": ("schwa", "approximant_r"),
}
# Modifier marks espeak sometimes reports as phonemes of their own: no target of their own.
IGNORED_PHONEMES = (";", ":", "#", "")
_FIRST_LETTER = {"a": "open", "A": "open", "e": "mid", "E": "mid", "i": "spread",
                 "I": "spread", "o": "rounded_open", "O": "rounded_open", "0": "rounded_open",
                 "u": "rounded", "U": "rounded", "w": "rounded", "@": "schwa", "3": "mid",
                 "V": "mid"}

# Landmark groups (iBUG-68).
INNER_GAP_PAIRS = ((61, 67), (62, 66), (63, 65))
LIPS = tuple(range(48, 68))
UPPER_LIP = (49, 50, 51, 52, 53, 61, 62, 63)
LOWER_LIP = (55, 56, 57, 58, 59, 65, 66, 67)
CORNERS = (48, 54, 60, 64)
JAW_DROP = {5: 0.3, 6: 0.45, 7: 0.6, 8: 0.7, 9: 0.6, 10: 0.45, 11: 0.3}
GRID_S = 0.005          # fine time grid of the control tracks


def is_pause(symbol: str) -> bool:
    return symbol.startswith("_")


def phoneme_visemes(symbol: str) -> tuple[str, ...]:
    """Viseme classes of one espeak phoneme name, in time order (() for modifier marks)."""
    if is_pause(symbol):
        return ("rest",)
    if symbol in IGNORED_PHONEMES:
        return ()
    if symbol in PHONEME_VISEMES:
        return PHONEME_VISEMES[symbol]
    stem = re.sub(r"[0-9#/\-]+$", "", symbol)   # "@2" -> "@", "aI2" -> "aI", "I#" -> "I"
    if stem in PHONEME_VISEMES:
        return PHONEME_VISEMES[stem]
    return (_FIRST_LETTER.get(symbol[0], "other"),)


def control_table(opening_scale: float = 1.0, width_scale: float = 1.0,
                  protrusion_scale: float = 1.0) -> np.ndarray:
    """float64 [C, 3] controls of VISEME_CLASSES (row order), each column scaled."""
    table = np.array([VISEME_CONTROLS[c] for c in VISEME_CLASSES], np.float64)
    return table * np.array([opening_scale, width_scale, protrusion_scale])


def _keys(phonemes, duration_s: float, min_pause_s: float, pause_ramp_s: float,
          hold_fraction: float):
    """(key times [K], key class ids [K], hold spans [(t0, t1, class id)])."""
    rest = VISEME_CLASSES.index("rest")
    times, classes, holds = [0.0], [rest], []
    for start, end, symbol in phonemes:
        dur = end - start
        if is_pause(symbol):
            if dur < min_pause_s:
                continue          # a word gap: the lips keep moving between the words
            ramp = min(pause_ramp_s, dur / 2)
            times += [start + ramp, end - ramp]
            classes += [rest, rest]
            continue
        visemes = phoneme_visemes(symbol)
        if len(visemes) == 1 and visemes[0] in HOLD_CLASSES:
            k = VISEME_CLASSES.index(visemes[0])
            t0, t1 = start + hold_fraction * dur, end - hold_fraction * dur
            times += [t0, t1]
            classes += [k, k]
            holds.append((t0, t1, k))
            continue
        for i, name in enumerate(visemes):
            times.append(start + (i + 0.5) / len(visemes) * dur)
            classes.append(VISEME_CLASSES.index(name))
    times.append(max(duration_s, times[-1]))
    classes.append(rest)
    order = np.argsort(np.asarray(times), kind="stable")
    return np.asarray(times)[order], np.asarray(classes)[order], holds


def control_tracks(phonemes, num_frames: int, fps: float, *, table: np.ndarray | None = None,
                   smoothing_s: float = 0.03, min_pause_s: float = 0.1,
                   pause_ramp_s: float = 0.08, hold_fraction: float = 0.3) -> np.ndarray:
    """float32 [T, 3] mouth controls (CONTROLS) of frames t = k / fps, k < num_frames.

    phonemes: [(start_s, end_s, symbol)] (speech.Speech.phonemes, times in the clip's audio);
    table: [C, 3] controls per class (`control_table()`); smoothing_s: Gaussian sigma, seconds;
    min_pause_s: shorter pauses are word gaps and do not rest the mouth; pause_ramp_s: time
    from a pause's edge to full rest; hold_fraction: part of a hold consonant's span at each
    end that is transition, not contact (module docstring).
    """
    if num_frames <= 0 or fps <= 0:
        raise ValueError(f"control_tracks: need num_frames > 0 and fps > 0, got {num_frames}, "
                         f"{fps}")
    table = control_table() if table is None else np.asarray(table, np.float64)
    duration = num_frames / float(fps)
    times, classes, holds = _keys(phonemes, duration, min_pause_s, pause_ramp_s, hold_fraction)
    grid = np.arange(0.0, max(duration, times[-1]) + GRID_S, GRID_S)
    raw = np.stack([np.interp(grid, times, table[classes, j]) for j in range(3)], 1)
    smooth = raw
    if smoothing_s > 0:
        smooth = gaussian_filter1d(raw, smoothing_s / GRID_S, axis=0, mode="nearest")
    for t0, t1, _ in holds:
        inside = (grid >= t0) & (grid <= t1)
        smooth[inside] = raw[inside]
    frame_times = np.arange(num_frames) / float(fps)
    out = np.stack([np.interp(frame_times, grid, smooth[:, j]) for j in range(3)], 1)
    for t0, t1, k in holds:
        frame = int(round(0.5 * (t0 + t1) * fps))
        if 0 <= frame < num_frames:
            out[frame, 0] = min(out[frame, 0], table[k, 0])
    return out.astype(np.float32)


def frame_visemes(phonemes, num_frames: int, fps: float) -> np.ndarray:
    """int32 [T]: index in VISEME_CLASSES of the viseme sounding at each frame time (the first
    class of a multi-viseme phoneme; a modifier mark continues the phoneme before it; "rest"
    outside every phoneme). For inspection and tests: the tracks do not use it."""
    out = np.full(num_frames, VISEME_CLASSES.index("rest"), np.int32)
    frame_times = np.arange(num_frames) / float(fps)
    previous = "rest"
    for start, end, symbol in phonemes:
        visemes = phoneme_visemes(symbol)
        name = visemes[0] if visemes else previous
        out[(frame_times >= start) & (frame_times < end)] = VISEME_CLASSES.index(name)
        previous = visemes[-1] if visemes else previous
    return out


class MouthShapes:
    """Mouth-shape directions of one morphable model around a neutral expression.

    model: a MorphableModel (numpy or jax arrays; mean_shape [V,3], exp_basis [V,3,E],
    landmark_ids [68]) in a y-up, z-towards-the-viewer frame (BFM's). neutral: [E] expression
    the mouth moves from. ridge: Tikhonov weight of the direction solves, relative to the mean
    squared column norm. max_delta_norm: largest norm of (expression - neutral) a frame gets
    (unit-variance coefficients), which caps directions a model can hardly express.
    """

    def __init__(self, model, neutral, *, ridge: float = 1e-3, max_delta_norm: float = 4.0):
        lm = np.asarray(model.landmark_ids)
        self.mean = np.asarray(model.mean_shape, np.float64)[lm]            # [68, 3]
        self.basis = np.asarray(model.exp_basis, np.float64)[lm]            # [68, 3, E]
        e = self.basis.shape[-1]
        self.neutral = np.asarray(neutral, np.float64).reshape(-1)
        if self.neutral.shape != (e,):
            raise ValueError(f"MouthShapes: neutral has {self.neutral.size} values, the model's "
                             f"expression basis has {e}")
        self.face_height = float(self.mean[27, 1] - self.mean[8, 1])
        self.face_width = float(abs(self.mean[16, 0] - self.mean[0, 0]))
        if self.face_height <= 0 or self.face_width <= 0:
            raise ValueError("MouthShapes: the model's landmarks 27 (nose bridge) above 8 "
                             "(chin) and 0, 16 (face sides) are needed")
        self._width_sign = 1.0 if self.mean[54, 0] >= self.mean[48, 0] else -1.0
        self.max_delta_norm = float(max_delta_norm)
        neutral_shape = self.landmarks(self.neutral[None])[0]
        targets = self._displacement_targets(neutral_shape)
        a = self.basis.reshape(68 * 3, e)
        weights = np.repeat(self._landmark_weights(), 3)
        aw = a * weights[:, None]
        lam = ridge * float(np.mean(np.sum(aw * aw, 0))) + 1e-12
        lhs = aw.T @ aw + lam * np.eye(e)
        raw = [np.linalg.solve(lhs, aw.T @ (t.reshape(-1) * weights)) for t in targets]
        # Scale each so one unit moves its own measured quantity by exactly one.
        effects = np.array([self.measure(self.neutral[None] + d[None])[0]
                            - self.measure(self.neutral[None])[0] for d in raw])   # [3, 3]
        scales = [1.0 / effects[j, j] if abs(effects[j, j]) > 1e-9 else 0.0 for j in range(3)]
        self.directions = np.stack([d * s for d, s in zip(raw, scales)])          # [3, E]
        self.effects = np.stack([effects[j] * scales[j] for j in range(3)])       # [3, 3]

    def _landmark_weights(self) -> np.ndarray:
        w = np.full(68, 0.3)           # the rest of the face: keep it still
        w[list(LIPS)] = 1.0
        w[list(JAW_DROP)] = 0.6
        return w

    def _displacement_targets(self, shape: np.ndarray) -> list[np.ndarray]:
        """[68, 3] landmark displacements for a typical amount of each control."""
        h, w = self.face_height, self.face_width
        cx = shape[list(LIPS), 0].mean()
        half = 0.5 * abs(shape[54, 0] - shape[48, 0]) + 1e-9
        opening, width, protrusion = (np.zeros((68, 3)) for _ in range(3))
        gap = 0.1 * h
        opening[list(LOWER_LIP), 1] = -0.8 * gap
        opening[list(UPPER_LIP), 1] = 0.2 * gap
        opening[list(CORNERS), 1] = -0.3 * gap
        for index, share in JAW_DROP.items():
            opening[index, 1] = -share * gap
        stretch = 0.05 * w
        width[list(LIPS), 0] = 0.5 * stretch * (shape[list(LIPS), 0] - cx) / half
        protrusion[list(LIPS), 2] = 0.03 * h
        return [opening, width, protrusion]

    def landmarks(self, expressions: np.ndarray) -> np.ndarray:
        """[T, 68, 3] landmark positions of expressions [T, E] (model units)."""
        return self.mean[None] + np.einsum("lce,te->tlc", self.basis,
                                           np.asarray(expressions, np.float64))

    def measure(self, expressions: np.ndarray) -> np.ndarray:
        """[T, 3] (inner-lip gap / H, mouth width / W, mean lip z / H): absolute values of
        the quantities the controls move."""
        p = self.landmarks(expressions)
        gap = np.mean([p[:, a, 1] - p[:, b, 1] for a, b in INNER_GAP_PAIRS], 0)
        width = self._width_sign * (p[:, 54, 0] - p[:, 48, 0])
        lips_z = p[:, list(LIPS), 2].mean(1)
        return np.stack([gap / self.face_height, width / self.face_width,
                         lips_z / self.face_height], 1)

    def expressions(self, controls: np.ndarray, closed_gap: float = 0.0) -> np.ndarray:
        """controls [T, 3] (CONTROLS) -> float32 expressions [T, E] = neutral + deltas.

        The opening is met exactly (inner-lip gap = closed_gap + opening, fractions of H)
        unless the frame's delta norm exceeds max_delta_norm, when the delta is scaled down.
        """
        c = np.asarray(controls, np.float64).reshape(-1, 3)
        lateral = c[:, 1:2] * self.directions[1] + c[:, 2:3] * self.directions[2]
        gap_now = self.measure(self.neutral[None])[0, 0] + lateral @ self._gap_per_coeff()
        amount = closed_gap + c[:, 0] - gap_now
        delta = lateral + amount[:, None] * self.directions[0]
        norm = np.linalg.norm(delta, axis=1, keepdims=True)
        delta *= np.minimum(1.0, self.max_delta_norm / np.maximum(norm, 1e-12))
        return (self.neutral[None] + delta).astype(np.float32)

    def _gap_per_coeff(self) -> np.ndarray:
        """[E] change of the gap fraction per unit of each expression coefficient."""
        rows = [self.basis[a, 1] - self.basis[b, 1] for a, b in INNER_GAP_PAIRS]
        return np.mean(rows, 0) / self.face_height

    def viseme_expressions(self, table: np.ndarray | None = None,
                           closed_gap: float = 0.0) -> np.ndarray:
        """float32 [C, E]: the expression of every class of VISEME_CLASSES."""
        table = control_table() if table is None else table
        return self.expressions(table, closed_gap)


def neutral_expression(expressions: np.ndarray) -> np.ndarray:
    """float32 [E]: the per-coefficient median of a subject's fitted expressions [T, E] (robust
    to the frames with the mouth wide open or the fit off)."""
    expressions = np.asarray(expressions, np.float64)
    if expressions.ndim != 2 or not len(expressions):
        raise ValueError(f"neutral_expression: need [T, E] expressions, got {expressions.shape}")
    return np.median(expressions, 0).astype(np.float32)
