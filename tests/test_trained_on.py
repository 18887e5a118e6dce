"""No silent data loss across stages: a training work dir belongs to the subject it was trained on
(WORKDIR/trained_on.json), a resume on another subject is refused before the work dir is
touched, and infer refuses an A2E or renderer of another subject unless --allow-other-subject.

"Another subject" is the carphone subject re-prepared from another video at its own path: a
copy whose subject.json names another video hash and fingerprint, exactly what `prepare
--overwrite` with a different video leaves behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

import numpy as np
import pytest

from metatalk_jax import infer
from metatalk_jax.config_loading import load_config
from metatalk_jax.media.audio_files import write_wav
from metatalk_jax.train.trained_on import RECORD, check_run_subject
from tests.support.infer_fixtures import random_a2e, random_renderer


def another_subject(subject: str, path) -> str:
    """A copy of `subject` made as if prepared from another video (other hash, fingerprint)."""
    shutil.copytree(subject, path)
    meta_path = os.path.join(path, "subject.json")
    with open(meta_path) as f:
        meta = json.load(f)
    meta["fingerprint"] = "f" * 64
    meta["source"]["sha256"] = "e" * 64
    meta["source"]["original_path"] = "/videos/someone_else.mp4"
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    return str(path)


def fake_subject(path, fingerprint: str, video: str) -> str:
    """A directory with only a subject.json: all check_run_subject reads."""
    from metatalk_jax.subject import layout
    os.makedirs(path)
    with open(os.path.join(path, layout.SUBJECT_JSON), "w") as f:
        json.dump({"format": layout.FORMAT, "format_version": layout.FORMAT_VERSION,
                   "fingerprint": fingerprint, "model": {"sha256": "m" * 64},
                   "source": {"path": f"/videos/{video}", "sha256": fingerprint[::-1]}}, f)
    return str(path)


def test_records_are_written_once_and_compared(tmp_path):
    import ml_collections

    from metatalk_jax.subject.layout import Subject
    from metatalk_jax.train.trained_on import check_trained_on, read_record
    a = fake_subject(tmp_path / "a", "a" * 64, "talk.mp4")
    b = fake_subject(tmp_path / "b", "b" * 64, "film.mp4")
    config = ml_collections.ConfigDict({"data": {"subject": a}})
    workdir = str(tmp_path / "run")
    check_run_subject(config, workdir)
    assert read_record(workdir) == {"fingerprint": "a" * 64, "path": a, "video": "talk.mp4",
                                    "video_sha256": ("a" * 64)[::-1], "model_sha256": "m" * 64}
    check_run_subject(config, workdir)                              # the same subject: fine
    config.data.subject = b
    with pytest.raises(ValueError) as err:
        check_run_subject(config, workdir)
    assert "\n" not in str(err.value) and "film.mp4" in str(err.value)
    assert read_record(workdir)["fingerprint"] == "a" * 64          # the record is kept
    step_dir = os.path.join(workdir, "checkpoints", "5")
    subject_b = Subject(b, json.load(open(os.path.join(b, "subject.json"))), {}, {}, {})
    with pytest.raises(ValueError, match="--allow-other-subject"):
        check_trained_on(subject_b, step_dir, "renderer")
    note = check_trained_on(subject_b, step_dir, "renderer", allow_other=True)
    assert note.startswith("renderer: trained on another subject")
    subject_a = Subject(a, json.load(open(os.path.join(a, "subject.json"))), {}, {}, {})
    assert check_trained_on(subject_a, step_dir, "A2E") == "A2E: trained on this subject"
    unrecorded = os.path.join(tmp_path, "old_run", "checkpoints", "1")
    assert "not checked" in check_trained_on(subject_a, unrecorded, "A2E")


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def runs(carphone_subject, tmp_path_factory):
    """Random A2E and renderer work dirs of the carphone subject, with their subject records
    written as train_and_evaluate writes them (~80 s: the infer tests using it are slow)."""
    subject = str(carphone_subject[0])
    root = tmp_path_factory.mktemp("trained_on")
    a2e, renderer = str(root / "a2e"), str(root / "renderer")
    for workdir, name in ((a2e, "a2e:tiny"), (renderer, "renderer:tiny")):
        check_run_subject(load_config(name, [f"data.subject={subject}"]), workdir)
    random_a2e(a2e, subject, 10)
    random_renderer(renderer, subject, resolution=32)
    return {"subject": subject, "a2e": a2e, "renderer": renderer, "root": root,
            "other": another_subject(subject, root / "other_subject")}


def test_the_record_names_the_subject_and_a_resume_on_another_is_refused(carphone_subject,
                                                                          tmp_path, capsys):
    """The train CLI on a work dir of subject A with subject B: one line, exit 2, under 30 s,
    and the work dir's files are byte-for-byte what they were (config.json included)."""
    from metatalk_jax.train.__main__ import main as train_main
    subject = str(carphone_subject[0])
    other = another_subject(subject, tmp_path / "other_subject")
    workdir = str(tmp_path / "run")
    check_run_subject(load_config("renderer:tiny", [f"data.subject={subject}"]), workdir)
    with open(os.path.join(workdir, RECORD)) as f:
        record = json.load(f)
    with open(os.path.join(subject, "subject.json")) as f:
        assert record["fingerprint"] == json.load(f)["fingerprint"]
    assert record["video"] == "carphone_pristine.mp4"
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write('{"the": "run\'s own config"}')
    os.makedirs(os.path.join(workdir, "checkpoints", "1200"))
    with open(os.path.join(workdir, "checkpoints", "1200", "state"), "w") as f:
        f.write("seven minutes of training")
    before = {p: open(os.path.join(d, p), "rb").read()
              for d, _, files in os.walk(workdir) for p in files}
    start = time.perf_counter()
    code = train_main(["--config", "renderer:tiny", "--workdir", workdir,
                       f"--config.data.subject={other}", "--config.data.resolution=32"])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2 and len(_errors(err)) == 1, err[-2000:]
    assert "trained on subject" in _errors(err)[0] and "new --workdir" in _errors(err)[0]
    assert "someone_else.mp4" in _errors(err)[0] and "carphone_pristine.mp4" in _errors(err)[0]
    assert seconds < 30, seconds
    after = {p: open(os.path.join(d, p), "rb").read()
             for d, _, files in os.walk(workdir) for p in files}
    assert after == before


