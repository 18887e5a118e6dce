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

The mouth-shape directions (`MouthShapes`, subject/mouth_shapes.py, shared with inference's rest
in pauses) are solved once per model in its own expression basis and scaled so one unit moves
the measured quantity by exactly one; everything is linear in the expression, so each frame's
opening is met exactly.
"""

from __future__ import annotations

import re

import numpy as np
from scipy.ndimage import gaussian_filter1d

from metatalk_jax.subject.mouth_shapes import MouthShapes


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


def viseme_expressions(shapes: MouthShapes, table: np.ndarray | None = None,
                       closed_gap: float = 0.0) -> np.ndarray:
    """float32 [C, E]: the expression of every class of VISEME_CLASSES on `shapes`."""
    return shapes.expressions(control_table() if table is None else table, closed_gap)
