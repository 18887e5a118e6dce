"""Face tracking: gap filling, errors and face choice with a scripted backend; temporal smoothing;
dlib on the real carphone clip (176x144, 120 frames)."""

from __future__ import annotations

import os
import time

import cv2
import numpy as np
import pytest

from metatalk_jax.tracking.backends import DlibBackend, known_backends, make_backend
from metatalk_jax.tracking.track import (FaceTrack, TrackingError, smooth_track,
                                         track_video)


# ---------------------------------------------------------------------------- scripted backend

def face_points(t: float, offset=(0.0, 0.0)) -> np.ndarray:
    """[68,2] points that move non-linearly with t, so interpolation differs from the truth."""
    k = np.arange(68, dtype=np.float64)
    x = 40 + 0.5 * k + 3 * np.sin(0.7 * t) + offset[0]
    y = 30 + 0.25 * k + 0.1 * t * t + offset[1]
    return np.stack([x, y], -1).astype(np.float32)


def face_box(t: float, offset=(0.0, 0.0), size=40.0) -> np.ndarray:
    x0, y0 = 30 + 2 * t + offset[0], 20 + np.cos(t) + offset[1]
    return np.array([x0, y0, x0 + size, y0 + size, 1.0], np.float32)


class ScriptedBackend:
    """Frame t is np.full(.., t); script[t] is None (no face) or a list of (box [5], points)."""

    def __init__(self, script):
        self.script = script
        self.landmark_boxes = []   # the box landmarks() was asked about, per frame with a face

    def detect(self, frame):
        faces = self.script[int(frame[0, 0, 0])]
        if not faces:
            return np.zeros((0, 5), np.float32)
        return np.stack([box for box, _ in faces])

    def landmarks(self, frame, box):
        self.landmark_boxes.append(np.asarray(box))
        for candidate, points in self.script[int(frame[0, 0, 0])]:
            if np.array_equal(candidate, box):
                return points
        raise AssertionError(f"landmarks() asked for a box that detect() did not return: {box}")


def frames_of(n: int):
    """A generator, as a video reader would be: frames are only produced on demand."""
    for t in range(n):
        yield np.full((16, 16, 3), t, np.uint8)


def single_face_script(n: int, missing=()):
    return [None if t in missing else [(face_box(t), face_points(t))] for t in range(n)]


def run_script(script, **kw):
    kw.setdefault("smoothing_sigma", 0.0)
    return track_video(frames_of(len(script)), ScriptedBackend(script),
                       source="/videos/talk.mp4", **kw)


def test_interior_gap_is_linear_interpolation():
    missing = set(range(5, 10))
    track = run_script(single_face_script(30, missing))
    assert track.gaps == [(5, 9)]
    assert track.detected.tolist() == [t not in missing for t in range(30)]
    a, b = 4, 10
    for t in range(5, 10):
        w = (t - a) / (b - a)
        want_pts = (1 - w) * face_points(a) + w * face_points(b)
        want_box = (1 - w) * face_box(a)[:4] + w * face_box(b)[:4]
        np.testing.assert_allclose(track.landmarks[t], want_pts, atol=1e-4)
        np.testing.assert_allclose(track.boxes[t], want_box, atol=1e-4)
    for t in sorted(set(range(30)) - missing):  # detected frames are the backend's, untouched
        np.testing.assert_array_equal(track.landmarks[t], face_points(t))
    assert track.landmarks.dtype == np.float32 and track.landmarks.shape == (30, 68, 2)
    assert track.frame_size == (16, 16)


def test_edge_gaps_copy_the_nearest_tracked_frame():
    track = run_script(single_face_script(30, {0, 1, 2, 28, 29}))
    assert track.gaps == [(0, 2), (28, 29)]
    for t in (0, 1, 2):
        np.testing.assert_array_equal(track.landmarks[t], face_points(3))
        np.testing.assert_array_equal(track.boxes[t], face_box(3)[:4])
    for t in (28, 29):
        np.testing.assert_array_equal(track.landmarks[t], face_points(27))


def test_gaps_list_exactly_the_missing_runs():
    missing = {0, 1, 5, 6, 7, 12, 18, 19}
    track = run_script(single_face_script(40, missing), max_gap=3)
    assert track.gaps == [(0, 1), (5, 7), (12, 12), (18, 19)]
    assert track.summary() == {"frames": 40, "detected": 32, "interpolated": 8,
                               "gaps": [(0, 1), (5, 7), (12, 12), (18, 19)], "kept": 40,
                               "excluded": {reason: {"frames": 0, "ranges": []} for reason in
                                            ("no_face", "other_person", "ambiguous", "dropped")},
                               "cuts": []}