def _speech(path, seconds=1.2, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    audio = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return write_wav(str(path), audio.astype(np.float32), rate)


@pytest.mark.slow
def test_infer_refuses_checkpoints_of_another_subject_unless_allowed(runs, tmp_path, capsys):
    """Each refusal: one line naming the run and --allow-other-subject, exit 2, under 30 s,
    no output (the `runs` fixture costs ~80 s: slow)."""
    audio = _speech(tmp_path / "speech.wav")
    base = ["--a2e", runs["a2e"], "--renderer", runs["renderer"], "--audio", audio,
            "--lip-sync-frames", "0", "--preset", "ultrafast"]
    out = tmp_path / "out" / "x.mp4"
    start = time.perf_counter()
    code = infer.main(["--subject", runs["other"], "--out", str(out), *base])
    err = capsys.readouterr().err
    assert code == 2 and len(_errors(err)) == 1, err[-2000:]
    assert "the renderer was trained on subject" in _errors(err)[0]
    assert "--allow-other-subject" in _errors(err)[0]
    assert time.perf_counter() - start < 30 and not (tmp_path / "out").exists()

    # A renderer of this subject but an A2E of another: the A2E is named.
    other_a2e = str(tmp_path / "a2e_other")
    check_run_subject(load_config("a2e:tiny", [f"data.subject={runs['other']}"]), other_a2e)
    random_a2e(other_a2e, runs["other"], 10)
    code = infer.main(["--subject", runs["subject"], "--out", str(out), *base[:0],
                       "--a2e", other_a2e, *base[2:]])
    err = capsys.readouterr().err
    assert code == 2 and "the A2E was trained on subject" in _errors(err)[0], err[-2000:]



@pytest.mark.slow
def test_with_the_flag_a_cross_subject_run_goes_through(runs, tmp_path, capsys, caplog):
    """--allow-other-subject: the whole video is written (~35 s on 2 busy cores), the summary
    and a warning line say which checkpoints were of another subject."""
    audio = _speech(tmp_path / "speech.wav")
    out = tmp_path / "out" / "x.mp4"
    with caplog.at_level(logging.WARNING):
        code = infer.main(["--subject", runs["other"], "--out", str(out), "--a2e", runs["a2e"],
                           "--renderer", runs["renderer"], "--audio", audio, "--lip-sync-frames",
                           "0", "--preset", "ultrafast", "--allow-other-subject"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert out.exists() and len(summary["trained_on"]) == 2
    assert all("used with --allow-other-subject" in note for note in summary["trained_on"])
    assert "warning: A2E: trained on another subject" in captured.err
    # orbax's warnings (absl's handler writes to the stderr of import time, which capsys does
    # not see: the records are checked instead)
    assert [r.getMessage() for r in caplog.records if r.name == "absl"] == []
