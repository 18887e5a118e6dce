"""The pixel lip-sync measure (eval/mouth_opening.py, eval/pixel_lip_sync.py) and the mouth
cavity drawn into the renderer's conditioning (face3d/mouth_interior.py).

The measure is tested on real pixels with no model: videos made of the carphone clip's own
frames in another order play the role of a renderer's output, so the expected correlations are
known (a video that shows its background frames follows the background, one whose frames are
reversed follows a reversed drive).
"""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from metatalk_jax.eval.mouth_opening import MouthMeter, mouth_opening
from metatalk_jax.eval.pixel_lip_sync import (DriveRecord, drive_sidecar_path, pearson,
                                              pixel_lip_sync, score_openings)
from metatalk_jax.face3d.mouth_interior import paint_mouth_cavity, polygon_coverage
from metatalk_jax.media.video_write import Mp4Writer

FPS = 25.0


# ------------------------------------------------------------------------------------------------
# The mouth cavity
# ------------------------------------------------------------------------------------------------

def _supersampled_coverage(polygon, h, w, factor=16):
    """Reference: OpenCV fills the polygon on a 16x finer grid; coverage = the fraction of a
    pixel's sub-samples inside."""
    fine = np.zeros((h * factor, w * factor), np.uint8)
    points = np.round(np.asarray(polygon) * factor * 256).astype(np.int32)
    cv2.fillPoly(fine, [points], 1, lineType=cv2.LINE_8, shift=8)
    return fine.reshape(h, factor, w, factor).mean(axis=(1, 3))


@pytest.mark.parametrize("polygon", [
    [(3.2, 4.1), (20.7, 5.3), (17.5, 14.8), (6.1, 12.2)],                          # convex
    [(2.5, 2.5), (22.0, 3.0), (12.0, 8.0), (21.0, 15.5), (3.0, 14.0)],              # concave
    [(4.0, 10.0), (9.0, 8.6), (15.0, 8.2), (20.0, 10.0), (15.0, 11.3), (9.0, 11.5)],  # a lip gap
])
def test_polygon_coverage_matches_a_supersampled_fill(polygon):
    h, w = 18, 25
    got = np.asarray(polygon_coverage(np.asarray([polygon], np.float32), h, w))[0]
    want = _supersampled_coverage(polygon, h, w)
    # Area is what the generator sees: within 4% of the polygon's area, pixels within ~0.5.
    area = 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1)
                         in zip(polygon, polygon[1:] + polygon[:1])))
    assert abs(got.sum() - area) < 0.04 * area + 0.5
    assert abs(want.sum() - area) < 0.04 * area + 0.5
    assert np.max(np.abs(got - want)) < 0.55
    assert np.mean(np.abs(got - want)) < 0.05


