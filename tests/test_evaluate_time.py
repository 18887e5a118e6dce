"""`evaluate` compares generated and reference videos by time, not by frame index, never takes
infer's side files for clips, and reports progress within a clip.

The two videos show one moving scene (a textured bar sliding 24 px/s) sampled at 25 fps
(generated) and 24000/1001 fps (reference): by index they drift apart by 0.07 px more each
frame; by time they match to within half a reference frame. The expected SSIM is computed here
with scikit-image on the natively decoded frames, pairing each generated frame k (time k/25)
with the reference frame nearest that time.
"""

from __future__ import annotations

import json

import numpy as np
from skimage.metrics import structural_similarity

from metatalk_jax import evaluate
from metatalk_jax.eval import evaluate_videos
from metatalk_jax.media.video_read import read_frames
from metatalk_jax.media.video_write import Mp4Writer

NTSC_FILM = 24000 / 1001
SECONDS = 4.0


def scene(t: float, size=(64, 96)) -> np.ndarray:
    """The picture at time t seconds: [H, W, 3] uint8, a striped bar at x = 8 + 24 t px."""
    h, w = size
    x = np.arange(w)[None, :]
    y = np.arange(h)[:, None]
    image = 60 + 40 * np.sin(x / 7.0) * np.cos(y / 5.0)
    centre = 8 + 24 * t
    bar = np.abs(x - centre) < 6
    image = np.where(bar, 200 + 40 * np.sin(y / 2.0 + x), image)
    return np.repeat(np.clip(image, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def write_scene(path, fps: float) -> str:
    with Mp4Writer(str(path), fps, crf=4, preset="veryfast") as writer:
        for k in range(int(round(SECONDS * fps))):
            writer.write(scene(k / fps))
    return str(path)


def _ssim(a, b) -> float:
    return float(np.mean([structural_similarity(x, y, data_range=1.0, channel_axis=-1,
                                                gaussian_weights=True, sigma=1.5,
                                                use_sample_covariance=False)
                          for x, y in zip(a / 255.0, b / 255.0)]))


def test_frames_are_compared_at_the_same_times(tmp_path, capsys):
    ours, truth = tmp_path / "ours", tmp_path / "truth"
    generated = write_scene(ours.mkdir() or ours / "A.mp4", 25.0)
    reference = write_scene(truth.mkdir() or truth / "A.mp4", NTSC_FILM)
    # infer's side files, matched by a glob of everything in the folder: A's preview, and
    # the drive sidecar of a B.mp4 that was deleted (never read: not a clip, no clip of its own)
    write_scene(ours / "A.preview.mp4", 25.0)
    (ours / "B.drive.json").write_text("{not json, not a video")
    out = tmp_path / "report"
    code = evaluate.main(["--videos", str(ours / "*"), "--reference", str(truth),
                          "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert [row["clip"] for row in report["clips"]] == ["A"]          # no preview, no sidecar
    measured = report["clips"][0]["ssim"]

    gen = np.stack(list(read_frames(generated))).astype(np.float64)
    ref = np.stack(list(read_frames(reference))).astype(np.float64)
    n = min(len(gen), int(len(ref) * 25.0 / NTSC_FILM))
    nearest = np.minimum(np.round(np.arange(n) / 25.0 * NTSC_FILM).astype(int), len(ref) - 1)
    by_time = _ssim(gen[:n], ref[nearest])
    by_index = _ssim(gen[:n], ref[:n])
    print(f"\nSSIM by time {by_time:.4f} (evaluate: {measured:.4f}), by index {by_index:.4f}")
    assert abs(measured - by_time) < 0.01
    assert by_time > 0.95 and by_index < by_time - 0.05
    assert any("resampled to 25 fps" in note for note in report["notes"])
    assert report["settings"]["compare_fps"] == "each generated video's own rate"
    assert "ours/A SSIM:" in err and "ETA" in err                    # progress within the clip


def test_a_stated_rate_resamples_both(tmp_path, capsys):
    ours, truth = tmp_path / "ours", tmp_path / "truth"
    ours.mkdir(), truth.mkdir()
    write_scene(ours / "A.mp4", 25.0)
    write_scene(truth / "A.mp4", NTSC_FILM)
    out = tmp_path / "report"
    code = evaluate.main(["--videos", str(ours / "A.mp4"), "--reference", str(truth),
                          "--out", str(out), "--fps", "10"])
    assert code == 0, capsys.readouterr().err[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["clips"][0]["frames"] == 40 and report["settings"]["compare_fps"] == 10.0
    assert report["clips"][0]["ssim"] > 0.95


def test_side_files_are_not_clips():
    assert evaluate_videos.is_clip("out/ours/speech.mp4")
    assert not evaluate_videos.is_clip("out/ours/speech.preview.mp4")
    assert not evaluate_videos.is_clip("out/ours/speech.drive.json")
