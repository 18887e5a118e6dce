"""`prepare` end to end on a film-like clip: the carphone man (frames 0-39), a cut to another
person (scikit-image's astronaut, 40-59, with silence), a cut back to the man (60-99, the
clip's own frames 60-99), with speech-like audio on the man's frames. Prepared over an older
subject with --overwrite. ~5 minutes on 2 busy cores: marked slow.

Checked against the construction: no frame of the astronaut (nor her silence) reaches the
subject; the cuts and the excluded range are in report.json, the summary line and the error
plot; the subject's frames are the man's frames, in order.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from metatalk_jax.media.audio_files import load_audio
from metatalk_jax.media.video_read import count_frames, read_frames
from metatalk_jax.media.video_write import Mp4Writer
from metatalk_jax.subject import layout
from metatalk_jax.subject.previews import EXCLUDED_COLOURS
from metatalk_jax.tracking.track import FaceTrack
from tests.support.prepare_runner import run_prepare
from tests.test_fail_fast import fake_subject
from tests.test_identity_video import astronaut_panel

RATE = 16000
SAMPLES_PER_FRAME = RATE // 25


def film(path, man) -> str:
    frames = man[:40] + [astronaut_panel(t) for t in range(20)] + man[60:100]
    t = np.arange(100 * SAMPLES_PER_FRAME) / RATE
    audio = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    audio[40 * SAMPLES_PER_FRAME:60 * SAMPLES_PER_FRAME] = 0.0
    with Mp4Writer(str(path), 25.0, audio=audio.astype(np.float32), sample_rate=RATE,
                   crf=14, preset="veryfast") as writer:
        for frame in frames:
            writer.write(frame)
    return str(path)


@pytest.mark.slow
def test_prepare_keeps_one_person_through_cuts(carphone_clip, tmp_path):
    man = list(read_frames(carphone_clip, fps=25.0))
    video = film(tmp_path / "film.mp4", man)
    out = tmp_path / "subject"
    fake_subject(out, "e" * 64)                       # an older subject of another video
    done = run_prepare(video, out, "--overwrite")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = [line for line in done.stderr.splitlines() if "[prepare] tracking:" in line]
    assert len(summary) == 1 and "is in 80 of 100 frames" in summary[0], done.stderr[-3000:]
    assert "excluded 20 with another person (frames 40-59)" in summary[0]
    assert "2 shot cut(s) at frame 40, 60" in summary[0]

    report = json.loads((out / layout.REPORT).read_text())
    tracking = report["tracking"]
    assert tracking["excluded"]["other_person"] == {"frames": 20, "ranges": [[40, 59]]}
    assert tracking["cuts"] == [40, 60] and tracking["kept"] == 80
    assert report["per_frame"]["source_frame"] == list(range(40)) + list(range(60, 100))
    assert report["video_frames"]["status"][40:60] == [3] * 20

    meta = json.loads((out / layout.SUBJECT_JSON).read_text())
    frames_video = str(out / layout.FRAMES_VIDEO)
    assert meta["source"]["path"] == frames_video and meta["num_frames"] == 80
    assert meta["source"]["original_path"] == video and meta["fingerprint"] != "0" * 64
    assert count_frames(frames_video) == 80
    # The subject's frames are the man's: frame 45 of the subject is video frame 65 = man[65].
    kept = list(read_frames(frames_video, fps=25.0))
    for row, source in ((0, 0), (39, 39), (40, 60), (79, 99)):
        assert np.abs(kept[row].astype(int) - man[source]).mean() < 4.0, (row, source)
    track = FaceTrack.from_npz(str(out / layout.LANDMARKS))
    assert track.source_frames.tolist() == report["per_frame"]["source_frame"]
    assert track.cuts == [40]

    # Her silence is gone: every subject frame has the man's speech-like audio.
    audio = load_audio(str(out / layout.AUDIO), RATE)
    assert abs(len(audio) - 80 * SAMPLES_PER_FRAME) <= SAMPLES_PER_FRAME
    rms = np.sqrt(np.mean(audio[:80 * SAMPLES_PER_FRAME].reshape(80, -1) ** 2, axis=1))
    assert rms.min() > 0.02, rms.min()          # her frames' RMS is ~0; his at least 0.042

    from metatalk_jax.data_pipelines.subject_frames import open_target_source
    sizes = [len(open_target_source(str(out / layout.TFDS_DIR), s))
             for s in ("train", "validation")]
    assert sum(sizes) == 80

    import cv2
    plot = cv2.imread(str(out / layout.PREVIEWS / "errors.png"))[..., ::-1]
    shaded = np.all(plot == EXCLUDED_COLOURS["other_person"], axis=-1)
    assert shaded[30:58].any()                         # the legend (under the 30 px title)
    columns = np.flatnonzero(shaded[58:].any(axis=0))  # the panels' shading
    width = plot.shape[1]
    left, right = 70, width - 20
    expected = (left + 40 * (right - left) / 100, left + 60 * (right - left) / 100)
    assert abs(columns.min() - expected[0]) <= 2 and abs(columns.max() - expected[1]) <= 2
    assert not os.path.exists(out / ".." / f".{out.name}.old")
    # Who is in it, per shot: the report, the contact sheet, the saved face tracks.
    identity = tracking["identity"]
    # (a shot ends at its last detected face: the clip's last two are missed, then filled)
    assert [(s["first"], s["last"] >= s["first"] + 17, s["decision"])
            for s in identity["shots"]] == [(0, True, "kept"), (40, True, "excluded"),
                                             (60, True, "kept")]
    assert (out / layout.PREVIEWS / layout.IDENTITY_SHEET).is_file()
    assert (out / layout.TRACKING_DIR / layout.FACES_NPZ).is_file()
    assert sum("shot #" in line for line in done.stderr.splitlines()) == 3
