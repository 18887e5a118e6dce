"""Mistakes a new user makes are refused at once with one line naming the file and what to do
(exit 2), and nothing they made is lost: prepare over another subject or over a folder of
theirs, a video without a face (or a sideways one), a --text file that is not UTF-8, pseudo
corpora the tiny A2E config would have ignored. Each case is timed: under 30 s on 2 busy cores.
"""

from __future__ import annotations

import json
import os
import time

import cv2
import numpy as np
import pytest

from metatalk_jax import prepare
from metatalk_jax.media.video_read import read_frames
from metatalk_jax.media.video_write import Mp4Writer
from metatalk_jax.subject import layout
from tests.test_a2e import corpus, tiny_config  # noqa: F401  (the A2E test corpus fixture)


def one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


def snapshot(folder) -> dict:
    return {os.path.join(d, f): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(folder) for f in files}


def run_prepare(capsys, *args) -> tuple[int, str, float]:
    start = time.perf_counter()
    code = prepare.main([str(a) for a in args] + ["--config", "prepare:tiny"])
    return code, capsys.readouterr().err, time.perf_counter() - start


def fake_subject(path, video_sha: str, name="earlier_talk.mp4", **config) -> str:
    """A subject directory as prepare leaves it, as far as the replace check reads it."""
    from metatalk_jax.config_loading import load_config
    os.makedirs(path)
    cfg = load_config("prepare:tiny").to_dict()
    cfg.update(config)
    with open(os.path.join(path, layout.SUBJECT_JSON), "w") as f:
        json.dump({"format": layout.FORMAT, "format_version": layout.FORMAT_VERSION,
                   "fingerprint": "0" * 64, "config": cfg,
                   "source": {"path": f"/videos/{name}", "sha256": video_sha},
                   "model": {"sha256": "unknown", "name": "bfm.npz"}}, f)
    (path / "coefficients.npz").write_bytes(b"seven minutes of fitting")
    return str(path)


def test_prepare_never_replaces_another_subject_or_a_users_folder(carphone_clip, tmp_path,
                                                                  capsys):
    from metatalk_jax.checksums import file_sha256
    other = fake_subject(tmp_path / "mm", "e" * 64)
    before = snapshot(other)
    code, err, seconds = run_prepare(capsys, "--video", carphone_clip, "--out", other)
    line = one_error(err)
    assert code == 2 and seconds < 30, (code, seconds)
    assert "prepared from another video (earlier_talk.mp4)" in line and "--overwrite" in line
    assert snapshot(other) == before
    # Same video, another config: the differing key is named.
    same_video = fake_subject(tmp_path / "cfg", file_sha256(carphone_clip), upsample=2)
    code, err, _ = run_prepare(capsys, "--video", carphone_clip, "--out", same_video)
    line = one_error(err)
    assert code == 2 and "with another" in line and "--overwrite" in line, line
    # A folder that is not a subject is never replaced, not even with --overwrite.
    mine = tmp_path / "my_notes"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    code, err, _ = run_prepare(capsys, "--video", carphone_clip, "--out", mine, "--overwrite")
    assert code == 2 and "is not a subject directory" in one_error(err)
    assert (mine / "notes.txt").read_text() == "mine"


def write_video(path, frames, fps=25.0) -> str:
    with Mp4Writer(str(path), fps, crf=23, preset="ultrafast") as writer:
        for frame in frames:
            writer.write(frame)
    return str(path)


def test_a_video_without_a_face_fails_in_seconds_with_a_hint(tmp_path, capsys):
    """Two minutes of a face-free picture: refused after the first seconds, not after all of
    its 3000 frames were tracked."""
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), (320, 240))
    frames = (np.roll(base, t, axis=1) for t in range(3000))
    video = write_video(tmp_path / "wall.mp4", frames)
    out = tmp_path / "subject"
    code, err, seconds = run_prepare(capsys, "--video", video, "--out", out,
                                     "--config.audio_required=False")
    line = one_error(err)
    print(f"\n{seconds:.1f} s: {line}")
    assert code == 2 and seconds < 30
    assert "wall.mp4: no face found in the first 5.0 s" in line and "upsample" in line
    assert not out.exists() and os.listdir(tmp_path) == ["wall.mp4"]


def test_a_sideways_video_is_named_as_such(carphone_clip, tmp_path, capsys):
    frames = [cv2.rotate(f, cv2.ROTATE_90_COUNTERCLOCKWISE)
              for f in read_frames(carphone_clip, fps=25.0, max_frames=50)]
    video = write_video(tmp_path / "phone.mp4", frames)
    code, err, seconds = run_prepare(capsys, "--video", video, "--out", tmp_path / "s",
                                     "--config.audio_required=False")
    line = one_error(err)
    assert code == 2 and seconds < 30
    assert "turned 90 degrees clockwise" in line and "transpose=1" in line, line


def minimal_subject(path) -> str:
    """A directory load_subject reads (the viseme teacher reads --text right after it)."""
    os.makedirs(path)
    with open(os.path.join(path, layout.SUBJECT_JSON), "w") as f:
        json.dump({"format": layout.FORMAT, "format_version": layout.FORMAT_VERSION,
                   "fingerprint": "0" * 64}, f)
    for name in (layout.COEFFICIENTS, layout.CROPS, layout.LANDMARKS):
        np.savez(os.path.join(path, name), empty=np.zeros(1))
    return str(path)


def test_a_text_file_that_is_not_utf8_is_named(tmp_path, capsys):
    from metatalk_jax import pseudo
    text = tmp_path / "sätze.txt"
    text.write_bytes("Guten Tag.\nDie Straße ist naß.\n".encode("latin-1"))
    out = tmp_path / "corpus"
    code = pseudo.main(["--teacher", "visemes", "--subject", minimal_subject(tmp_path / "s"),
                        "--text", str(text), "--out", str(out)])
    line = one_error(capsys.readouterr().err)
    assert code == 2 and str(text) in line
    assert "not UTF-8 text (byte 0xdf on line 2)" in line and not out.exists()


def test_pseudo_corpora_are_not_silently_ignored_by_the_tiny_a2e(corpus, tmp_path,  # noqa: F811
                                                                 capsys):
    from metatalk_jax.train.__main__ import main as train_main
    from metatalk_jax.train.a2e_task import A2ETask
    subject, pseudo_root = corpus
    with pytest.raises(ValueError, match="would be ignored: config.data.pseudo_ratio is 0"):
        A2ETask(tiny_config(subject, f"data.pseudo_dirs={pseudo_root}"))
    A2ETask(tiny_config(subject, f"data.pseudo_dirs={pseudo_root}", "data.pseudo_ratio=0.5"))
    start = time.perf_counter()
    code = train_main(["--config", "a2e:tiny", "--workdir", str(tmp_path / "run"),
                       f"--config.data.subject={subject}", "--config.data.model=procedural",
                       f"--config.data.pseudo_dirs={pseudo_root}"])
    line = one_error(capsys.readouterr().err)
    assert code == 2 and "--config.data.pseudo_ratio=0.5" in line
    assert time.perf_counter() - start < 30