def assert_one_line_error(err: pytest.ExceptionInfo, *parts: str):
    message = str(err.value)
    assert "\n" not in message and message.startswith("talk.mp4: "), message
    for part in parts:
        assert part in message, message


def test_gap_longer_than_max_gap_raises():
    with pytest.raises(TrackingError) as err:
        run_script(single_face_script(100, set(range(30, 44))), max_gap=12)
    assert_one_line_error(err, "no face in frames 30-43", "14 frames", "at most 12")
    run_script(single_face_script(100, set(range(30, 42))), max_gap=12)  # 12 is still filled
    with pytest.raises(TrackingError):  # an edge gap counts too
        run_script(single_face_script(100, set(range(87, 100))), max_gap=12)


def test_no_face_at_all_raises():
    with pytest.raises(TrackingError) as err:
        run_script([None] * 10)
    assert_one_line_error(err, "no face found in any of 10 frames")


def test_too_few_tracked_frames_raises():
    # Every other frame missing: no gap is long, but only half the frames have a face.
    with pytest.raises(TrackingError) as err:
        run_script(single_face_script(20, set(range(1, 20, 2))))
    assert_one_line_error(err, "tracked in only 10 of 20 frames", "80%")
    run_script(single_face_script(20, set(range(1, 20, 2))), min_tracked_fraction=0.5)


def test_multi_face_follows_the_previous_box():
    """Face A is largest at frame 0; B grows larger later and is listed first, A is still kept."""
    script = []
    for t in range(12):
        a = (face_box(t, size=40), face_points(t))
        b = (face_box(t, offset=(100, 0), size=30 + 3 * t), face_points(t, offset=(100, 0)))
        script.append([b, a] if t % 2 else [a, b])
    script[6] = None  # across a missing frame the last tracked box is the reference
    backend = ScriptedBackend(script)
    track = track_video(frames_of(12), backend, source="talk.mp4", smoothing_sigma=0.0)
    for t in (0, 3, 7, 11):
        np.testing.assert_array_equal(track.landmarks[t], face_points(t))
    assert all(box[0] < 80 for box in backend.landmark_boxes)


def test_progress_and_npz_round_trip(tmp_path):
    class Count:
        n = 0

        def update(self, k):
            self.n += k

    progress = Count()
    track = track_video(frames_of(15), ScriptedBackend(single_face_script(15, {4})),
                        source="talk.mp4", progress=progress)
    assert progress.n == 15
    path = track.to_npz(str(tmp_path / "sub" / "talk.track.npz"))
    assert os.listdir(tmp_path / "sub") == ["talk.track.npz"]  # no temp file left behind
    back = FaceTrack.from_npz(path)
    np.testing.assert_array_equal(back.landmarks, track.landmarks)
    np.testing.assert_array_equal(back.boxes, track.boxes)
    np.testing.assert_array_equal(back.detected, track.detected)
    assert back.gaps == [(4, 4)] and back.frame_size == (16, 16)
    assert back.summary() == track.summary()


def test_backend_registry_and_missing_model():
    assert "dlib" in known_backends()
    with pytest.raises(ValueError, match="known: .*dlib"):
        make_backend("mediapipe")
    with pytest.raises(FileNotFoundError) as err:
        make_backend("dlib", model_path="/nowhere/shape_68.dat")
    assert "/nowhere/shape_68.dat" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------- smoothing

def gaussian_weights(sigma: float, truncate: float = 4.0) -> np.ndarray:
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.5])
def test_smoothing_keeps_linear_motion_in_the_interior(sigma):
    rng = np.random.default_rng(0)
    T, radius = 80, len(gaussian_weights(sigma)) // 2
    t = np.arange(T, dtype=np.float64)[:, None, None]
    start, velocity = rng.uniform(0, 170, (1, 68, 2)), rng.uniform(-2, 2, (1, 68, 2))
    line = (start + velocity * t).astype(np.float32)
    out = smooth_track(line, sigma)
    assert out.shape == line.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[radius:T - radius], line[radius:T - radius], atol=1e-4)
    constant = np.broadcast_to(start, line.shape).astype(np.float32)
    np.testing.assert_allclose(smooth_track(constant, sigma), constant, atol=1e-4)
    np.testing.assert_array_equal(smooth_track(line, 0.0), line)


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_smoothing_reduces_white_jitter_by_the_noise_gain(sigma):
    rng = np.random.default_rng(1)
    noise = rng.normal(0.0, 1.5, (20000, 4, 2)).astype(np.float32)
    radius = len(gaussian_weights(sigma)) // 2
    reduced = smooth_track(noise, sigma)[radius:-radius].std() / noise.std()
    expected = np.sqrt(np.sum(gaussian_weights(sigma) ** 2))
    assert abs(reduced / expected - 1) < 0.10, (reduced, expected)


