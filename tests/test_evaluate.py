"""`python -m metatalk_jax.evaluate` end to end on small synthetic mp4s with random-weight
SyncNet (and, in the slow test, Inception) checkpoints: the report's numbers against values
computed independently (scikit-image SSIM of the decoded frames, FID of a clip against itself),
the Table 2 means against the clips' rows, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from metatalk_jax.convert.converted import save_converted
from metatalk_jax.convert.syncnet_keys import syncnet_config
from metatalk_jax.media.video_read import read_frames
from metatalk_jax.media.video_write import Mp4Writer
from metatalk_jax.models import syncnet as sn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FPS, RATE = 25, 16000


def _write_clip(path, frames: int, seed: int, size=(64, 48)):
    """A moving-gradient clip with noise bursts as audio, `frames` frames at 25 fps."""
    rng = np.random.default_rng(seed)
    w, h = size
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    audio = (0.3 * rng.standard_normal(frames * RATE // FPS)).astype(np.float32)
    audio *= np.repeat(rng.uniform(0.1, 1.0, frames), RATE // FPS).astype(np.float32)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with Mp4Writer(str(path), FPS, audio=audio) as writer:
        for t in range(frames):
            phase = 0.1 * t + seed
            image = 0.5 + 0.4 * np.sin(6 * x + phase) * np.cos(4 * y - phase) * np.ones((1, 1, 3))
            image[..., 1] *= 0.8
            writer.write((255 * image).astype(np.uint8))
    return str(path)


def _run(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "metatalk_jax.evaluate", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    clips = {name: _write_clip(root / "ours" / f"{name}.mp4", 30, seed)
             for seed, name in enumerate(("A", "B"))}
    # ground truth: clip A's own video (SSIM 1) and, for B, another clip
    _write_clip(root / "truth" / "A.mp4", 30, 0)
    _write_clip(root / "truth" / "B.mp4", 30, 7)
    source = root / "random_init.txt"
    source.write_text("random-weight SyncNet for tests\n")
    syncnet = save_converted(str(root / "syncnet"), "syncnet", sn.init_variables(3),
                             syncnet_config(), str(source))
    return root, clips, syncnet


def test_report_with_syncnet_and_ssim(workspace):
    root, clips, syncnet = workspace
    out = root / "report"
    done = _run("--videos", str(root / "ours" / "*.mp4"), "--syncnet", syncnet,
                "--reference", root / "truth", "--out", out)
    assert done.returncode == 0, done.stderr[-2000:]
    # progress with an ETA while it runs, one line per video
    assert "evaluate: 1/2 (50%)" in done.stderr and "ETA" in done.stderr
    report = json.loads((out / "report.json").read_text())
    rows = {row["clip"]: row for row in report["clips"]}
    assert set(rows) == {"A", "B"} and all(r["method"] == "ours" for r in rows.values())
    # SSIM: scikit-image on the decoded frames under the stated protocol
    for name in ("A", "B"):
        ours = np.stack(list(read_frames(clips[name]))).astype(np.float64) / 255.0
        truth = np.stack(list(read_frames(str(root / "truth" / f"{name}.mp4")))) / 255.0
        expected = np.mean([structural_similarity(a, b, data_range=1.0, channel_axis=-1,
                                                  gaussian_weights=True, sigma=1.5,
                                                  use_sample_covariance=False)
                            for a, b in zip(ours, truth)])
        assert rows[name]["ssim"] == pytest.approx(expected, abs=1e-4)
    assert rows["A"]["ssim"] == pytest.approx(1.0, abs=1e-6) and rows["B"]["ssim"] < 0.9
    # SyncNet scores exist and are consistent: LSE-C = median - min >= 0, offset in +-15
    for row in rows.values():
        assert row["lse_d"] > 0 and row["lse_c"] >= 0 and abs(row["offset"]) <= 15
        assert row["fid"] is None
    # Table 2 layout: the method's means are the means of its clips' rows
    means = report["methods"]["ours"]
    assert means["clips"] == 2 and means["fid"] is None
    for metric in ("lse_d", "lse_c", "ssim"):
        assert means[metric] == pytest.approx(np.mean([r[metric] for r in rows.values()]))
    table = (out / "report.md").read_text()
    assert "| ours | 2 |" in table and "LSE-D" in table and "FID not computed" in table


def test_too_short_video_is_one_line_exit_2(workspace, tmp_path):
    root, _, syncnet = workspace
    short = _write_clip(tmp_path / "m" / "short.mp4", 12, 1)
    done = _run("--videos", short, "--syncnet", syncnet, "--out", tmp_path / "r")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "short.mp4" in errors[0] and "too short" in errors[0]
    assert not (tmp_path / "r" / "report.json").exists()


def test_missing_reference_and_missing_video_are_one_line_exit_2(workspace, tmp_path):
    root, clips, syncnet = workspace
    empty = tmp_path / "no_truth"
    empty.mkdir()
    done = _run("--videos", clips["A"], "--reference", empty, "--out", tmp_path / "r")
    assert done.returncode == 2 and "no reference video for clip 'A'" in done.stderr
    done = _run("--videos", tmp_path / "nope.mp4", "--syncnet", syncnet, "--out", tmp_path / "r")
    assert done.returncode == 2 and "nope.mp4" in done.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow   # InceptionV3 at 299 px on 2 CPU cores: ~1-2 min with compilation
def test_fid_of_a_clip_against_itself_is_zero(workspace, tmp_path):
    import torch
    from tests.support.torch_inception_reference import TorchFIDInception, randomize
    root, clips, _ = workspace
    # pytorch-fid's architecture with random weights and BatchNorm statistics, saved by torch:
    # the CLI reads the .pth itself (a plain Flax init gives near-constant pool features).
    inception = tmp_path / "pt_inception_random.pth"
    torch.save(randomize(TorchFIDInception(), seed=0).state_dict(), inception)
    done = _run("--videos", str(root / "ours" / "*.mp4"), "--inception", inception,
                "--reference", root / "truth", "--out", tmp_path / "r")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["clip"]: r for r in json.loads((tmp_path / "r" / "report.json").read_text())["clips"]}
    print("FID against itself", rows["A"]["fid"], "against another clip", rows["B"]["fid"])
    # random weights give small features (FID ~1e-3 between different clips), but a clip against
    # itself must be zero to rounding
    assert abs(rows["A"]["fid"]) < 1e-9 and rows["B"]["fid"] > 1e-4
    assert rows["A"]["lse_d"] is None


def test_means_name_the_clips_they_leave_out():
    """A clip whose score is NaN is left out of its method's mean and named in the report,
    not dropped silently; a metric nobody computed (None) leaves nobody out."""
    from metatalk_jax.eval.report import ClipScores, exclusion_notes, markdown_report, method_means
    clips = [ClipScores("a.mp4", "m", "A", lse_d=7.0), ClipScores("b.mp4", "m", "B",
                                                                  lse_d=float("nan")),
             ClipScores("c.mp4", "m", "C", lse_d=9.0)]
    means = method_means(clips)["m"]
    assert means["lse_d"] == 8.0 and means["clips"] == 3 and means["ssim"] is None
    assert means["excluded_clips"] == {"lse_d": ["B"]}
    notes = exclusion_notes(clips)
    assert notes == ["m: LSE-D (lower better) is the mean of 2 of 3 clips; not finite for B."]
    assert "| m | B | 0 | - | n/a |" in markdown_report(clips, notes)
