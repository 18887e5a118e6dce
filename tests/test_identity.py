"""One identity held through a video (tracking/identity.py + track.py) with a scripted backend
and scripted descriptors: who is taken in every frame is known exactly, so each test compares
the per-frame statuses and landmarks with the script."""

from __future__ import annotations

import numpy as np
import pytest

from metatalk_jax.tracking.identity import (FILLED, NO_FACE, OTHER_PERSON, TRACKED,
                                            IdentityFollower, face_at_point, most_prominent)
from metatalk_jax.tracking.track import FaceTrack, NoFaceYet, TrackingError, track_video


def person_points(person: int, t: int, box) -> np.ndarray:
    """[68,2] points inside `box`, different per person and frame, so a test can tell whose
    landmarks a frame got."""
    k = np.arange(68, dtype=np.float64)
    x = box[0] + 2 + (k % 17) * (box[2] - box[0] - 4) / 17 + 0.01 * person
    y = box[1] + 2 + (k // 17) * (box[3] - box[1] - 4) / 4 + 0.001 * t
    return np.stack([x, y], -1).astype(np.float32)


def box_at(x0, y0, size=40.0):
    return np.array([x0, y0, x0 + size, y0 + size, 1.0], np.float32)


class Scene:
    """script[t]: list of (person id, box [5]); frame t is np.full(.., t). The backend detects
    the scripted boxes; the describer returns person p's descriptor (unit vector p, plus a
    little per-frame noise), so distances are ~0.05 within a person and ~1.41 between two."""

    def __init__(self, script, size=(120, 200)):
        self.script, self.size = script, size
        self.described = []                 # (frame, person) of every descriptor computed

    def frames(self, consumed=None):
        for t in range(len(self.script)):
            if consumed is not None:
                consumed.append(t)
            yield np.full(self.size + (3,), t, np.uint8)

    def _find(self, frame, box):
        t = int(frame[0, 0, 0])
        for person, candidate in self.script[t]:
            if np.array_equal(candidate[:4], np.asarray(box, np.float32)[:4]):
                return t, person
        raise AssertionError(f"no scripted face at {box} in frame {t}")

    def detect(self, frame):
        faces = self.script[int(frame[0, 0, 0])]
        return np.stack([b for _, b in faces]) if faces else np.zeros((0, 5), np.float32)

    def landmarks(self, frame, box):
        t, person = self._find(frame, box)
        return person_points(person, t, box)

    def describe(self, frame, box, points):
        t, person = self._find(frame, box)
        self.described.append((t, person))
        vector = np.zeros(8, np.float32)
        vector[person] = 1.0
        return vector + np.random.default_rng(t).normal(0, 0.01, 8).astype(np.float32)


def follow(scene, *, reference=None, check_every=12, **kw):
    follower = IdentityFollower(scene.describe, reference=reference, check_every=check_every)
    kw.setdefault("smoothing_sigma", 0.0)
    kw.setdefault("exclude_runs", True)
    track = track_video(scene.frames(), scene, source="/videos/film.mp4", follower=follower, **kw)
    return track, follower


def whose(track: FaceTrack, scene: Scene) -> list:
    """Per frame: the person whose landmarks the track holds (None for excluded frames)."""
    out = []
    for t in range(track.num_frames):
        if not track.kept[t] or track.status[t] == FILLED:
            out.append(None)
            continue
        match = [p for p, b in scene.script[t]
                 if np.allclose(track.landmarks[t], person_points(p, t, b))]
        out.append(match[0] if match else "?")
    return out


def test_a_larger_second_person_entering_is_never_taken():
    """A (person 0) talks; B (1, larger) enters at frame 20; A is gone in frames 40-51 while B
    stays. Without the identity check the tracker would restart on B at frame 40 and keep her."""
    script = []
    for t in range(80):
        faces = [] if 40 <= t <= 51 else [(0, box_at(20 + 0.3 * t, 40))]
        if t >= 20:
            faces.append((1, box_at(120, 30, size=60)))
        script.append(faces)
    scene = Scene(script)
    track, follower = follow(scene)
    want = [TRACKED] * 40 + [OTHER_PERSON] * 12 + [TRACKED] * 28
    assert track.status.tolist() == want
    assert whose(track, scene) == [0] * 40 + [None] * 12 + [0] * 28
    summary = track.summary()
    assert summary["kept"] == 68
    assert summary["excluded"]["other_person"] == {"frames": 12, "ranges": [(40, 51)]}
    assert summary["excluded"]["no_face"] == {"frames": 0, "ranges": []}
    # B was described once per check_every frames at most, A rarely (continuity in between).
    assert len(scene.described) < 80 / 12 * 2 + 6, scene.described
    # The same scene without a follower (the old tracker): B is taken from frame 40 on.
    plain = track_video(scene.frames(), scene, source="film.mp4", smoothing_sigma=0.0)
    assert whose(plain, scene)[40:] == [1] * 40


def test_a_swap_in_place_is_caught_and_the_unconfirmed_window_excluded():
    """B takes A's place (same box) at frame 30: box continuity alone would follow B. The next
    identity check (frame 36) fails, so frames 25-35 (after the last confirmation, frame 24)
    and every later frame of B are excluded; no frame of B is kept."""
    script = [[(0 if t < 30 else 1, box_at(50, 40))] for t in range(60)]
    scene = Scene(script)
    track, _ = follow(scene, check_every=12)
    assert np.flatnonzero(track.kept).tolist() == list(range(25))
    assert set(whose(track, scene)) == {0, None}
    assert track.excluded_ranges() == {"no_face": [], "other_person": [(25, 59)]}


def test_the_users_choice_is_followed_not_the_most_prominent_face():
    script = [[(0, box_at(80, 30, size=70)), (1, box_at(10, 10, size=30))] for _ in range(30)]
    scene = Scene(script)
    assert most_prominent(np.stack([b for _, b in script[0]]), (120, 200)) == 0
    default, _ = follow(scene)
    assert set(whose(default, scene)) == {0}
    chosen = np.zeros(8, np.float32)
    chosen[1] = 1.0                      # the descriptor of the small face, as --face gives it
    track, _ = follow(scene, reference=chosen)
    assert set(whose(track, scene)) == {1} and track.kept.all()


def test_gaps_are_filled_within_a_shot_but_never_across_a_cut():
    class Cuts:
        def __init__(self, at):
            self.at, self.t = set(at), -1

        def __call__(self, frame):
            self.t += 1
            return self.t in self.at

    missing = set(range(10, 13)) | set(range(30, 33))
    script = [[] if t in missing else [(0, box_at(40 + t, 40))] for t in range(50)]
    track, _ = follow(Scene(script), cuts=Cuts({31}), min_kept_fraction=0.5)
    assert track.status[10:13].tolist() == [FILLED] * 3          # same shot: interpolated
    assert track.status[30:33].tolist() == [NO_FACE] * 3         # a cut inside: left out
    assert track.cuts == [31] and track.gaps == [(10, 12)]
    kept = track.kept_only()
    assert kept.num_frames == 47
    assert kept.source_frames.tolist() == [t for t in range(50) if not 30 <= t <= 32]
    assert kept.gaps == [(10, 12)] and kept.cuts == [30]       # the row after the left-out run
    assert np.isfinite(kept.landmarks).all() and np.isnan(track.landmarks[30:33]).all()


def test_kept_track_round_trips_with_its_statuses(tmp_path):
    script = [[(0, box_at(40, 40))] if t % 20 < 15 else [(1, box_at(100, 40))]
              for t in range(40)]
    track, _ = follow(Scene(script), min_kept_fraction=0.5)
    assert track.excluded_ranges()["other_person"] == [(15, 19), (35, 39)]
    kept = track.kept_only()
    back = FaceTrack.from_npz(kept.to_npz(str(tmp_path / "landmarks.npz")))
    np.testing.assert_array_equal(back.source_frames, kept.source_frames)
    np.testing.assert_array_equal(back.status, kept.status)
    assert back.cuts == kept.cuts == [15]


def test_too_little_of_the_target_is_one_clear_error():
    script = [[(0, box_at(40, 40))] if t < 20 else [(1, box_at(40, 40))] for t in range(100)]
    with pytest.raises(TrackingError) as err:
        follow(Scene(script), min_kept_fraction=0.5)
    message = str(err.value)
    assert "\n" not in message and message.startswith("film.mp4: only ")
    # Frames 0-12 are confirmed (checks at 0 and 12); 13-23 wait for frame 24's check, which
    # fails: 13 frames show the target, 87 another person.
    assert "13 of 100 frames" in message and "87 with another person" in message


def test_no_face_in_the_first_frames_fails_before_the_rest_is_read():
    scene = Scene([[] for _ in range(500)])
    consumed = []
    with pytest.raises(NoFaceYet) as err:
        track_video(scene.frames(consumed), scene, source="film.mp4", first_face_frames=50,
                    no_face_hint=lambda frame: "; try turning it")
    assert str(err.value) == "film.mp4: no face found in the first 50 frames; try turning it"
    assert len(consumed) == 50


def test_face_at_point_picks_the_box_containing_it():
    boxes = np.array([[0, 0, 50, 50], [40, 0, 100, 60], [200, 200, 210, 210]], np.float32)
    assert face_at_point(boxes, (10, 10)) == 0
    assert face_at_point(boxes, (48, 40)) == 1       # in both: (70, 30) is nearer than (25, 25)
    assert face_at_point(boxes, (150, 150)) is None


def test_a_long_absence_is_excluded_and_reported_not_an_error():
    """Without a follower too: 20 frames without any face (more than max_gap 12) are left out
    as 'no_face' with exclude_runs; without it they stay an error (single-person videos)."""
    script = [[] if 40 <= t < 60 else [(0, box_at(40, 40))] for t in range(100)]
    scene = Scene(script)
    track = track_video(scene.frames(), scene, source="film.mp4", exclude_runs=True,
                        min_kept_fraction=0.5)
    assert track.excluded_ranges() == {"no_face": [(40, 59)], "other_person": []}
    assert track.summary()["kept"] == 80 and track.kept_only().cuts == [40]
    with pytest.raises(TrackingError, match="no face in frames 40-59"):
        track_video(scene.frames(), scene, source="film.mp4")