# ---------------------------------------------------------------------------- the real clip

def read_rgb_frames(path: str):
    """RGB uint8 frames of a video, one at a time (OpenCV decodes BGR)."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise OSError(f"{path}: OpenCV cannot open it")
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


class TimedBackend:
    """Wraps a backend, timing each call and recording its results for ReplayBackend."""

    def __init__(self, inner):
        self.inner, self.detect_s, self.landmarks_s, self.calls = inner, [], [], []

    def detect(self, frame):
        start = time.perf_counter()
        boxes = self.inner.detect(frame)
        self.detect_s.append(time.perf_counter() - start)
        self.calls.append(boxes)
        return boxes

    def landmarks(self, frame, box):
        start = time.perf_counter()
        points = self.inner.landmarks(frame, box)
        self.landmarks_s.append(time.perf_counter() - start)
        self.calls.append(points)
        return points


class ReplayBackend:
    """Returns recorded results in call order, so a second track_video costs no detection."""

    def __init__(self, calls):
        self.calls = iter(calls)

    def detect(self, frame):
        return next(self.calls)

    def landmarks(self, frame, box):
        return next(self.calls)


@pytest.fixture(scope="module")
def carphone_tracks(carphone_clip):
    """(raw track, smoothed track, timed backend) of the whole clip, dlib run once."""
    timed = TimedBackend(DlibBackend())
    raw = track_video(read_rgb_frames(carphone_clip), timed, source=carphone_clip,
                      smoothing_sigma=0.0)
    smoothed = track_video(read_rgb_frames(carphone_clip), ReplayBackend(timed.calls),
                           source=carphone_clip, smoothing_sigma=1.0)
    return raw, smoothed, timed


def test_carphone_every_frame_tracked(carphone_tracks):
    raw, smoothed, timed = carphone_tracks
    summary = smoothed.summary()
    assert summary["frames"] == 120 and smoothed.landmarks.shape == (120, 68, 2)
    assert summary["detected"] >= 110, summary
    assert smoothed.frame_size == (144, 176)
    assert np.isfinite(smoothed.landmarks).all() and np.isfinite(smoothed.boxes).all()
    print(f"\ncarphone: {summary}; dlib detect {1e3 * np.mean(timed.detect_s):.1f} ms/frame "
          f"(max {1e3 * np.max(timed.detect_s):.1f}), landmarks "
          f"{1e3 * np.mean(timed.landmarks_s):.2f} ms/frame; box width "
          f"{np.mean(raw.boxes[:, 2] - raw.boxes[:, 0]):.1f} px")


def test_carphone_landmarks_are_plausible(carphone_tracks):
    _, track, _ = carphone_tracks
    points = track.landmarks
    inter_ocular = np.linalg.norm(points[:, 45] - points[:, 36], axis=-1)
    assert ((inter_ocular > 15) & (inter_ocular < 45)).all(), inter_ocular.min()
    eyes_y = points[:, 36:48, 1].mean(1)
    nose_y = points[:, 30, 1]
    mouth_y = points[:, 48:68, 1].mean(1)
    assert (eyes_y < nose_y).all() and (nose_y < mouth_y).all()
    # The nose tip lies inside the face box.
    boxes = track.boxes
    assert ((boxes[:, 0] < points[:, 30, 0]) & (points[:, 30, 0] < boxes[:, 2])).all()
    assert ((boxes[:, 1] < points[:, 30, 1]) & (points[:, 30, 1] < boxes[:, 3])).all()


def test_carphone_smoothing_stays_close_to_dlib(carphone_tracks):
    raw, smoothed, _ = carphone_tracks
    np.testing.assert_array_equal(raw.detected, smoothed.detected)
    on = raw.detected
    # dlib's points are pixel indices; the track puts them on pixel centres (j + 0.5, i + 0.5).
    np.testing.assert_array_equal(np.modf(raw.landmarks[on])[0], 0.5)
    distance = np.linalg.norm(smoothed.landmarks[on] - raw.landmarks[on], axis=-1)
    assert distance.mean() < 2.0, distance.mean()
    # Smoothing removes frame-to-frame jitter: the mean step between frames gets smaller.
    def mean_step(points):
        return np.linalg.norm(np.diff(points, axis=0), axis=-1).mean()

    assert mean_step(smoothed.landmarks) < mean_step(raw.landmarks)
