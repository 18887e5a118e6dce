"""The inference pipeline: audio + subject + A2E + renderer -> lip-synced mp4 (streaming).

    audio (any file ffmpeg reads) --A2E--> expression of every output frame (audio_drive.py)
    output frame k <- subject frame j = pingpong(k) (background.py): its pose, lighting and crop
    3DMM (subject identity + albedo, expression k, pose/light j) rendered in crop j at R x R,
        with its mouth mask dilated as in training
    renderer: the 7 renders around k (masked) -> the face crop of frame k
    blend the face into frame j by the eroded, blurred mouth mask (face_blend.py), feathered
        paste-back into the full-resolution frame -> H.264 mp4 with the audio muxed

Only a few batches of frames are alive at once: the background is decoded as a stream,
renders are made batch by batch, and each output frame is written as soon as the renders of
its window exist, so memory does not depend on the audio's length. `--preview` writes a second
video, 3DMM render | output | original (face crops), for looking at the result.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import deque

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from metatalk_jax.face3d.render import FaceCoeffs, render
from metatalk_jax.inference.audio_drive import expressions_from_audio
from metatalk_jax.inference.background import BackgroundFrames
from metatalk_jax.inference.face_blend import blend_mask, composite_frame
from metatalk_jax.inference.trained_models import load_a2e, load_renderer
from metatalk_jax.media.audio import frames_for_audio
from metatalk_jax.media.audio_load import check_speech_audio, load_audio
from metatalk_jax.media.ffmpeg_tools import MediaError
from metatalk_jax.media.video_read import probe_video
from metatalk_jax.media.video_write import Mp4Writer
from metatalk_jax.progress import Progress
from metatalk_jax.subject.face_model import subject_camera, subject_face_model
from metatalk_jax.subject.layout import Subject, load_subject
from metatalk_jax.subject.renderer_inputs import dilated_mouth_mask, mouth_dilation_steps
from metatalk_jax.tracking.crop import crop_frame

FEATURE_SAMPLE_RATE = 16000       # the A2E's audio (Wav2Lip's features)
MUX_SAMPLE_RATE = 48000           # the audio track of the output
DEFAULT_BATCH = {256: 8, 512: 4, 1024: 2}
# Frames above this size (pixels) are "large" (4K): the default batch is at most LARGE_BATCH and
# the background decoder runs one thread, because every frame the pipeline or ffmpeg holds is
# 25 MB there (a batch of 8 keeps ~19 frames alive for its windows, a batch of 4 ~11).
LARGE_FRAME_PIXELS = 1920 * 1088
LARGE_BATCH = 4


@dataclasses.dataclass
class InferenceSettings:
    """Options of `run_inference` (the CLI's flags).

    resolution: renderer crop side (None = the renderer checkpoint's); it must equal the
    checkpoint's. batch_size: frames per render / generator call (None: 8 at <= 256 px, 4 at
    512, 2 at 1024; at most 4 for frames larger than 1080p). max_seconds: longer audio is
    refused. min_seconds, silence_dbfs: shorter or quieter audio is refused. model_path: the
    morphable model .npz prepare used (None: the offline model). video: the subject's source
    video when it has moved (None: subject.json's path). preview: also write
    `<out>.preview.mp4`. crf/preset: libx264 settings.
    """

    resolution: int | None = None
    batch_size: int | None = None
    max_seconds: float = 600.0
    min_seconds: float = 0.5
    silence_dbfs: float = -60.0
    model_path: str | None = None
    video: str | None = None
    preview: bool = False
    crf: int = 18
    preset: str = "medium"
    show_progress: bool = True


def preview_path_for(out_path: str) -> str:
    root, ext = os.path.splitext(out_path)
    return f"{root}.preview{ext or '.mp4'}"


def load_driving_audio(path: str, settings: InferenceSettings) -> np.ndarray:
    """float32 [N] 16 kHz mono samples of `path`, refused (MediaError naming the file) when
    silent, shorter than min_seconds or longer than max_seconds."""
    audio = load_audio(path, FEATURE_SAMPLE_RATE)
    check_speech_audio(audio, FEATURE_SAMPLE_RATE, path, min_seconds=settings.min_seconds,
                       silence_dbfs=settings.silence_dbfs)
    seconds = len(audio) / FEATURE_SAMPLE_RATE
    if seconds > settings.max_seconds:
        raise MediaError(path, f"audio is {seconds:.1f} s long; at most {settings.max_seconds:.0f}"
                               f" s is allowed (--max-seconds)")
    return audio


def source_video(subject: Subject, override: str | None) -> str:
    """The subject's source video (or `override`), checked to have the subject's frame size."""
    path = override or subject.meta.get("source", {}).get("path")
    if not path:
        raise ValueError(f"{subject.path}: subject.json names no source video; pass --video")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: the subject's source video is missing (moved? pass --video)")
    info = probe_video(path)
    want = tuple(int(v) for v in subject.meta["frame_size"])
    if (info.height, info.width) != want:
        raise ValueError(f"{path}: frames are {info.height}x{info.width}, the subject's "
                         f"{want[0]}x{want[1]}: not the video {subject.path} was prepared from")
    return path


class FaceRenders:
    """The subject's 3DMM with audio-driven expressions, rendered in each frame's crop."""

    def __init__(self, subject: Subject, resolution: int, model_path: str | None):
        self.subject = subject
        self.coefficients = subject.coefficients
        model = jax.device_put(subject_face_model(subject, model_path).as_jax())
        camera = subject_camera(subject, resolution)
        boxes = subject.crop_boxes()
        self.screens = boxes.screen_transform(resolution)
        self.matrices = boxes.matrices(resolution)
        mouth_dilation = int(subject.meta.get("config", {}).get("mouth_dilation", 4))
        self.dilations = mouth_dilation_steps(mouth_dilation, resolution)

        def draw(model, expression, gamma, angles, translation, screen):
            empty = jnp.zeros((expression.shape[0], 0), jnp.float32)
            coeffs = FaceCoeffs(empty, expression, empty, angles, translation, gamma)
            out = render(model, coeffs, camera, screen_transform=screen)
            image = jnp.clip(jnp.round(out.image * 255.0), 0, 255).astype(jnp.uint8)
            return image, out.mouth_mask

        self._draw = jax.jit(draw)
        self._model = model

    def __call__(self, expressions: np.ndarray, sources: np.ndarray):
        """expressions [B, E], source frames [B] -> (renders uint8 [B, R, R, 3], dilated mouth
        masks uint8 [B, R, R])."""
        c = self.coefficients
        arrays = [expressions, c["gamma"][sources], c["angles"][sources],
                  c["translation"][sources], self.screens[sources]]
        images, mouths = jax.device_get(self._draw(
            self._model, *(jnp.asarray(a, jnp.float32) for a in arrays)))
        masks = np.stack([dilated_mouth_mask(m, self.dilations) for m in mouths])
        return images, masks


def _preview_panel(render_u8, output_frame, original_frame, matrix, resolution, side):
    crops = [render_u8, crop_frame(output_frame, matrix, resolution),
             crop_frame(original_frame, matrix, resolution)]
    if side != resolution:
        crops = [cv2.resize(c, (side, side), interpolation=cv2.INTER_AREA) for c in crops]
    return np.concatenate(crops, axis=1)


def run_inference(subject_dir: str, a2e_path: str, renderer_path: str, audio_path: str,
                  out_path: str, settings: InferenceSettings | None = None) -> dict:
    """Writes the lip-synced video to out_path (module docstring); returns a summary dict
    (frames, seconds of output, compute seconds, paths). Bad input raises ValueError/OSError
    with a one-line message before anything is written; the outputs appear only when complete.
    """
    settings = settings or InferenceSettings()
    t0 = time.perf_counter()
    subject = load_subject(subject_dir)
    fps = float(subject.meta["fps"])
    audio = load_driving_audio(audio_path, settings)
    a2e = load_a2e(a2e_path)
    e = int(np.shape(subject.coefficients["expression"])[1])
    if a2e.expression_dim != e:
        raise ValueError(f"{a2e_path}: the A2E predicts {a2e.expression_dim} expression "
                         f"coefficients, the subject {subject_dir} has {e}")
    renderer = load_renderer(renderer_path)
    r = renderer.resolution
    if settings.resolution is not None and int(settings.resolution) != r:
        raise ValueError(f"{renderer_path}: the renderer was trained at {r}x{r}, not "
                         f"--resolution {settings.resolution}")
    video = source_video(subject, settings.video)
    height, width = (int(v) for v in subject.meta["frame_size"])
    large = height * width > LARGE_FRAME_PIXELS
    batch = DEFAULT_BATCH.get(r, 8 if r < 256 else 2)
    batch = int(settings.batch_size or (min(batch, LARGE_BATCH) if large else batch))
    num_frames = frames_for_audio(len(audio), FEATURE_SAMPLE_RATE, fps)
    mux_audio = load_audio(audio_path, MUX_SAMPLE_RATE)

    expressions = expressions_from_audio(
        a2e, audio, num_frames, fps=fps, audio_samples=int(subject.meta["audio_samples"]),
        sample_rate=FEATURE_SAMPLE_RATE, show_progress=settings.show_progress)
    faces = FaceRenders(subject, r, settings.model_path)
    background = BackgroundFrames(video, fps, subject.num_frames, block=max(8, batch),
                                  decoder_threads=1 if large else None)
    half = renderer.window // 2
    preview_side = min(r, 384)
    progress = Progress(f"infer {r}px", num_frames, enabled=settings.show_progress)
    t_setup = time.perf_counter() - t0

    preview_file = preview_path_for(out_path) if settings.preview else None
    preview = (Mp4Writer(preview_file, fps, audio=mux_audio, sample_rate=MUX_SAMPLE_RATE,
                         crf=23, preset="veryfast") if preview_file else None)
    try:
        with Mp4Writer(out_path, fps, audio=mux_audio, sample_rate=MUX_SAMPLE_RATE,
                       crf=settings.crf, preset=settings.preset) as writer:
            # entries[k - first]: (source j, frame or None, render, mask) of output frame k.
            entries: deque = deque()
            first = 0            # output index of entries[0]
            next_centre = 0      # the next output frame to generate
            rendered = 0         # output frames rendered so far
            frames_iter = background(num_frames)

            def emit(centres: list[int]) -> None:
                count = len(centres)
                padded = centres + [centres[-1]] * (batch - count)
                positions = np.asarray(padded)[:, None] + np.arange(-half, half + 1)[None, :]
                valid = (positions >= 0) & (positions < num_frames)
                index = np.clip(positions, first, rendered - 1) - first
                renders = np.stack([[entries[i][2] for i in row] for row in index])
                masks = np.stack([[entries[i][3] for i in row] for row in index])
                masks = np.where(valid[..., None, None], masks, 0).astype(np.uint8)
                generated = np.asarray(renderer.faces(renders, masks, valid))
                for b, k in enumerate(centres):
                    j, frame, render_u8, mask = entries[k - first]
                    matrix = faces.matrices[j]
                    out = composite_frame(frame, generated[b], matrix, blend_mask(mask))
                    writer.write(out)
                    if preview is not None:
                        preview.write(_preview_panel(render_u8, out, frame, matrix, r,
                                                     preview_side))
                    entries[k - first] = (j, None, render_u8, mask)   # the frame is done
                progress.update(count)

            done = False
            while not done:
                chunk = []
                for _ in range(batch):
                    item = next(frames_iter, None)
                    if item is None:
                        break
                    chunk.append(item)
                done = rendered + len(chunk) >= num_frames
                if chunk:
                    sources = np.array([j for j, _ in chunk])
                    exprs = np.zeros((batch, e), np.float32)
                    exprs[:len(chunk)] = expressions[rendered:rendered + len(chunk)]
                    padded = np.concatenate([sources, np.full(batch - len(chunk), sources[-1])])
                    images, masks = faces(exprs, padded)
                    for b, (j, frame) in enumerate(chunk):
                        entries.append((j, frame, images[b], masks[b]))
                    rendered += len(chunk)
                elif not done:
                    raise ValueError(f"{video}: the background ended after {rendered} frames")
                # Generate every centre whose window is rendered (all of them at the end).
                ready = num_frames if done else rendered - half
                while next_centre < ready and (ready - next_centre >= batch or done):
                    centres = list(range(next_centre, min(next_centre + batch, ready)))
                    emit(centres)
                    next_centre = centres[-1] + 1
                while first < next_centre - half:      # renders no window needs any more
                    entries.popleft()
                    first += 1
    except BaseException:
        if preview is not None:
            preview.abort()        # no preview of a video that was not written
        raise
    if preview is not None:
        preview.close()
    progress.close()
    total = time.perf_counter() - t0
    seconds = num_frames / fps
    return {"out": out_path, "preview": preview_file, "frames": num_frames, "fps": fps,
            "seconds": seconds, "resolution": r, "batch_size": batch,
            "setup_s": round(t_setup, 2), "total_s": round(total, 2),
            "compute_s_per_output_s": round((total - t_setup) / max(seconds, 1e-9), 3),
            "a2e_step": a2e.checkpoint.step, "renderer_step": renderer.checkpoint.step}
