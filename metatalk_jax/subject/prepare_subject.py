"""Target video -> subject directory (see layout.py): the stages of
`python -m metatalk_jax.prepare`.

  1. probe + audio     check the video, extract 16 kHz mono audio (or fail early if required)
  2. track             stream frames at the subject fps, detect + 68 landmarks, hold the target
                       person (identity checks, shot cuts), fill short gaps, leave out the frames
                       without them (then the kept frames get their own frames.mp4 + audio)
  3. fit crops         first crop boxes from the landmarks; crops at the fit resolution are
                       spooled to a work file (read back by chunk, never all in memory)
  4. fit               3DMM reconstruction (recon/fit.py) and its per-frame report
  5. crop module       final boxes from the fitted 3DMM's projected face, renderer resolution
  6. shards            per frame: face crop, rendered face/mouth masks, coefficients, crop
                       transform, audio window -> TFDS ArrayRecord; the overlay preview on the way

The whole directory is built under a hidden temporary name beside the destination and renamed
into place only when complete, so an interrupted or failed run leaves no subject that looks
finished; a run whose inputs (video bytes, model, config, format version) match the existing
subject's fingerprint does nothing, and a subject of other inputs is replaced only with
overwrite=True (`--overwrite`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sys
import time

import numpy as np

from metatalk_jax.atomic_files import partial_dir_prefix, publishing_dir, write_json, write_npz
from metatalk_jax.checksums import file_sha256
from metatalk_jax.errors import InputError
from metatalk_jax.media.audio_files import check_speech_audio, load_audio, write_wav
from metatalk_jax.media.ffmpeg_tools import MediaError
from metatalk_jax.media.video_read import probe_video, read_frames
from metatalk_jax.media.video_write import write_png
from metatalk_jax.progress import Progress
from metatalk_jax.recon.fit import VideoTarget, fit_video
from metatalk_jax.recon.report import fit_report
from metatalk_jax.subject import layout
from metatalk_jax.subject.frame_examples import (TargetExamples, final_crop_boxes)
from metatalk_jax.subject.previews import error_plot
from metatalk_jax.subject.identity_sheet import identity_sheet, shot_lines
from metatalk_jax.subject.tracked_person import (TargetTracking, check_first_seconds, kept_audio,
                                                 save_tracks, tracking_message, write_kept_frames)
from metatalk_jax.tracking.track import TrackingError
from metatalk_jax.tracking.backends import make_backend
from metatalk_jax.tracking.crop import boxes_from_points, crop_frame, frame_camera
from metatalk_jax.tracking.identity import STATUS_NAMES


def package_versions() -> dict:
    from importlib import metadata
    out = {}
    for name in ("metatalk_jax", "jax", "numpy", "opencv-python-headless", "dlib-bin",
                 "tensorflow-datasets", "grain", "imageio-ffmpeg"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def fingerprint(video_sha: str, model_sha: str, config) -> str:
    text = json.dumps({"video": video_sha, "model": model_sha, "config": config.to_dict(),
                       "format_version": layout.FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _say(message: str) -> None:
    print(f"[prepare] {message}", file=sys.stderr, flush=True)


def _remove_stale_partials(out_dir: str) -> None:
    """Removes the temporary folders a killed run left beside out_dir (publishing_dir's)."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    for stale in glob.glob(os.path.join(parent, glob.escape(partial_dir_prefix(out_dir)) + "*")):
        shutil.rmtree(stale, ignore_errors=True)


def _first_difference(old: dict, new: dict, prefix: str = "") -> str | None:
    """The first config key (dotted) whose value differs between two config dicts."""
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key} ({a!r} there, {b!r} now)"
    return None


def _without_shots(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in ("keep_shots", "drop_shots")}


