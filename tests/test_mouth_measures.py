"""What a viewer sees of the mouth, measured on pixels (eval/mouth_detail.py, the silence ratios
of eval/pixel_lip_sync.py), each shown able to fail: videos built from the real carphone clip's
own frames play the output, so the right answer is known.

  sharpness: the clip itself drawn on itself scores about 1; the same frames blurred (what a
             renderer regressing to the mean gives) score low;
  silence:   a video that shows closed mouths in the drive's pauses scores a low pauses/speech
             ratio, one that shows open mouths there a high one.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from metatalk_jax.eval.mouth_detail import (box_patch, laplacian_variance, mouth_box,
                                            sharpness_ratio)
from metatalk_jax.eval.pixel_lip_sync import (DriveRecord, drive_sidecar_path, pixel_lip_sync,
                                              silence_ratio)
from metatalk_jax.media.video_write import Mp4Writer

FPS = 25.0


def _video(path, frames, crf=12):
    with Mp4Writer(str(path), FPS, crf=crf, preset="veryfast") as writer:
        for frame in frames:
            writer.write(frame)
    return str(path)


def test_detail_is_the_variance_of_the_laplacian_in_the_lip_box():
    landmarks = np.zeros((68, 2))
    landmarks[48:68] = [(20, 30), (40, 30), (30, 25), (30, 36)] * 5       # lips 20 px wide
    box = mouth_box(landmarks, (100, 100, 3))
    assert box == (15, 20, 45, 41)                                       # 25% of 20 px around
    flat = np.full((100, 100, 3), 90, np.uint8)
    assert laplacian_variance(box_patch(flat, box)) == 0.0
    checker = (np.indices((100, 100)).sum(0) % 2 * 200).astype(np.uint8)
    checker = np.repeat(checker[..., None], 3, -1)
    # On a 0/200 checkerboard the 3x3 Laplacian (4 neighbours - 4 x centre) is 800 - 8 grey.
    grey = cv2.cvtColor(checker, cv2.COLOR_RGB2GRAY).astype(float)
    assert laplacian_variance(box_patch(checker, box)) == pytest.approx(
        np.var(800 - 8 * grey[20:41, 15:45]), rel=1e-6)
    assert np.isnan(sharpness_ratio(box_patch(checker, box), box_patch(flat, box)))
    assert mouth_box(np.zeros((68, 2)), (100, 100, 3)) is None          # no lips to measure


def test_a_real_clip_is_as_sharp_as_itself_and_its_blurred_copy_is_not(tmp_path, carphone_clip,
                                                                       carphone_frames):
    frames = carphone_frames
    n = len(frames)
    record = DriveRecord(FPS, carphone_clip, FPS, np.arange(n), np.zeros(n))
    same = pixel_lip_sync(_video(tmp_path / "same.mp4", frames), record, max_frames=40,
                          show_progress=False)
    blurred = pixel_lip_sync(_video(tmp_path / "blurred.mp4", [cv2.GaussianBlur(f, (0, 0), 1.2)
                                                               for f in frames]),
                             record, max_frames=40, show_progress=False)
    assert 0.85 < same.mouth_sharpness < 1.15, same
    assert blurred.mouth_sharpness < 0.35, blurred
    assert blurred.r_background > 0.9               # the blur keeps the mouth's shape


def test_a_mouth_open_in_the_pauses_scores_high_and_a_closed_one_low(
        tmp_path, carphone_clip, carphone_frames, carphone_openings):
    """100 output frames: speech in frames 0-29 and 60-99, a pause in 30-59. Both videos show
    the clip's frames in order in speech; in the pause one shows its most closed mouths, the
    other its most open ones."""
    frames, openings = carphone_frames, carphone_openings
    n = 100
    voiced = np.ones(n, bool)
    voiced[30:60] = False
    found = np.flatnonzero(np.isfinite(openings))
    order = found[np.argsort(openings[found])]
    closed, wide = order[:15], order[-15:]
    speech = np.arange(n) % len(frames)
    results = {}
    for name, pause in (("closes", closed), ("stays_open", wide)):
        sources = speech.copy()
        sources[30:60] = np.resize(pause, 30)
        path = _video(tmp_path / f"{name}.mp4", frames[sources])
        drive = np.where(voiced, 0.3, 0.0)
        record = DriveRecord(FPS, carphone_clip, FPS, sources, drive, voiced)
        record.write(drive_sidecar_path(path))
        results[name] = pixel_lip_sync(path, show_progress=False)     # voiced from the sidecar
    # The expectation from the clip's own openings, measured on its frames directly: the
    # carphone man never quite closes his lips, so closed pauses read ~0.5, open ones ~2.5.
    speech_median = np.nanmedian(openings[speech[voiced]])
    for name, pause in (("closes", closed), ("stays_open", wide)):
        expected = np.nanmedian(openings[np.resize(pause, 30)]) / speech_median
        assert results[name].silence_ratio == pytest.approx(expected, abs=0.15), (name, expected)
    assert results["stays_open"].silence_ratio > 3 * results["closes"].silence_ratio
    assert results["closes"].drive_silence_ratio == 0.0
    assert results["closes"].silent_frames == 30


def test_silence_ratio_of_known_openings():
    voiced = np.array([True] * 10 + [False] * 6)
    openings = np.array([0.2] * 10 + [0.05] * 6)
    assert silence_ratio(openings, voiced) == pytest.approx(0.25)
    assert np.isnan(silence_ratio(openings, np.ones(16, bool)))          # no pause: no ratio
    openings[12:] = np.nan                                               # no face found there
    assert np.isnan(silence_ratio(openings, voiced))                     # < 3 measured pauses


def test_a_version_1_sidecar_has_no_voice_activity(tmp_path):
    import json
    path = tmp_path / "old.drive.json"
    path.write_text(json.dumps({"format": "metatalk_jax.drive", "version": 1, "fps": 25.0,
                                "source_video": "x.mp4", "source_fps": 25.0,
                                "source_frame": [0, 1], "drive_opening": [0.1, 0.2]}))
    record = DriveRecord.read(str(path))
    assert record.voiced is None
    record.voiced = np.array([True, False])
    record.write(str(path))
    assert list(DriveRecord.read(str(path)).voiced) == [True, False]


def test_the_partial_correlation_separates_a_leaking_background_from_a_correlated_drive():
    """Drive and background correlate (0.6); an output that follows only the drive has a high
    plain r_background but ~0 once the drive is accounted for; one that mixes in the
    background keeps a clear partial correlation."""
    from metatalk_jax.eval.pixel_lip_sync import score_openings
    rng = np.random.default_rng(4)
    drive = rng.normal(size=400)
    background = 0.6 * drive + 0.8 * rng.normal(size=400)
    follows = drive + 0.1 * rng.normal(size=400)
    leaks = drive + 0.8 * background + 0.1 * rng.normal(size=400)
    a, b = score_openings(follows, drive, background), score_openings(leaks, drive, background)
    assert a.r_background > 0.5 and abs(a.r_background_given_drive) < 0.15
    assert b.r_background_given_drive > 0.8