def test_a_closed_mouth_paints_nothing_and_an_open_one_its_gap():
    landmarks = np.zeros((2, 68, 2), np.float32)
    corners = np.array([[8.0, 16.0], [24.0, 16.0]])
    xs = np.array([12.0, 16.0, 20.0])
    for b, gap in enumerate((0.0, 6.0)):
        landmarks[b, 60], landmarks[b, 64] = corners
        landmarks[b, 61:64, 0] = xs                  # upper inner lip, left to right
        landmarks[b, 61:64, 1] = 16.0 - gap / 2
        landmarks[b, 65:68, 0] = xs[::-1]            # lower inner lip, right to left
        landmarks[b, 65:68, 1] = 16.0 + gap / 2
    image = np.full((2, 32, 32, 3), 0.8, np.float32)
    painted = np.asarray(paint_mouth_cavity(image, landmarks, (0.25, 0.05, 0.05)))
    assert np.abs(painted[0] - 0.8).max() < 1e-6
    changed = np.abs(painted[1] - 0.8).max(-1) > 0.1
    # the gap's octagon: area = (16 + 8) / 2 * 6 = 72 px (trapezoids either side of the middle)
    assert 60 <= changed.sum() <= 85
    np.testing.assert_allclose(painted[1, 16, 16], (0.25, 0.05, 0.05), atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Openings from landmarks and from pixels
# ------------------------------------------------------------------------------------------------

def test_mouth_opening_is_the_inner_lip_gap_over_the_eye_distance():
    points = np.zeros((68, 2))
    points[36:42] = (30.0, 40.0)
    points[42:48] = (70.0, 40.0)                                   # eyes 40 px apart
    points[[61, 62, 63], 1] = 80.0
    points[[67, 66, 65], 1] = [84.0, 88.0, 84.0]                   # gaps 4, 8, 4
    assert mouth_opening(points) == pytest.approx(16 / 3 / 40)
    scaled = points * 3.0 + 11.0                                   # the face 3x bigger, moved
    assert mouth_opening(scaled) == pytest.approx(16 / 3 / 40)


def test_the_meter_reads_the_carphone_mouth_and_nothing_on_an_empty_frame(
        carphone_frames, carphone_openings, carphone_subject):
    assert np.isfinite(carphone_openings).mean() > 0.95
    # It agrees with the 68 points `prepare` tracked on the native frames (dlib too, but at
    # the video's own scale, with temporal smoothing): the same mouth, measured twice.
    tracked = np.load(carphone_subject[0] / "landmarks.npz")["landmarks"]
    assert pearson(carphone_openings, mouth_opening(tracked)) > 0.9
    # The clip's mouth moves: closed to wide open
    assert np.nanmin(carphone_openings) < 0.12 and np.nanmax(carphone_openings) > 0.4
    assert math.isnan(MouthMeter()(np.full((144, 176, 3), 128, np.uint8)))


def test_scores_of_known_openings():
    rng = np.random.default_rng(0)
    drive = rng.uniform(0, 0.5, 200)
    background = rng.uniform(0, 0.5, 200)
    output = drive + rng.normal(0, 0.02, 200)
    output[::10] = np.nan                                          # no face found there
    s = score_openings(output, drive, background)
    assert s.frames == 200 and s.detection_rate == pytest.approx(0.9)
    assert s.r_drive > 0.95 and abs(s.r_background) < 0.25
    assert s.mean_abs_error == pytest.approx(np.nanmean(np.abs(output - drive)))
    swapped = score_openings(background + rng.normal(0, 0.02, 200), drive, background)
    assert swapped.r_background > 0.95 and abs(swapped.r_drive) < 0.25
    assert json.dumps(score_openings([np.nan] * 5, drive[:5], background[:5]).to_json())


def _video(path, frames):
    with Mp4Writer(str(path), FPS, crf=12, preset="veryfast") as writer:
        for frame in frames:
            writer.write(frame)
    return str(path)


def test_a_video_drawn_from_its_background_and_one_that_follows_a_reversed_drive(
        tmp_path, carphone_clip, carphone_frames, carphone_openings):
    """Two 'outputs' on the same forward backgrounds: (a) the background frames themselves,
    (b) the frames in reverse order. With the drive = the reversed clip's own openings, (a)
    follows the background and not the drive, (b) the drive and not the background."""
    n = len(carphone_frames)
    sources = np.arange(n)
    drive = carphone_openings[::-1]              # what a reversed expression sequence would show
    record = DriveRecord(FPS, carphone_clip, FPS, sources, np.nan_to_num(drive, nan=0.2))
    same = _video(tmp_path / "same.mp4", carphone_frames)
    reversed_ = _video(tmp_path / "reversed.mp4", carphone_frames[::-1])
    a = pixel_lip_sync(same, record, show_progress=False)
    b = pixel_lip_sync(reversed_, record, max_frames=60, show_progress=False)
    assert a.r_background > 0.9 and a.r_drive < 0.5, a
    assert b.r_drive > 0.9 and b.r_background < 0.5, b
    assert b.frames == 60
    # the sidecar round trip: the same scores from the file beside the video
    record.write(drive_sidecar_path(reversed_))
    again = pixel_lip_sync(reversed_, max_frames=60, show_progress=False)
    assert again.r_drive == pytest.approx(b.r_drive)
    with pytest.raises(ValueError, match="no drive sidecar"):
        pixel_lip_sync(same, show_progress=False)


def test_evaluate_reports_the_pixel_lip_sync_of_driven_videos_and_skips_previews(
        tmp_path, carphone_clip, carphone_frames, carphone_openings):
    """`evaluate` with no checkpoints and no references: the videos with a drive sidecar get the
    pixel columns (the same numbers pixel_lip_sync gives), the one without is counted in a
    note, and infer's preview beside a clip is not taken for a clip."""
    from metatalk_jax.eval.evaluate_videos import evaluate_videos
    n = 40
    frames = carphone_frames[:n]
    drive = np.nan_to_num(carphone_openings[:n][::-1], nan=0.2)
    out = tmp_path / "ours"
    for name, video in (("follows", frames[::-1]), ("stuck", frames)):
        path = _video(out / f"{name}.mp4", video)
        DriveRecord(FPS, carphone_clip, FPS, np.arange(n), drive).write(drive_sidecar_path(path))
        _video(out / f"{name}.preview.mp4", video[:5])
    _video(out / "undriven.mp4", frames[:10])
    clips = evaluate_videos(sorted(str(p) for p in out.glob("*.mp4")), out_dir=str(tmp_path / "r"),
                            syncnet=None, inception=None, reference_dir=None, log=lambda _: None)
    rows = {c.clip: c for c in clips}
    assert sorted(rows) == ["follows", "stuck", "undriven"]
    assert rows["follows"].r_drive > 0.9 > rows["stuck"].r_drive
    assert rows["stuck"].r_background > 0.9 > rows["follows"].r_background
    assert rows["undriven"].r_drive is None
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    means = report["methods"]["ours"]
    assert means["r_drive"] == pytest.approx((rows["follows"].r_drive + rows["stuck"].r_drive) / 2)
    assert any("2 of 3 videos" in note for note in report["notes"])
    assert "pixel r_drive" in (tmp_path / "r" / "report.md").read_text()