def existing_subject(out_dir: str, video_sha: str, model_sha: str, config, print_key: str,
                     *, overwrite: bool) -> dict | None:
    """subject.json of `out_dir` when it was prepared from these inputs (nothing to do), None
    when out_dir is free to be written (absent, empty, or replaceable with `overwrite`).

    Raises ValueError (one line naming out_dir and --overwrite) when out_dir holds a subject of
    another video, model, config or format version, and -- even with overwrite -- when it holds
    anything that is not a subject: nothing a user made is replaced without being asked.
    """
    if not os.path.exists(out_dir):
        return None
    meta_path = os.path.join(out_dir, layout.SUBJECT_JSON)
    if not os.path.isdir(out_dir) or (not os.path.isfile(meta_path) and os.listdir(out_dir)):
        raise InputError(f"{out_dir}: exists and is not a subject directory; choose another "
                         "--out (prepare only replaces a subject it wrote)")
    if not os.path.isfile(meta_path):
        return None
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        meta = {}
    if meta.get("fingerprint") == print_key:
        return meta
    source = meta.get("source", {})
    if source.get("sha256") != video_sha:
        name = source.get("original_path") or source.get("path") or "?"
        why = f"from another video ({os.path.basename(str(name))})"
    elif meta.get("model", {}).get("sha256") != model_sha:
        why = f"with another model ({meta.get('model', {}).get('name') or '?'})"
    else:
        old, new = meta.get("config", {}), config.to_dict()
        diff = _first_difference(_without_shots(old), _without_shots(new))
        if not diff and _first_difference(old, new):
            # Correcting who is in the subject is what --keep/--drop-shots are for.
            _say(f"{out_dir}: prepared with other shots kept or dropped; it will be replaced "
                 "once the new subject is complete")
            return None
        why = (f"with another config: {diff}" if diff else
               f"by another format version (v{meta.get('format_version')})")
    if not overwrite:
        raise InputError(f"{out_dir}: holds a subject prepared {why}; pass --overwrite to "
                         "replace it, or choose another --out")
    _say(f"--overwrite: {out_dir} (prepared {why}) will be replaced once the new subject is "
         "complete")
    return None


def prepare_subject(video: str, out_dir: str, model, model_sha: str, config, *,
                    model_name: str = "", overwrite: bool = False) -> dict:
    """Prepares `video` into `out_dir`; returns subject.json's contents.

    model: a MorphableModel (jax or numpy arrays); model_sha identifies it in the fingerprint.
    overwrite: replace a subject of other inputs at out_dir (else that is a ValueError).
    Raises MediaError / TrackingError / ValueError with one-line messages naming the file.
    """
    started = time.time()
    info = probe_video(video)
    video_sha = file_sha256(video)
    print_key = fingerprint(video_sha, model_sha, config)
    meta = existing_subject(out_dir, video_sha, model_sha, config, print_key,
                            overwrite=overwrite)
    if meta is not None:
        _say(f"{out_dir} is up to date (same video, model and config); nothing to do")
        return meta

    audio = None
    if info.has_audio:
        audio = load_audio(video, config.sample_rate)
        check_speech_audio(audio, config.sample_rate, video)
    elif config.audio_required:
        raise MediaError(video, "has no audio track (the subject's audio trains the "
                                "audio-to-expression net; --config.audio_required=False "
                                "prepares without it)")

    _remove_stale_partials(out_dir)
    with publishing_dir(out_dir, replace=True) as work:
        meta = _build(video, info, audio, work, model, config, video_sha=video_sha,
                      out_dir=out_dir)
        # A subject with excluded frames is made of its own frames video (tracked_person.py).
        frames_path = (os.path.join(os.path.abspath(out_dir), layout.FRAMES_VIDEO)
                       if meta.get("frames_video") else os.path.abspath(video))
        meta.update({"fingerprint": print_key, "source": {
            "path": frames_path, "original_path": os.path.abspath(video),
            "sha256": video_sha, "width": info.width,
            "height": info.height, "fps": info.fps, "codec": info.codec,
            "duration_s": info.duration_s},
            "model": {"name": model_name, "sha256": model_sha, "convention": model.convention,
                      "dims": model.dims, "vertices": model.num_vertices},
            "seconds": round(time.time() - started, 2)})
        write_json(os.path.join(work, layout.SUBJECT_JSON), meta)
    shutil.rmtree(failed_tracking_dir(out_dir), ignore_errors=True)
    _say(f"wrote {out_dir} in {time.time() - started:.1f} s")
    return meta


def failed_tracking_dir(out_dir: str) -> str:
    """Where a run that kept too little of the target leaves its face tracks and contact sheet
    (beside --out, never inside: nothing there looks like a subject)."""
    return os.path.abspath(out_dir).rstrip(os.sep) + ".tracking"


def _save_identity(tracking: TargetTracking, tracks_dir: str, sheet_path: str, title: str):
    save_tracks(tracking.table, tracks_dir, tracking.key)
    os.makedirs(os.path.dirname(sheet_path), exist_ok=True)
    write_png(sheet_path, identity_sheet(tracking.table, tracking.decision, title=title))


