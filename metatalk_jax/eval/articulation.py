"""How far the mouth moves, on the pixels: its opening range and its closures on /p b m/.

    range = opening_range(output_openings, real_openings)    # OpeningRange
    closure = bilabial_closure(openings, fps, phonemes, closed=range.real_p5)

Openings are eval/mouth_opening's inner-lip gap over the inter-ocular distance, per video frame
(NaN where no face was found). Two things a correlation cannot see (an output that moves half
as far still correlates perfectly):

- the opening range: the output's 5th and 95th percentile against those of the subject's
  real frames (the backgrounds the output was drawn on). `p95_ratio` is how wide the output
  opens against how wide the person does (1.0 for the real frames themselves);
- bilabial closure: for speech whose phoneme times are known (espeak-ng gives them), the share
  of /p/, /b/, /m/ whose lips close on the pixels. A bilabial counts as closed when the
  smallest opening from 60 ms before its start to 20 ms after its end lies within 0.3 of the way
  from the person's own closed lips (the 5th percentile of the real frames) to the sentence's
  open vowels (the median opening of the same video over its open-vowel phonemes). Without
  phoneme times (a user's own recording) it is not measured (None).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

BILABIALS = ("p", "b", "m")
# espeak-ng's ASCII names of the open and open-mid vowels and of diphthongs starting open.
OPEN_VOWELS = ("a", "a#", "A", "A:", "A@", "aI", "aU", "0", "O", "O:", "O@", "OI", "V", "E", "E@",
               "a:")
BEFORE_S, AFTER_S = 0.06, 0.02
CLOSED_FRACTION = 0.3


@dataclasses.dataclass
class OpeningRange:
    """Percentiles of the opening: output_p5/p95 of the output frames, real_p5/p95 of the real
    frames; p95_ratio = output_p95 / real_p95; range_ratio = (output_p95 - output_p5) /
    (real_p95 - real_p5). NaN where either side has fewer than 3 measured frames."""

    output_p5: float
    output_p95: float
    real_p5: float
    real_p95: float
    p95_ratio: float
    range_ratio: float


def _finite(values) -> np.ndarray:
    values = np.asarray(values, np.float64)
    return values[np.isfinite(values)]


def opening_range(output, real) -> OpeningRange:
    """OpeningRange of output openings [N] against real openings [M] (NaNs ignored)."""
    out, ref = _finite(output), _finite(real)
    if len(out) < 3 or len(ref) < 3:
        nan = float("nan")
        return OpeningRange(nan, nan, nan, nan, nan, nan)
    o5, o95 = (float(v) for v in np.percentile(out, [5, 95]))
    r5, r95 = (float(v) for v in np.percentile(ref, [5, 95]))
    return OpeningRange(o5, o95, r5, r95, o95 / r95 if r95 > 0 else float("nan"),
                        (o95 - o5) / (r95 - r5) if r95 > r5 else float("nan"))


@dataclasses.dataclass
class BilabialClosure:
    """bilabials: /p b m/ with a measured frame in their window; closed: how many of them
    closed; fraction = closed / bilabials (None without phoneme times or bilabials);
    open_level: the median opening over open vowels; threshold: the opening under which a
    bilabial counts as closed."""

    bilabials: int
    closed: int
    fraction: float | None
    open_level: float
    threshold: float


def _window_min(openings: np.ndarray, fps: float, start: float, end: float) -> float:
    first, last = int(math.ceil(start * fps)), int(math.floor(end * fps))
    values = _finite(openings[max(first, 0):max(last + 1, 0)])
    return float(values.min()) if len(values) else float("nan")


def bilabial_closure(openings, fps: float, phonemes, *, closed: float) -> BilabialClosure:
    """The closure of every bilabial of `phonemes` [(start_s, end_s, symbol)] in `openings`
    [N] (frame k at time k / fps; NaN: not measured); closed: the person's closed-lips opening
    (OpeningRange.real_p5). phonemes None: not measured (fraction None)."""
    openings = np.asarray(openings, np.float64)
    nan = float("nan")
    if phonemes is None or not np.isfinite(closed):
        return BilabialClosure(0, 0, None, nan, nan)
    vowels = [_finite(openings[int(math.ceil(a * fps)):int(math.floor(b * fps)) + 1])
              for a, b, s in phonemes if s in OPEN_VOWELS]
    vowels = np.concatenate(vowels) if vowels else np.zeros(0)
    if len(vowels) < 3:
        return BilabialClosure(0, 0, None, nan, nan)
    open_level = float(np.median(vowels))
    threshold = closed + CLOSED_FRACTION * (open_level - closed)
    lows = [_window_min(openings, fps, a - BEFORE_S, b + AFTER_S)
            for a, b, s in phonemes if s in BILABIALS]
    lows = [v for v in lows if np.isfinite(v)]
    count = len(lows)
    shut = int(sum(v <= threshold for v in lows))
    return BilabialClosure(count, shut, shut / count if count else None, open_level, threshold)
