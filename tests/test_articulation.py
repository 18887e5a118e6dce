"""How far the mouth moves, on the pixels (eval/articulation.py through pixel_lip_sync): videos
built from the real carphone clip's own frames play the output, chosen frame by frame to show a
wanted opening, so the right answer is known.

  real       the clip in order: it opens as wide as itself (95th-percentile ratio ~1) and its
             lips close where its own closures are called bilabials;
  damped     each frame replaced by the clip's frame nearest the opening halfway to the median
             (a drive damped by half): it opens less, and fewer bilabials close, on the pixels
             and in the drive.
(A drive scaled up cannot be played by the clip's own frames, which never open wider than the
clip does; that A/B needs a renderer, issue 26's point 3.)
"""

from __future__ import annotations

import numpy as np
import pytest

from metatalk_jax.eval.articulation import bilabial_closure, opening_range
from metatalk_jax.eval.pixel_lip_sync import DriveRecord, drive_sidecar_path, pixel_lip_sync
from tests.test_mouth_measures import FPS, _video


def test_closure_of_known_openings():
    """Openings 0.4 (vowels) with dips to 0.02 at two of three bilabials; closed lips at 0.0:
    threshold 0.0 + 0.3 x (0.4 - 0.0) = 0.12, so 2 of 3 close."""
    openings = np.full(50, 0.4)
    openings[10], openings[30] = 0.02, 0.02
    openings[40] = 0.2
    phonemes = [(10 / FPS, 10.5 / FPS, "m"), (30 / FPS, 30.5 / FPS, "b"),
                (40 / FPS, 40.5 / FPS, "p"), (0.0, 8 / FPS, "a"), (20 / FPS, 28 / FPS, "A:")]
    got = bilabial_closure(openings, FPS, phonemes, closed=0.0)
    assert (got.bilabials, got.closed) == (3, 2) and got.fraction == pytest.approx(2 / 3)
    assert got.threshold == pytest.approx(0.12)
    assert bilabial_closure(openings, FPS, None, closed=0.0).fraction is None
    span = opening_range(np.linspace(0, 1, 101), np.linspace(0, 2, 101))
    assert span.p95_ratio == pytest.approx(0.5) and span.range_ratio == pytest.approx(0.5)


def _nearest_frames(openings, wanted):
    found = np.flatnonzero(np.isfinite(openings))
    return found[np.argmin(np.abs(openings[found][None, :] - np.asarray(wanted)[:, None]),
                           axis=1)]


def test_real_damped_and_scaled_mouths_on_the_pixels(tmp_path, carphone_clip, carphone_frames,
                                                     carphone_openings):
    frames, openings = carphone_frames, carphone_openings
    n = len(frames)
    found = np.isfinite(openings)
    median = np.nanmedian(openings)
    own = np.where(found, openings, median)
    # The clip's own closures are its "bilabials", its widest moments its "open vowels".
    closes = np.flatnonzero(found & (openings <= np.nanpercentile(openings, 10)))
    opens = np.flatnonzero(found & (openings >= np.nanpercentile(openings, 70)))
    phonemes = sorted([(k / FPS - 0.01, k / FPS + 0.01, "m") for k in closes]
                      + [(k / FPS - 0.01, k / FPS + 0.01, "a") for k in opens])
    results = {}
    for name, gain in (("real", 1.0), ("damped", 0.5)):
        wanted = median + gain * (own - median)
        sources = np.arange(n) if name == "real" else _nearest_frames(openings, wanted)
        path = _video(tmp_path / f"{name}.mp4", frames[sources])
        # The background is the clip in order (the real frames the person shows).
        DriveRecord(FPS, carphone_clip, FPS, np.arange(n), wanted, None,
                    phonemes).write(drive_sidecar_path(path))
        results[name] = pixel_lip_sync(path, show_progress=False)
    real, damped = results["real"], results["damped"]
    assert 0.9 < real.opening_p95_ratio < 1.1, real
    assert real.bilabials == len(closes) and real.bilabial_closure >= 0.8, real
    assert damped.opening_p95_ratio < real.opening_p95_ratio - 0.15, damped
    assert damped.bilabial_closure < real.bilabial_closure, damped
    assert damped.drive_bilabial_closure < real.drive_bilabial_closure, damped
    # Without phoneme times nothing is claimed about bilabials.
    path = _video(tmp_path / "unknown.mp4", frames)
    DriveRecord(FPS, carphone_clip, FPS, np.arange(n), own).write(drive_sidecar_path(path))
    unknown = pixel_lip_sync(path, show_progress=False)
    assert unknown.bilabial_closure is None and unknown.to_json()["bilabial_closure"] is None
