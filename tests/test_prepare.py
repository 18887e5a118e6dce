"""`python -m metatalk_jax.prepare` end to end on the real carphone clip, and its bad inputs.

The clip (176x144, 29.97 fps, 120 frames, no audio) becomes 100 frames at 25 fps. The checks
recompute what they can independently: landmark error from the stored coefficients and camera,
face crops from the video and the stored crop transforms, TFDS records against the stored arrays.
"""

import glob
import json
import os
import subprocess

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from metatalk_jax.data_pipelines.subject_frames import decode_example, open_target_source
from metatalk_jax.face3d import assets
from metatalk_jax.face3d.morphable import load_npz
from metatalk_jax.media.ffmpeg_tools import ffmpeg_exe
from metatalk_jax.media.video_read import count_frames, read_frames
from metatalk_jax.subject import layout
from metatalk_jax.tracking.crop import crop_frame, crop_matrices
from tests.support.prepare_runner import REPO, TINY, run_prepare  # noqa: F401



@pytest.fixture(scope="module")
def subject(carphone_subject):
    return carphone_subject


def test_every_frame_is_tracked_and_fitted(subject, carphone_clip):
    out, done = subject
    s = layout.load_subject(str(out))
    frames = count_frames(carphone_clip, fps=25.0)
    assert frames == 100 == s.num_frames
    assert s.landmarks["landmarks"].shape == (100, 68, 2)
    assert np.isfinite(s.landmarks["landmarks"]).all()
    assert s.landmarks["detected"].sum() >= 95                   # the rest filled in
    for key in ("expression", "gamma", "angles", "translation"):
        assert s.coefficients[key].shape[0] == 100 and np.isfinite(s.coefficients[key]).all()
    assert "ETA" in done.stderr                                   # progress lines per stage
    # the last two stages (they were silent for minutes on long clips): a line with an ETA
    # while they run and a done line with the frame count
    for stage in ("fit report", "shards + overlay preview"):
        lines = [ln for ln in done.stderr.splitlines() if ln.startswith(f"{stage}: ")]
        assert any("ETA" in ln for ln in lines), (stage, lines)
        assert lines[-1].startswith(f"{stage}: 100/100 (100%)") and lines[-1].endswith("(done)")


def test_mean_landmark_error_within_5_percent_of_inter_ocular_distance(subject):
    out, _ = subject
    s = layout.load_subject(str(out))
    # Projected independently with NumPy/SciPy from the stored arrays: AudioDVP's pose
    # R (v - t) with R = Rz Ry Rx (SciPy's extrinsic "xyz"), then the pinhole of crops.npz.
    model = load_npz(assets.ensure_offline_model("audiodvp"))
    c = s.coefficients
    ids = model.landmark_ids
    verts = (model.mean_shape[ids][None] + np.einsum("lck,k->lc", model.id_basis[ids],
                                                     c["identity"])[None]
             + np.einsum("lck,tk->tlc", model.exp_basis[ids], c["expression"]))
    rot = Rotation.from_euler("xyz", c["angles"]).as_matrix()                 # [T, 3, 3]
    posed = np.einsum("tij,tlj->tli", rot, verts - c["translation"][:, None])
    fx, fy, cx, cy, distance = s.crops["camera"]
    depth = distance - posed[..., 2]
    predicted = np.stack([fx * posed[..., 0] / depth + cx, fy * -posed[..., 1] / depth + cy], -1)
    tracked = s.landmarks["landmarks"]
    err = np.linalg.norm(predicted - tracked, axis=-1).mean(-1)
    iod = np.linalg.norm(tracked[:, 36] - tracked[:, 45], axis=-1)
    percent = 100 * float(np.mean(err / iod))
    assert percent <= 5.0
    with open(os.path.join(out, layout.REPORT)) as f:
        report = json.load(f)
    assert report["fit"]["landmark_error_iod_percent"]["mean"] == pytest.approx(percent, rel=1e-3)
    assert len(report["per_frame"]["photometric_rmse_levels"]) == 100
    assert report["fit"]["photometric_rmse_levels"]["mean"] < 25.0