def _track_stage(video, info, audio, work, config, *, video_sha, out_dir):
    """Tracks the target person (subject/tracked_person.py) -> (whole-video track, target dict,
    identity decision, the subject's track, the video of the subject's frames, their audio).
    Without excluded frames the video and audio are the originals; with them, the kept frames'
    own. The face tracks and the contact sheet are written into the subject (or, when too
    little of the target is left, beside it: failed_tracking_dir)."""
    backend = make_backend(config.backend, upsample=config.upsample)
    check_first_seconds(video, backend, config)
    tracking = TargetTracking(video, info, backend, config, video_sha)
    failed = failed_tracking_dir(out_dir)
    title = os.path.basename(video)
    try:
        whole, target = tracking.run(reuse=[os.path.join(out_dir, layout.TRACKING_DIR), failed])
    except TrackingError as err:
        if tracking.decision is None:
            raise
        _save_identity(tracking, failed, os.path.join(failed, layout.IDENTITY_SHEET), title)
        for line in shot_lines(tracking.decision):
            _say("  " + line)
        raise TrackingError(f"{err} (who is in which shot: {failed}/{layout.IDENTITY_SHEET}; "
                            "correct it with --keep-shots / --drop-shots N,M)") from None
    if tracking.reused_from:
        _say(f"tracking: reused the face tracks of {tracking.reused_from} (no frame read)")
    _save_identity(tracking, os.path.join(work, layout.TRACKING_DIR),
                   os.path.join(work, layout.PREVIEWS, layout.IDENTITY_SHEET), title)
    _say("tracking: " + tracking_message(whole.summary(), target))
    for line in shot_lines(tracking.decision):
        _say("  " + line)
    track = whole.kept_only()
    if track.num_frames < whole.num_frames:
        frames_video = os.path.join(work, layout.FRAMES_VIDEO)
        track.frame_size = write_kept_frames(video, track.source_frames, frames_video,
                                             float(config.fps))
        video = frames_video
        if audio is not None:
            audio = kept_audio(audio, track.source_frames, float(config.fps),
                               int(config.sample_rate))
    track.to_npz(os.path.join(work, layout.LANDMARKS))
    return whole, target, tracking.decision, track, video, audio


def _counted(examples, bar: Progress):
    """Passes the examples through, counting them on `bar` (the shards' progress line)."""
    for example in examples:
        yield example
        bar.update()


