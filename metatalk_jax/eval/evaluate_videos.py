"""Scoring talking-face videos with the paper's metrics and the pixel measures, and writing the
report: the library behind `python -m metatalk_jax.evaluate` (its docstring says what each
metric is and how clips, methods and references are found).

    clips = evaluate_videos(videos, out_dir="report", syncnet=..., inception=...,
                            reference_dir=..., lip_sync_frames=250)
"""

from __future__ import annotations

import math
import os

from metatalk_jax.errors import InputError

FID_METHODS = ("auto", "sqrtm", "eigh", "svd")
REFERENCE_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


PREVIEW_SUFFIX = ".preview"     # infer --preview writes X.preview.mp4 beside X.mp4


SIDECAR_SUFFIX = ".drive.json"  # ... and X.drive.json, its per-frame drive record
CHUNK_FRAMES = 64               # frames per SSIM / Inception call between progress lines


def is_clip(path: str) -> bool:
    """False for the side files `infer` writes beside a video: its preview (X.preview.mp4) and
    its drive sidecar (X.drive.json), so `--videos 'out/*/*'` takes only the videos."""
    name = os.path.basename(path)
    if name.endswith(SIDECAR_SUFFIX):
        return False
    return not os.path.splitext(name)[0].endswith(PREVIEW_SUFFIX)


def comparison_fps(video: str, fps: float | None) -> float:
    """The rate (Hz) a clip's generated and reference frames are compared at: `fps` when given,
    else the generated video's own rate (25 when the file does not say)."""
    if fps is not None:
        if not fps > 0:
            raise InputError(f"--fps must be positive, got {fps}")
        return float(fps)
    from metatalk_jax.media.video_read import probe_video
    return float(probe_video(video).fps or 25.0)


def find_reference(reference_dir: str, clip: str) -> str:
    """The ground-truth video of `clip` in `reference_dir` (any video extension)."""
    for ext in REFERENCE_EXTENSIONS:
        path = os.path.join(reference_dir, clip + ext)
        if os.path.isfile(path):
            return path
    raise InputError(f"{reference_dir}: no reference video for clip {clip!r} "
                     f"(looked for {clip}{{{','.join(REFERENCE_EXTENSIONS)}}})")


def fid_method_for(method: str, num_a: int, num_b: int) -> str:
    """'auto': the SVD form (exact, milliseconds) while both sets are smaller than the 2048
    feature dimensions, else pytorch-fid's sqrtm (its covariance then has full rank)."""
    if method != "auto":
        return method
    return "svd" if max(num_a, num_b) < 2048 else "sqrtm"


def _read_frames(path: str, fps: float):
    """[T,H,W,3] uint8 frames of `path` at `fps` (frame i = the picture shown at time i / fps),
    so two videos read at one rate are compared at the same timestamps whatever their own
    rates (23.976 vs 25 fps: by index they drift apart by one frame every second)."""
    import numpy as np

    from metatalk_jax.media.video_read import read_frames
    frames = list(read_frames(path, fps=fps))
    if not frames:
        raise InputError(f"{path}: no video frames")
    return np.stack(frames)


def _chunks(n: int, size: int):
    """(start, stop) ranges covering n frames, `size` long except the last, which is merged
    into its predecessor when shorter, so a fixed-batch jit (SSIM, Inception) whose batch is at
    most `size` sees no chunk smaller than its batch and compiles once."""
    starts = list(range(0, n, size))
    if len(starts) > 1 and n - starts[-1] < size:
        starts.pop()
    bounds = starts + [n]
    return list(zip(bounds[:-1], bounds[1:]))


def compare_with_reference(clip, fps: float, inception_vars, *, batch_size: int, fid_method: str,
                           notes: list) -> None:
    """Sets clip.ssim (and clip.fid with Inception variables): generated and reference frames
    both read at `fps` and compared at the same timestamps, chunk by chunk with a progress line.
    """
    import numpy as np

    from metatalk_jax.eval.ssim import ssim_frames
    from metatalk_jax.media.video_read import probe_video
    from metatalk_jax.progress import Progress
    generated, truth = _read_frames(clip.video, fps), _read_frames(clip.reference, fps)
    if generated.shape[1:] != truth.shape[1:]:
        raise InputError(f"{clip.video}: frames are {generated.shape[2]}x{generated.shape[1]}, "
                         f"its reference {clip.reference} {truth.shape[2]}x{truth.shape[1]}: "
                         "SSIM compares aligned frames of one size")
    rates = {name: probe_video(path).fps for name, path in
             (("generated", clip.video), ("reference", clip.reference))}
    if any(rate and abs(rate - fps) > 1e-3 for rate in rates.values()):
        notes.append(f"{clip.method}/{clip.clip}: generated {rates['generated'] or '?'} fps, "
                     f"reference {rates['reference'] or '?'} fps; both resampled to {fps:g} fps "
                     "and compared at the same timestamps.")
    n = min(len(generated), len(truth))
    if n != len(generated) or n != len(truth):
        notes.append(f"{clip.method}/{clip.clip}: {len(generated)} generated vs {len(truth)} "
                     f"reference frames at {fps:g} fps; the first {n} compared.")
    label = f"{clip.method}/{clip.clip}"
    bar = Progress(f"{label} SSIM", n)
    values = []
    for a, b in _chunks(n, CHUNK_FRAMES):
        values.append(ssim_frames(generated[a:b], truth[a:b]))
        bar.update(b - a)
    bar.close()
    clip.ssim = float(np.mean(np.concatenate(values)))
    clip.frames = clip.frames or n
    if inception_vars is None:
        return
    from metatalk_jax.eval.fid import fid_from_features
    from metatalk_jax.models.inception import inception_features
    bar = Progress(f"{label} FID features", 2 * n)
    features = {}
    for name, frames in (("generated", generated), ("reference", truth)):
        parts = []
        for a, b in _chunks(n, max(CHUNK_FRAMES, batch_size)):
            parts.append(inception_features(frames[a:b], inception_vars, batch_size=batch_size))
            bar.update(b - a)
        features[name] = np.concatenate(parts)
    bar.close()
    clip.fid = fid_from_features(features["generated"], features["reference"],
                                 method=fid_method_for(fid_method, n, n))


