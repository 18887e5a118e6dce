"""The resumable pseudo-video driver: audio clips x the subject's video -> a pseudo corpus.

For each audio clip (sorted by id, skipping those already in the corpus):
  decode audio -> Wav2Lip mel chunks at the subject's fps -> batches of source frames (ping-pong
  order) -> Wav2Lip -> feathered paste -> the subject's fit-resolution crop -> expression fit
  -> a PseudoClip (expression [T,E], audio windows [T,N], source_frame, frame_index, time_s).
Whole clips are buffered and published every `clips_per_part` clips as one immutable part, so a
killed run loses at most the part in progress and a rerun continues after the last part.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from metatalk_jax.data_pipelines.pseudo_corpus import PseudoClip, PseudoVideoWriter
from metatalk_jax.convert.wav2lip_keys import load_wav2lip
from metatalk_jax.errors import InputError
from metatalk_jax.media.audio_features import frames_for_audio, wav2lip_mel, wav2lip_mel_chunks
from metatalk_jax.media.ffmpeg_tools import MediaError
from metatalk_jax.media.frame_audio_windows import audio_window
from metatalk_jax.media.loudness import at_front_end_level
from metatalk_jax.media.video_read import pingpong_indices
from metatalk_jax.media.video_write import write_png
from metatalk_jax.progress import Progress
from metatalk_jax.pseudo_video.audio_dir import AudioClip, load_clip_audio, scan_audio_dir
from metatalk_jax.pseudo_video.fit_expression import ExpressionFitter
from metatalk_jax.pseudo_video.wav2lip_run import (SourceFrames, Wav2LipRunner, face_input,
                                                   local_matrix, paste_feathered,
                                                   regions_of_interest, wav2lip_face_boxes)
from metatalk_jax.recon.losses import LossWeights
from metatalk_jax.subject.layout import Subject, load_subject
from metatalk_jax.tracking.crop import crop_frame, crop_matrices

PREVIEWS = "previews"


class PseudoFrameMaker:
    """Wav2Lip pseudo frames of one subject: `make(mels, source)` -> fit crops (and, on request,
    the renderer-resolution original and pseudo crops of chosen frames for previews)."""

    def __init__(self, subject: Subject, runner: Wav2LipRunner, feather_fraction: float,
                 landmark_backend=None):
        self.subject, self.runner, self.feather = subject, runner, float(feather_fraction)
        # tracking backend whose `landmarks(image, box)` reads the pseudo frames' 68 points
        # (None: no landmarks, photometric-only refit)
        self.landmark_backend = landmark_backend
        meta, crops, marks = subject.meta, subject.crops, subject.landmarks
        self.frame_size = tuple(int(v) for v in crops["frame_size"])
        self.render_res = int(meta["renderer_resolution"])
        self.fit_res = int(meta["fit_resolution"])
        self.render_matrices = np.asarray(crops["matrices"], np.float64)
        self.fit_matrices = crop_matrices(crops["centers"], crops["sizes"], self.fit_res)
        self.track_boxes = np.asarray(marks["boxes"], np.float64)[:, :4]
        self.face_boxes = wav2lip_face_boxes(marks["boxes"], self.frame_size)
        self.rois = regions_of_interest(self.face_boxes,
                                        [self.render_matrices, self.fit_matrices],
                                        [self.render_res, self.fit_res], self.frame_size)
        video = meta.get("source", {}).get("path", "")
        if not video or not os.path.isfile(video):
            raise InputError(f"{subject.path}: its source video {video!r} is not readable here")
        self.frames = SourceFrames(video, float(meta["fps"]), subject.num_frames, self.rois)

    def make(self, mels: np.ndarray, source: np.ndarray, preview_rows=()):
        """mels [n,80,16], source [n] subject frames (n <= batch size) -> (fit crops uint8
        [n,S,S,3], landmarks float32 [n,68,2] in fit-crop pixels or None without a landmark
        backend, {row: (original crop, pseudo crop) at the renderer resolution})."""
        rois = self.frames.take(source)
        faces = np.stack([face_input(img, self.face_boxes[s], self.rois[s])
                          for img, s in zip(rois, source)])
        generated = self.runner(faces, mels)
        fit_crops, marks, previews = [], [], {}
        for j, (img, s) in enumerate(zip(rois, source)):
            pseudo = paste_feathered(img, generated[j], self.face_boxes[s], self.rois[s],
                                     self.feather)
            to_fit = local_matrix(self.fit_matrices[s], self.rois[s])
            fit_crops.append(crop_frame(pseudo, to_fit, self.fit_res))
            if self.landmark_backend is not None:
                marks.append(self._landmarks(pseudo, s, to_fit))
            if j in preview_rows:
                matrix = local_matrix(self.render_matrices[s], self.rois[s])
                previews[j] = (crop_frame(img, matrix, self.render_res),
                               crop_frame(pseudo, matrix, self.render_res))
        return np.stack(fit_crops), (np.stack(marks) if marks else None), previews

    def _landmarks(self, roi_image: np.ndarray, s: int, to_fit: np.ndarray) -> np.ndarray:
        """[68,2] landmarks of a pasted ROI image, found in the subject's tracked box of frame s
        (the pose is the source frame's, so the box still holds the face), mapped to fit-crop
        pixels by `to_fit` [2,3]."""
        ox, oy = float(self.rois[s][0]), float(self.rois[s][1])
        box = self.track_boxes[s] - np.array([ox, oy, ox, oy])
        points = self.landmark_backend.landmarks(roi_image, box).astype(np.float64)
        return (points @ to_fit[:, :2].T + to_fit[:, 2]).astype(np.float32)

    def close(self) -> None:
        self.frames.close()


def clip_frames(audio: np.ndarray, sample_rate: int, fps: float) -> int:
    return frames_for_audio(len(audio), sample_rate, fps)


def _preview_image(original, pseudo, render) -> np.ndarray:
    """original | pseudo | 3DMM render, each resized to the renderer crop's side."""
    import cv2
    side = original.shape[0]
    render = cv2.resize(render, (side, side), interpolation=cv2.INTER_LINEAR)
    return np.concatenate([original, pseudo, render], axis=1)


class PseudoGenerator:
    """Generates the pseudo corpus at `out_dir` (see the module docstring); `run()` -> summary."""

    def __init__(self, subject_dir: str, audio_dir: str, wav2lip_path: str, out_dir: str,
                 config, *, log=None):
        self.config = config
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.subject = load_subject(subject_dir)
        meta = self.subject.meta
        self.fps = float(meta["fps"])
        self.sample_rate = int(meta.get("sample_rate", 16000))
        self.audio_samples = int(meta.get("audio_samples") or round(
            float(meta["config"]["audio_window_s"]) * self.sample_rate))
        self.clips = scan_audio_dir(audio_dir)
        if int(config.max_clips) > 0:
            self.clips = self.clips[:int(config.max_clips)]
        if not self.clips:
            raise InputError(f"{audio_dir}: no audio clips (.wav/.mp4/...) found")
        self.wav2lip_path = wav2lip_path
        self.out_dir = out_dir
        expression_dim = int(self.subject.coefficients["expression"].shape[1])
        self.writer = PseudoVideoWriter(
            out_dir, expression_dim=expression_dim, audio_samples=self.audio_samples,
            subject_fingerprint=str(meta["fingerprint"]), fps=self.fps,
            sample_rate=self.sample_rate,
            validation_fraction=float(config.validation_fraction))

    def run(self) -> dict:
        done = self.writer.done_clips()
        todo = [c for c in self.clips if c.clip_id not in done]
        summary = {"clips_total": len(self.clips),
                   "clips_already_done": len(self.clips) - len(todo),
                   "clips_written": 0, "clips_skipped": 0, "frames_written": 0, "parts": []}
        if not todo:
            self.log(f"pseudo: all {len(self.clips)} clips are already in {self.out_dir}")
            return summary
        model, variables = load_wav2lip(self.wav2lip_path, fold_batch_norm=True)
        cfg = self.config
        landmark_backend = None
        if cfg.fit.landmarks:
            from metatalk_jax.tracking.backends import make_backend
            landmark_backend = make_backend(cfg.fit.landmarks)
        maker = PseudoFrameMaker(self.subject, Wav2LipRunner(model, variables, cfg.batch_size),
                                 cfg.feather_fraction, landmark_backend)
        fitter = ExpressionFitter(
            self.subject, steps=cfg.fit.steps, batch=cfg.fit.batch, learning_rate=cfg.fit.lr,
            visibility_refresh=cfg.fit.visibility_refresh,
            weights=LossWeights.from_config(cfg.fit.weights), model_path=cfg.model or None)
        progress = Progress("pseudo clips", len(todo))
        pending: list[PseudoClip] = []
        start = time.perf_counter()
        try:
            for clip in todo:
                made = self._one_clip(clip, maker, fitter, preview=not pending)
                progress.update(1)
                if made is None:
                    summary["clips_skipped"] += 1
                    continue
                pending.append(made)
                summary["clips_written"] += 1
                summary["frames_written"] += len(made.source_frame)
                if len(pending) >= int(cfg.clips_per_part):
                    summary["parts"].append(self.writer.write_part(pending))
                    pending = []
            if pending:
                summary["parts"].append(self.writer.write_part(pending))
        finally:
            maker.close()
            progress.close()
        if summary["clips_written"] == 0 and not done:
            raise InputError(f"no usable audio clip among the {len(todo)} found")
        seconds = time.perf_counter() - start
        summary["seconds"] = round(seconds, 2)
        summary["frames_per_second"] = round(summary["frames_written"] / max(seconds, 1e-9), 2)
        return summary

    def _one_clip(self, clip: AudioClip, maker: PseudoFrameMaker, fitter: ExpressionFitter,
                  preview: bool) -> PseudoClip | None:
        cfg = self.config
        try:
            audio = load_clip_audio(clip, self.sample_rate, min_seconds=cfg.min_seconds,
                                    silence_dbfs=cfg.silence_dbfs)
            count = clip_frames(audio, self.sample_rate, self.fps)
            mels = wav2lip_mel_chunks(wav2lip_mel(audio, self.sample_rate), count, self.fps)
        except (MediaError, ValueError) as err:
            self.log(f"skip {clip.clip_id}: {str(err).splitlines()[0]}")
            return None
        source = pingpong_indices(count, self.subject.num_frames)
        preview_frame = count // 2 if (preview and cfg.previews) else -1
        crops, marks, shots = [], [], None
        b = int(cfg.batch_size)
        for lo in range(0, count, b):
            hi = min(lo + b, count)
            rows = (preview_frame - lo,) if lo <= preview_frame < hi else ()
            fit_crops, fit_marks, previews = maker.make(mels[lo:hi], source[lo:hi], rows)
            crops.append(fit_crops)
            if fit_marks is not None:
                marks.append(fit_marks)
            if previews:
                shots = previews[preview_frame - lo]
        crops = np.concatenate(crops)
        expression = fitter.fit(crops, source, landmarks=np.concatenate(marks) if marks else None)
        if shots is not None:
            self._write_preview(clip, shots, expression[preview_frame], source[preview_frame],
                                fitter)
        times = np.arange(count) / self.fps
        heard = at_front_end_level(audio, self.sample_rate)     # as inference hears audio
        windows = np.stack([audio_window(heard, t, self.audio_samples, self.sample_rate)
                            for t in times])
        return PseudoClip(clip.clip_id, expression, windows, source,
                          frame_index=np.arange(count), time_s=times.astype(np.float32))

    def _write_preview(self, clip: AudioClip, shots, expression, source_frame, fitter) -> None:
        render = fitter.render(expression[None], np.array([source_frame]))[0]
        folder = os.path.join(self.out_dir, PREVIEWS)
        os.makedirs(folder, exist_ok=True)
        name = clip.clip_id.replace("/", "__") + ".png"
        write_png(os.path.join(folder, name), _preview_image(shots[0], shots[1], render))


def generate_pseudo_videos(subject_dir: str, audio_dir: str, wav2lip_path: str, out_dir: str,
                           config, *, log=None) -> dict:
    """Runs the whole generation; returns a summary dict (clips written/skipped, frames, parts,
    seconds). Bad inputs raise ValueError (or MediaError) with a one-line message."""
    return PseudoGenerator(subject_dir, audio_dir, wav2lip_path, out_dir, config, log=log).run()


__all__ = ["PseudoGenerator", "PseudoFrameMaker", "generate_pseudo_videos"]