def _build(video, info, audio, work, model, config, *, video_sha, out_dir) -> dict:
    timings = {}
    fps = float(config.fps)

    # -- track: one person; frames without them are left out ---------------------------------
    t0 = time.time()
    whole, person, identity, track, video, audio = _track_stage(
        video, info, audio, work, config, video_sha=video_sha, out_dir=out_dir)
    if audio is not None:
        write_wav(os.path.join(work, layout.AUDIO), audio, config.sample_rate)
    timings["track_s"] = time.time() - t0
    t = track.num_frames
    frame_size = tuple(track.frame_size)

    # -- crops for fitting -------------------------------------------------------------------
    t0 = time.time()
    fit_boxes = boxes_from_points(track.landmarks, frame_size, margin=config.landmark_margin,
                                  vertical_shift=config.landmark_shift,
                                  size_sigma=config.size_sigma, center_sigma=config.center_sigma)
    s = int(config.fit_resolution)
    spool_path = os.path.join(work, "fit_crops.u8")
    spool = np.memmap(spool_path, np.uint8, "w+", shape=(t, s, s, 3))
    matrices = fit_boxes.matrices(s)
    bar = Progress("crop for fitting", t)
    for i, frame in enumerate(read_frames(video, fps=fps, max_frames=t)):
        spool[i] = crop_frame(frame, matrices[i], s)
        bar.update()
    bar.close()
    spool.flush()
    timings["fit_crops_s"] = time.time() - t0

    # -- fit ---------------------------------------------------------------------------------
    t0 = time.time()
    camera = frame_camera(fit_boxes, s)
    target = VideoTarget(track.landmarks, fit_boxes, spool, camera)
    fit = fit_video(model, target, config.fit,
                    progress_factory=lambda label, total: Progress(label, total))
    timings["fit_s"] = time.time() - t0
    t0 = time.time()
    bar = Progress("fit report", t)
    report = fit_report(model, target, fit, progress=bar)
    bar.close()
    timings["report_s"] = time.time() - t0
    write_npz(os.path.join(work, layout.COEFFICIENTS), **fit._asdict())
    del spool
    os.remove(spool_path)

    # -- crop module: final boxes from the fitted face --------------------------------------
    r = int(config.renderer_resolution)
    boxes = final_crop_boxes(model, fit, camera, frame_size, config)
    write_npz(os.path.join(work, layout.CROPS), centers=boxes.centers, sizes=boxes.sizes,
                     matrices=boxes.matrices(r).astype(np.float32),
                     camera=np.array([camera.focal_x, camera.focal_y, camera.cx, camera.cy,
                                      camera.distance], np.float64),
                     frame_size=np.asarray(frame_size), renderer_resolution=np.asarray(r))

    # -- shards + overlay preview -----------------------------------------------------------
    t0 = time.time()
    os.makedirs(os.path.join(work, layout.PREVIEWS), exist_ok=True)
    examples = TargetExamples(video, model, fit, boxes, camera, track.landmarks, audio, config,
                              preview_path=os.path.join(work, layout.PREVIEWS, "overlay.mp4"))
    from metatalk_jax.data_pipelines.subject_frames import write_target_video_shards
    bar = Progress("shards + overlay preview", t)
    write_target_video_shards(lambda: _counted(examples(), bar),
                              data_dir=os.path.join(work, layout.TFDS_DIR),
                              num_frames=t, crop_size=r, expression_dim=fit.expression.shape[1],
                              audio_samples=examples.audio_samples,
                              validation_fraction=config.validation_fraction)
    bar.close()
    examples.close()
    timings["shards_s"] = time.time() - t0

    tracking = {**whole.summary(), "target": person, "identity": identity.summary()}
    _write_report(work, report, whole, track, tracking, timings,
                  title=f"{os.path.basename(info.path)}: {t} of {whole.num_frames} frames kept")
    fit_summary = report.summary()
    _say(f"fit: landmark error {fit_summary['landmark_error_iod_percent']['mean']:.2f}% of "
         f"inter-ocular distance, photometric RMSE "
         f"{fit_summary['photometric_rmse_levels']['mean']:.1f} levels")
    return {"format": layout.FORMAT, "format_version": layout.FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "num_frames": t, "fps": fps, "frame_size": list(frame_size),
            "renderer_resolution": r, "fit_resolution": s, "has_audio": audio is not None,
            "sample_rate": int(config.sample_rate), "audio_samples": examples.audio_samples,
            "validation_fraction": float(config.validation_fraction),
            "config": config.to_dict(), "versions": package_versions(),
            "timings_s": {k: round(v, 2) for k, v in timings.items()},
            "fit": fit_summary, "tracking": tracking,
            "frames_video": layout.FRAMES_VIDEO if t < whole.num_frames else None}


def _write_report(work, report, whole, track, tracking, timings, *, title: str) -> None:
    """report.json (per-frame errors of the subject's frames; every video frame's status) and
    previews/errors.png (the errors over the video's frames, excluded ranges marked)."""
    x = track.source_frames
    plot = error_plot({"landmark error (% inter-ocular)": report.landmark_error_iod,
                       "photometric RMSE (8-bit levels)": report.photometric_rmse,
                       "interpolated frame": (~track.detected).astype(np.float32)},
                      title=title, x=x, total=whole.num_frames,
                      excluded=whole.excluded_ranges())
    write_png(os.path.join(work, layout.PREVIEWS, "errors.png"), plot)
    summary = {"tracking": tracking, "fit": report.summary(),
               "timings_s": {k: round(v, 2) for k, v in timings.items()},
               "per_frame": {"source_frame": x.tolist(),
                             "landmark_error_px": report.landmark_error_px.round(3).tolist(),
                             "landmark_error_iod_percent":
                                 report.landmark_error_iod.round(3).tolist(),
                             "photometric_rmse_levels": report.photometric_rmse.round(3).tolist(),
                             "detected": track.detected.tolist()},
               "video_frames": {"status": whole.status.tolist(),
                                "codes": {str(k): v for k, v in STATUS_NAMES.items()}}}
    write_json(os.path.join(work, layout.REPORT), summary)
