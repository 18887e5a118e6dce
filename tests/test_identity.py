"""One identity held through a video (tracking/face_tracks.py, identity_decision.py, track.py)
with a scripted backend and scripted descriptors: who is taken in every frame is known exactly,
so each test compares the per-frame statuses and landmarks with the script."""

from __future__ import annotations

import numpy as np
import pytest

from metatalk_jax.errors import InputError
from metatalk_jax.tracking.face_tracks import FaceTable, FaceTracks
from metatalk_jax.tracking.identity import (AMBIGUOUS, DROPPED, FILLED, NO_FACE, OTHER_PERSON,
                                            TRACKED, face_at_point, most_prominent)
from metatalk_jax.tracking.identity_decision import (EXCLUDED, KEPT, UNSURE, decide_identity,
                                                     default_seed, seed_track)
from metatalk_jax.tracking.track import (FaceTrack, NoFaceYet, TrackingError, track_from_faces,
                                         track_video)


def person_points(person: int, t: int, box) -> np.ndarray:
    """[68,2] points inside `box`, different per person and frame, so a test can tell whose
    landmarks a frame got."""
    k = np.arange(68, dtype=np.float64)
    x = box[0] + 2 + (k % 17) * (box[2] - box[0] - 4) / 17 + 0.01 * person
    y = box[1] + 2 + (k // 17) * (box[3] - box[1] - 4) / 4 + 0.001 * t
    return np.stack([x, y], -1).astype(np.float32)


def box_at(x0, y0, size=40.0):
    return np.array([x0, y0, x0 + size, y0 + size, 1.0], np.float32)


def person_vector(person: int) -> np.ndarray:
    """Person p's descriptor: unit vector p of 8, so two people lie 1.41 apart."""
    vector = np.zeros(8, np.float32)
    vector[person] = 1.0
    return vector


def near(person: int, distance: float, axis: int = 7) -> np.ndarray:
    """A descriptor `distance` from person's (towards unit vector `axis`)."""
    return person_vector(person) + distance * person_vector(axis)


class Scene:
    """script[t]: list of (person id, box [5]); frame t is np.full(.., t). The backend detects
    the scripted boxes; the describer returns person p's descriptor (person_vector(p), or
    vectors[p] when given, plus a little per-frame noise), so distances are ~0.04 within a
    person and ~1.41 between two."""

    def __init__(self, script, size=(120, 200), vectors=None):
        self.script, self.size = script, size
        self.vectors = vectors or {}
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
        vector = self.vectors.get(person, person_vector(person))
        return vector + np.random.default_rng(t).normal(0, 0.01, 8).astype(np.float32)


def follow(scene, *, chosen=None, every=12, keep=(), drop=(), **kw):
    """track_video with face tracks; chosen: (frame, box) of the user's pick (else the most
    prominent face of the first frame with a face)."""
    def decide(table):
        seed = default_seed(table) if chosen is None else seed_track(table, *chosen)
        return decide_identity(table, seed, keep=keep, drop=drop)

    kw.setdefault("smoothing_sigma", 0.0)
    kw.setdefault("exclude_runs", True)
    track = track_video(scene.frames(), scene, source="/videos/film.mp4",
                        faces=FaceTracks(scene.describe, every=every), decide=decide, **kw)
    return track, track.identity[1]


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
    track, _ = follow(scene)
    want = [TRACKED] * 40 + [OTHER_PERSON] * 12 + [TRACKED] * 28
    assert track.status.tolist() == want
    assert whose(track, scene) == [0] * 40 + [None] * 12 + [0] * 28
    summary = track.summary()
    assert summary["kept"] == 68
    assert summary["excluded"]["other_person"] == {"frames": 12, "ranges": [(40, 51)]}
    assert summary["excluded"]["no_face"] == {"frames": 0, "ranges": []}
    # Each face was described once per `every` frames and at the ends of its track.
    assert len(scene.described) < 80 / 12 * 2 + 6, scene.described
    # The same scene without identity (the plain tracker): B is taken from frame 40 on.
    plain = track_video(scene.frames(), scene, source="film.mp4", smoothing_sigma=0.0)
    assert whose(plain, scene)[40:] == [1] * 40


def test_a_swap_in_place_is_caught_and_the_unseen_window_left_out():
    """B takes A's place (same box) at frame 30: box continuity alone would follow B. The
    track's descriptors (frames 0, 12, 24 | 36, 48, 59) change person, so it is split: A's part
    (0-24) is kept, the frames between the two descriptors (25-35, where the swap happened
    unseen) are ambiguous, B's part is another person; no frame of B is kept."""
    script = [[(0 if t < 30 else 1, box_at(50, 40))] for t in range(60)]
    scene = Scene(script)
    track, decision = follow(scene, every=12)
    assert np.flatnonzero(track.kept).tolist() == list(range(25))
    assert set(whose(track, scene)) == {0, None}
    assert track.excluded_ranges() == {"no_face": [], "other_person": [(36, 59)],
                                       "ambiguous": [(25, 35)], "dropped": []}
    assert [(s.first, s.last, s.decision) for s in decision.shots] == [
        (0, 24, KEPT), (25, 35, UNSURE), (36, 59, EXCLUDED)]


def test_the_users_choice_is_followed_not_the_most_prominent_face():
    script = [[(0, box_at(80, 30, size=70)), (1, box_at(10, 10, size=30))] for _ in range(30)]
    scene = Scene(script)
    assert most_prominent(np.stack([b for _, b in script[0]]), (120, 200)) == 0
    default, _ = follow(scene)
    assert set(whose(default, scene)) == {0}
    track, decision = follow(scene, chosen=(0, script[0][1][1]))    # --face on the small face
    assert set(whose(track, scene)) == {1} and track.kept.all()
    assert decision.of(decision.seed).decision == KEPT
    assert [s.why for s in decision.shots if s.decision == EXCLUDED] == [
        "on screen together with the target"]


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
    # One track split at the change of person: A's part ends at its last descriptor (frame
    # 12), frames 13-23 (before B's first descriptor, frame 24) are ambiguous, 24-99 are B.
    assert "13 of 100 frames" in message and "76 with another person" in message
    assert "11 with a face that may or may not be them" in message


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
    """Without identity too: 20 frames without any face (more than max_gap 12) are left out
    as 'no_face' with exclude_runs; without it they stay an error (single-person videos)."""
    script = [[] if 40 <= t < 60 else [(0, box_at(40, 40))] for t in range(100)]
    scene = Scene(script)
    track = track_video(scene.frames(), scene, source="film.mp4", exclude_runs=True,
                        min_kept_fraction=0.5)
    assert track.excluded_ranges() == {"no_face": [(40, 59)], "other_person": [],
                                       "ambiguous": [], "dropped": []}
    assert track.summary()["kept"] == 80 and track.kept_only().cuts == [40]
    with pytest.raises(TrackingError, match="no face in frames 40-59"):
        track_video(scene.frames(), scene, source="film.mp4")


def two_shots(second_person: int, vectors=None, frames=(40, 40)):
    """Shot 1: person 0 alone; a cut; shot 2: `second_person` alone at another place."""
    script = ([[(0, box_at(40, 40))] for _ in range(frames[0])]
              + [[(second_person, box_at(100, 30, size=50))] for _ in range(frames[1])])

    class Cuts:
        def __init__(self):
            self.t = -1

        def __call__(self, frame):
            self.t += 1
            return self.t == frames[0]
    return Scene(script, vectors=vectors), Cuts


@pytest.mark.parametrize("distance, want", [(0.2, KEPT), (0.43, UNSURE), (0.9, EXCLUDED)])
def test_a_shot_is_kept_ambiguous_or_excluded_by_its_distance(distance, want):
    """A/B/C on one scene: the second shot's face lies 0.2, 0.43 or 0.9 from the target's
    descriptor. Its decision follows the distance; an ambiguous shot is left out and named."""
    scene, cuts = two_shots(5, vectors={5: near(0, distance)})
    track, decision = follow(scene, cuts=cuts(), min_kept_fraction=0.3)
    second = decision.of(2)
    assert (second.decision == want and second.segment == 1
            and (second.first, second.last) == (40, 79))
    # A kept shot joins the target: the centre moves half way to it (4 descriptors each).
    assert abs(second.distance - (distance / 2 if want == KEPT else distance)) < 0.05
    if want == KEPT:
        assert track.kept.all()
    else:
        assert not track.kept[40:].any()
        code = AMBIGUOUS if want == UNSURE else OTHER_PERSON
        assert (track.status[40:] == code).all()
        assert decision.summary()["ambiguous" if want == UNSURE else "excluded"] == [2]


def test_the_users_corrections_keep_and_drop_shots_without_the_video():
    """--keep-shots takes an ambiguous shot in, --drop-shots leaves a kept one out: decided
    again from the saved table, with no frame read and no descriptor computed."""
    scene, cuts = two_shots(5, vectors={5: near(0, 0.43)})
    track, decision = follow(scene, cuts=cuts(), min_kept_fraction=0.3)
    table = track.identity[0]
    assert decision.of(2).decision == UNSURE
    described = len(scene.described)
    kept = track_from_faces(table, decide_identity(table, 1, keep=[2]), source="film.mp4")
    assert kept.kept.all() and kept.identity[1].of(2).why == "kept with --keep-shots"
    scene2, cuts2 = two_shots(0, frames=(40, 40))
    track2, decision2 = follow(scene2, cuts=cuts2(), min_kept_fraction=0.3)
    assert decision2.of(2).decision == KEPT
    dropped = track_from_faces(track2.identity[0], decide_identity(track2.identity[0], 1,
                                                                   drop=[2]),
                               source="film.mp4", min_kept_fraction=0.3)
    assert (dropped.status[40:] == DROPPED).all() and dropped.kept[:40].all()
    assert dropped.excluded_ranges()["dropped"] == [(40, 79)]
    assert len(scene.described) == described
    with pytest.raises(InputError, match="--drop-shots 1: that is the target's own"):
        decide_identity(table, 1, drop=[1])
    with pytest.raises(InputError, match="--keep-shots 9: no such shot"):
        decide_identity(table, 1, keep=[9])


def test_the_target_s_spread_is_learnt_from_its_own_shots():
    """Four shots of the target whose centres drift 0.3 from one another (lighting, angle)
    and a look-alike 0.55 from the first: every shot of the target is kept (the spread grows
    with each one), the look-alike never is."""
    script, vectors = [], {}
    for shot, person in enumerate([0, 4, 5, 3, 6]):
        script += [[(person, box_at(20 + 30 * shot, 40))] for _ in range(25)]
    vectors = {4: near(0, 0.30, 4), 5: near(0, 0.30, 5), 6: near(0, 0.30, 6),
               3: near(0, 0.55, 3)}

    class Cuts:
        def __init__(self):
            self.t = -1

        def __call__(self, frame):
            self.t += 1
            return self.t > 0 and self.t % 25 == 0
    track, decision = follow(Scene(script, vectors=vectors), cuts=Cuts(), every=6,
                             min_kept_fraction=0.3)
    assert [s.decision for s in decision.shots] == [KEPT, KEPT, KEPT, EXCLUDED, KEPT]
    assert decision.spread_q90 > 0.2 and decision.keep_limit <= 0.47


def test_the_table_round_trips(tmp_path):
    scene, cuts = two_shots(1)
    track, _ = follow(scene, cuts=cuts(), min_kept_fraction=0.3)
    table = track.identity[0]
    back = FaceTable.from_npz(table.to_npz(str(tmp_path / "faces.npz")))
    for name in ("obs_track", "obs_frame", "obs_box", "obs_landmarks", "descriptors", "thumbs"):
        np.testing.assert_array_equal(getattr(back, name), getattr(table, name))
    assert (back.num_frames, back.frame_size, back.cuts) == (80, (120, 200), [40])