def _counted_lip_embedder(embedders, bar):
    """SyncNet's (lip_embed, audio_embed) with the lip branch counting its windows on `bar`."""
    lip_embed, audio_embed = embedders

    def counted(windows):
        out = lip_embed(windows)
        bar.update(len(windows))
        return out
    return counted, audio_embed


def evaluate_videos(videos: list[str], *, out_dir: str, syncnet: str | None,
                    inception: str | None, reference_dir: str | None, real: bool = False,
                    fid_method: str = "auto", batch_size: int = 16, lip_sync_frames: int = 250,
                    fps: float | None = None, log=print) -> list:
    """Scores every video and writes the report; returns the ClipScores. fps: the rate FID and
    SSIM compare generated and reference frames at (None: each generated video's own rate)."""
    from metatalk_jax.eval import lse, report
    from metatalk_jax.eval.pixel_lip_sync import drive_sidecar_path, pixel_lip_sync
    from metatalk_jax.media.ffmpeg_tools import check_input_file
    from metatalk_jax.media.video_read import probe_video
    from metatalk_jax.progress import Progress

    videos = [v for v in videos if is_clip(v)]
    if not videos:
        raise InputError("no videos to evaluate (--videos)")
    driven = {v for v in videos if os.path.isfile(drive_sidecar_path(v))}
    if not (syncnet or reference_dir or driven):
        raise InputError("nothing to compute: give --syncnet, and/or --reference (SSIM; FID "
                         "also needs --inception), or videos written by infer (their "
                         ".drive.json sidecar gives the pixel lip sync)")
    for video in videos:
        check_input_file(video)
    clips = [report.ClipScores(video=os.path.abspath(v), method=m, clip=c)
             for v, (m, c) in ((v, report.clip_identity(v)) for v in videos)]
    if reference_dir:                       # all references exist before any work starts
        for clip in clips:
            clip.reference = find_reference(reference_dir, clip.clip)
    embedders = inception_vars = None
    if syncnet:
        from metatalk_jax.convert.syncnet_keys import load_syncnet
        _, variables = load_syncnet(syncnet)
        embedders = lse.syncnet_embedders(variables)     # compiled once for every clip
    if inception and reference_dir:
        from metatalk_jax.convert.inception_keys import load_inception
        _, inception_vars = load_inception(inception)
    notes = []
    if not syncnet:
        notes.append("LSE-D / LSE-C not computed: no --syncnet checkpoint.")
    if not reference_dir:
        notes.append("FID / SSIM not computed: no --reference folder of ground-truth videos.")
    elif not inception:
        notes.append("FID not computed: no --inception checkpoint.")
    if len(driven) < len(videos):
        notes.append(f"pixel lip sync (r_drive, r_background) computed for {len(driven)} of "
                     f"{len(videos)} videos: the others have no .drive.json sidecar.")

    progress = Progress("evaluate", len(clips), interval_s=0.0)
    for clip in clips:
        if os.path.isfile(drive_sidecar_path(clip.video)):
            pixels = pixel_lip_sync(clip.video, max_frames=lip_sync_frames or None)
            clip.r_drive, clip.r_background = pixels.r_drive, pixels.r_background
            clip.lip_detection_rate = pixels.detection_rate
            clip.mouth_sharpness = pixels.mouth_sharpness
            # NaN (no pauses in the drive) is "not computed" here, not a failed clip
            clip.silence_ratio = (pixels.silence_ratio if math.isfinite(pixels.silence_ratio)
                                  else None)
            clip.opening_p95_ratio = (pixels.opening_p95_ratio
                                      if math.isfinite(pixels.opening_p95_ratio) else None)
            clip.bilabial_closure = pixels.bilabial_closure
            clip.frames = clip.frames or pixels.frames
        if embedders is not None:
            duration = probe_video(clip.video).duration_s
            bar = Progress(f"{clip.method}/{clip.clip} LSE (SyncNet windows)",
                           int(duration * lse.SYNCNET_FPS) - 4 if duration else None)
            result = lse.lse_for_video(clip.video, real=real,
                                       embedders=_counted_lip_embedder(embedders, bar))
            bar.close()
            clip.lse_d, clip.lse_c, clip.offset = result.lse_d, result.lse_c, result.offset
            clip.frames = result.num_windows
        if clip.reference:
            compare_with_reference(clip, comparison_fps(clip.video, fps), inception_vars,
                                   batch_size=batch_size, fid_method=fid_method, notes=notes)
        progress.update()
        log(f"{clip.method}/{clip.clip}: " + ", ".join(
            f"{m} {getattr(clip, m):.4f}" for m in report.METRICS if getattr(clip, m) is not None))
    progress.close()
    settings = {"syncnet": syncnet, "inception": inception, "reference": reference_dir,
                "real_video_crops": real, "fid_method": fid_method,
                "compare_fps": fps if fps is not None else "each generated video's own rate"}
    json_path, md_path = report.write_report(out_dir, clips, settings, notes)
    log(f"wrote {json_path} and {md_path}")
    return clips