def test_subject_files_and_previews(subject):
    out, _ = subject
    with open(os.path.join(out, layout.SUBJECT_JSON)) as f:
        meta = json.load(f)
    assert meta["format"] == layout.FORMAT and meta["format_version"] == layout.FORMAT_VERSION
    assert meta["has_audio"] is False and meta["frame_size"] == [144, 176]
    assert "jax" in meta["versions"] and len(meta["fingerprint"]) == 64
    overlay = os.path.join(out, layout.PREVIEWS, "overlay.mp4")
    assert count_frames(overlay) == 100
    assert os.path.getsize(os.path.join(out, layout.PREVIEWS, "errors.png")) > 10_000
    assert not glob.glob(os.path.join(os.path.dirname(out), ".carphone.*"))
    # Built under mkdtemp/mkstemp names (0700/0600), published with ordinary permissions.
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(out).st_mode & 0o777 == 0o777 & ~mask
    for name in (layout.SUBJECT_JSON, layout.COEFFICIENTS, layout.CROPS, layout.LANDMARKS):
        assert os.stat(os.path.join(out, name)).st_mode & 0o777 == 0o666 & ~mask, name


def test_tfds_shards_read_back_equal_to_the_subject(subject, carphone_clip):
    out, _ = subject
    s = layout.load_subject(str(out))
    r = int(s.meta["renderer_resolution"])
    train = open_target_source(s.tfds_dir, "train")
    val = open_target_source(s.tfds_dir, "validation")
    assert (len(train), len(val)) == (90, 10)                     # the last 10% held out
    frames = list(read_frames(carphone_clip, fps=25.0))
    # The exact (float64) maps, rebuilt from the stored boxes; the shards keep float32 copies.
    maps = crop_matrices(s.crops["centers"], s.crops["sizes"], r)
    for source, offset in ((train, 0), (val, 90)):
        for j in range(len(source)):
            ex = decode_example(source[j])
            i = int(ex["frame_index"])
            assert i == offset + j                                 # time order, split by time
            for key in ("expression", "gamma", "angles", "translation"):
                np.testing.assert_array_equal(ex[key], s.coefficients[key][i].astype(np.float32))
            np.testing.assert_array_equal(ex["crop_transform"], s.crops["matrices"][i])
            if i % 9 == 0:
                expected = crop_frame(frames[i], maps[i], r)
                np.testing.assert_array_equal(ex["face_crop"], expected)
            assert ex["face_mask"].shape == (r, r) and 0.1 < ex["face_mask"].mean() / 255 < 0.9
            assert ex["mouth_mask"].max() == 255
            assert ex["audio"].shape == (int(s.meta["audio_samples"]),) and not ex["audio"].any()


def test_rerun_is_idempotent(subject, carphone_clip):
    out, _ = subject
    before = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(out, "**"), recursive=True)}
    done = run_prepare(carphone_clip, out, "--config.audio_required=False")
    assert done.returncode == 0 and "up to date" in done.stderr
    after = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(out, "**"), recursive=True)}
    assert before == after


def _one_line_error(done, name):
    assert done.returncode != 0
    lines = [line for line in done.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and name in lines[0], done.stderr[-2000:]


def test_bad_inputs_fail_with_one_line_and_leave_nothing(tmp_path, carphone_clip):
    ffmpeg = ffmpeg_exe()
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    faceless = tmp_path / "faceless.mp4"
    subprocess.run([ffmpeg, "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=160x120:rate=25:duration=2", "-f", "lavfi", "-i",
                    "sine=frequency=300:duration=2:sample_rate=16000", "-shortest",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(faceless)],
                   check=True)
    cases = [(tmp_path / "missing.mp4", "missing.mp4"), (text, "notes.mp4"),
             (faceless, "faceless.mp4"),
             (carphone_clip, "carphone_pristine.mp4")]         # no audio track, audio required
    for video, name in cases:
        out = tmp_path / f"out_{name}"
        done = run_prepare(video, out)
        _one_line_error(done, name)
        assert not out.exists()
        assert not glob.glob(str(tmp_path / f".out_{name}*"))
    assert "no audio track" in done.stderr


def test_interrupted_run_leaves_no_subject(tmp_path, carphone_clip, monkeypatch):
    from metatalk_jax.config_loading import load_config
    from metatalk_jax.face3d.procedural import procedural_model
    from metatalk_jax.subject import prepare_subject as stages

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("simulated kill during the fit")

    monkeypatch.setattr(stages, "fit_video", killed)
    config = load_config(TINY, ["audio_required=False"])
    out = tmp_path / "subject"
    with pytest.raises(KeyboardInterrupt):
        stages.prepare_subject(carphone_clip, str(out), procedural_model(20, 20, "audiodvp"),
                               "0" * 64, config)
    assert not out.exists()
    assert os.listdir(tmp_path) == []
