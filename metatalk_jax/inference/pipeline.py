"""The inference pipeline: audio + subject + A2E + renderer -> lip-synced mp4 (streaming).

    audio (any file ffmpeg reads) --A2E--> expression of every output frame (audio_drive.py)
        --pauses--> settled on the subject's closed mouth where the audio is silent (silence.py)
    output frame k <- subject frame j = pingpong(k) (background.py): its pose, lighting and crop
    3DMM (subject identity + albedo, expression k, pose/light j) rendered in crop j at R x R,
        with its mouth mask dilated as in training (and, for renderers that read one, the
        training frame with the nearest mouth redrawn in that geometry: mouth_references.py)
    renderer: the 7 renders around k (masked) [+ the mouth reference] -> the face crop of k
    blend the face into frame j by the eroded, blurred mouth mask (face_blend.py), feathered
        paste-back into the full-resolution frame -> H.264 mp4 with the audio muxed

Only a few batches of frames are alive at once: the background is decoded as a stream,
renders are made batch by batch, and each output frame is written as soon as the renders of
its window exist, so memory does not depend on the audio's length. `--preview` writes a second
video, 3DMM render | output | original (face crops) | the mouth of output and original enlarged,
for looking at the result.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from collections import deque

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from metatalk_jax.errors import InputError
from metatalk_jax.eval.mouth_opening import mouth_opening
from metatalk_jax.eval.pixel_lip_sync import DriveRecord, drive_sidecar_path, pixel_lip_sync
from metatalk_jax.fixed_batches import pad_to_batch
from metatalk_jax.inference.background import BackgroundFrames
from metatalk_jax.inference.face_blend import blend_mask, composite_frame
from metatalk_jax.inference.render_ring import RenderRing
from metatalk_jax.inference.trained_models import load_renderer
from metatalk_jax.media.audio_files import check_speech_audio, load_audio
from metatalk_jax.media.ffmpeg_tools import MediaError
from metatalk_jax.media.labelled_images import label_columns
from metatalk_jax.media.video_read import probe_video
from metatalk_jax.media.video_write import Mp4Writer
from metatalk_jax.progress import Progress
from metatalk_jax.subject.conditioning import (ReferenceFrames, cavity_colour, crop_renders,
                                               dilated_mouth_masks, mouth_dilation_steps)
from metatalk_jax.subject.face_model import subject_camera, subject_face_model
from metatalk_jax.subject.layout import Subject, load_subject
from metatalk_jax.train.trained_on import check_trained_on
from metatalk_jax.subject.mouth_references import (choose_references, mouth_shapes,
                                                   reference_crops)
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
    `<out>.preview.mp4`. crf/preset: libx264 settings. lip_sync_frames: output frames (spread
    evenly) whose pixel lip sync is measured after writing (eval/pixel_lip_sync.py); 0: none.
    allow_other_subject: use an A2E / renderer trained on another subject (else refused).
    rest_in_pauses: in the driving audio's pauses (>= 0.4 s), settle the drive on the subject's
    closed mouth (inference/silence.py); False keeps the A2E's expressions there.
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
    lip_sync_frames: int = 250
    rest_in_pauses: bool = True
    show_progress: bool = True
    allow_other_subject: bool = False


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
        raise InputError(f"{subject.path}: subject.json names no source video; pass --video")
    if not os.path.isfile(path):
        raise InputError(f"{path}: the subject's source video is missing (moved? pass --video)")
    info = probe_video(path)
    want = tuple(int(v) for v in subject.meta["frame_size"])
    if (info.height, info.width) != want:
        raise InputError(f"{path}: frames are {info.height}x{info.width}, the subject's "
                         f"{want[0]}x{want[1]}: not the video {subject.path} was prepared from")
    return path


class FaceRenders:
    """The subject's 3DMM with audio-driven expressions, rendered in each frame's crop as the
    renderer was trained to see it (its conditioning), with each frame's mouth reference when
    the renderer reads one (subject/mouth_references.py: the training frame whose mouth is
    nearest the driven one, kept across frames unless another is clearly nearer)."""

    def __init__(self, subject: Subject, resolution: int, model_path: str | None,
                 conditioning: str = "audiodvp", mouth_reference: bool = False):
        self.subject = subject
        self.coefficients = subject.coefficients
        folded = subject_face_model(subject, model_path)
        model = jax.device_put(folded.as_jax())
        camera = subject_camera(subject, resolution)
        boxes = subject.crop_boxes()
        self.screens = boxes.screen_transform(resolution)
        self.matrices = boxes.matrices(resolution)
        mouth_dilation = int(subject.meta.get("config", {}).get("mouth_dilation", 4))
        self.dilations = mouth_dilation_steps(mouth_dilation, resolution)
        colour = cavity_colour(conditioning)
        self.references = None
        if mouth_reference:
            # The bank is the training frames: the references the renderer learnt from (and a
            # held-out frame driven by its own expression never finds itself there).
            self.references = reference_crops(subject)
            train = self.references.train_frames
            self._bank = mouth_shapes(folded, self.coefficients["expression"][:train])
            self._model_np = folded
            self._reference_screens = boxes.screen_transform(self.references[0].shape[0])
            self._previous = None

        dilations = self.dilations

        def draw(model, expression, gamma, angles, translation, screen, reference):
            out = crop_renders(model, camera, expression, gamma, angles, translation, screen,
                               mouth_cavity=colour, reference=reference)

            def u8(x):
                return jnp.clip(jnp.round(x * 255.0), 0, 255).astype(jnp.uint8)
            refs = None if out.reference is None else u8(out.reference)
            return (u8(out.image), dilated_mouth_masks(out.mouth, dilations),
                    mouth_opening(out.landmarks), refs)

        self._draw = jax.jit(draw)
        self._model = model

    def _reference_frames(self, expressions: np.ndarray, real: int) -> ReferenceFrames:
        """The mouth references of a batch of driven expressions [B, E] (the first `real` are
        frames of the video, the rest padding that does not move the choice)."""
        query = mouth_shapes(self._model_np, expressions)
        chosen = choose_references(query[:real], self._bank, previous=self._previous)
        if real:
            self._previous = int(chosen[-1])
        chosen = np.concatenate([chosen, np.full(len(expressions) - real,
                                                 chosen[-1] if real else 0)])
        c = self.coefficients
        return ReferenceFrames(*(jnp.asarray(a, jnp.float32) for a in (
            c["expression"][chosen], c["angles"][chosen], c["translation"][chosen],
            self._reference_screens[chosen])), jnp.asarray(self.references.take(chosen)))

    def __call__(self, expressions: np.ndarray, sources: np.ndarray, real: int | None = None):
        """expressions [B, E], source frames [B] (the first `real` of them frames of the
        output, the rest padding) -> device arrays (renders uint8 [B, R, R, 3], dilated mouth
        masks uint8 [B, R, R] in {0, 255}, the 3DMM's mouth opening [B] (eval.mouth_opening),
        mouth references uint8 [B, R, R, 3] or None); nothing waits for them."""
        c = self.coefficients
        arrays = [expressions, c["gamma"][sources], c["angles"][sources],
                  c["translation"][sources], self.screens[sources]]
        reference = None
        if self.references is not None:
            reference = self._reference_frames(np.asarray(expressions),
                                               len(expressions) if real is None else real)
        return self._draw(self._model, *(jnp.asarray(a, jnp.float32) for a in arrays),
                          reference)


PREVIEW_LABELS = ("3DMM render (drive)", "output", "background frame", "mouth: output",
                  "mouth: background")
PREVIEW_MIN_SIDE = 256
# The mouth zoom: this part of the face crop (rows, columns as fractions of the side), which the
# crop module's face-centred boxes put around the lips and chin.
MOUTH_ZOOM = ((0.52, 0.97), (0.22, 0.78))


def mouth_zoom(crop: np.ndarray, side: int) -> np.ndarray:
    """[side, side, 3]: the mouth region of a face crop (MOUTH_ZOOM), enlarged without
    smoothing (nearest neighbour) so its own pixels, sharp or blurred, are what one sees."""
    r = crop.shape[0]
    (y0, y1), (x0, x1) = ((int(round(a * r)), int(round(b * r))) for a, b in MOUTH_ZOOM)
    return cv2.resize(crop[y0:y1, x0:x1], (side, side), interpolation=cv2.INTER_NEAREST)


def _preview_panel(render_u8, output_frame, original_frame, matrix, resolution, side):
    """[side + label, 5 side, 3] uint8: the drive's render | the output | the background frame,
    face crops at `side` px, then the mouth of the output and of the background frame enlarged
    to `side` (the frame's own pixels, for judging sharpness), each under its label."""
    out_crop = crop_frame(output_frame, matrix, resolution)
    original_crop = crop_frame(original_frame, matrix, resolution)
    crops = [render_u8, out_crop, original_crop]
    if side != resolution:
        interpolation = cv2.INTER_AREA if side < resolution else cv2.INTER_CUBIC
        crops = [cv2.resize(c, (side, side), interpolation=interpolation) for c in crops]
    # The zooms take the frame's own pixels (no resampling of the crop to smooth them).
    zooms = [mouth_zoom(native_crop(f, matrix, resolution), side)
             for f in (output_frame, original_frame)]
    return label_columns(np.concatenate(crops + zooms, axis=1), PREVIEW_LABELS)


def native_crop(frame: np.ndarray, matrix: np.ndarray, resolution: int) -> np.ndarray:
    """The face crop of `frame` at the frame's own scale (one crop pixel per frame pixel,
    nearest neighbour); matrix: the frame-to-crop map at `resolution`."""
    matrix = np.asarray(matrix, np.float64)
    native = max(8, int(round(resolution / float(matrix[0, 0]))))
    k = native / resolution                  # crop pixel u at R is (u + 0.5) k - 0.5 at native
    scaled = np.concatenate([k * matrix[:, :2], k * (matrix[:, 2:] + 0.5) - 0.5], axis=1)
    return cv2.warpAffine(frame, scaled, (native, native), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_REPLICATE)


def prepare_inference(subject_dir: str, renderer_path: str, settings: InferenceSettings):
    """(subject, renderer, source video): loaded and checked against each other."""
    subject = load_subject(subject_dir)
    renderer = load_renderer(renderer_path)
    check_trained_on(subject, renderer.checkpoint.step_dir, "renderer",
                     allow_other=settings.allow_other_subject)
    r = renderer.resolution
    if settings.resolution is not None and int(settings.resolution) != r:
        raise InputError(f"{renderer_path}: the renderer was trained at {r}x{r}, not "
                         f"--resolution {settings.resolution}")
    return subject, renderer, source_video(subject, settings.video)


def run_inference(subject_dir: str, a2e_path: str, renderer_path: str, audio_path: str,
                  out_path: str, settings: InferenceSettings | None = None, *,
                  phonemes: list | None = None) -> dict:
    """Writes the lip-synced video to out_path (module docstring); returns a summary dict
    (frames, seconds of output, compute seconds, paths, the pixel lip-sync of the written video).
    Bad input raises InputError with a one-line message before anything is written; the
    outputs appear only when complete. One job of a Talker (inference/talker.py); phonemes:
    the speech's phoneme times when known (for the bilabial closures).
    """
    from metatalk_jax.inference.talker import Talker
    settings = settings or InferenceSettings()
    t0 = time.perf_counter()
    talker = Talker.load(subject=subject_dir, a2e=a2e_path, renderer=renderer_path,
                         settings=settings, first_audio=audio_path)
    summary = talker.say(audio_path, out_path, phonemes=phonemes)
    summary["load_s"] = round(time.perf_counter() - t0 - summary["total_s"], 2)
    return summary


def _batch_size(renderer, subject: Subject, settings: InferenceSettings) -> tuple[int, bool]:
    """(frames per render / generator call, whether the frames are "large")."""
    r = renderer.resolution
    height, width = (int(v) for v in subject.meta["frame_size"])
    large = height * width > LARGE_FRAME_PIXELS
    batch = DEFAULT_BATCH.get(r, 8 if r < 256 else 2)
    return int(settings.batch_size or (min(batch, LARGE_BATCH) if large else batch)), large


def stream_frames(subject: Subject, renderer, video: str, expressions: np.ndarray,
                  settings: InferenceSettings, *, faces: "FaceRenders | None" = None,
                  preview_side: int | None = None, progress=None, stream_out: list | None = None):
    """Yields (output frame RGB uint8 [H, W, 3], preview panel or None) for every expression
    [N, E], streaming (module docstring). faces: the FaceRenders to reuse (built when None);
    stream_out: a list that gets the _FrameStream (its drive openings) and the background."""
    fps = float(subject.meta["fps"])
    batch, large = _batch_size(renderer, subject, settings)
    if faces is None:
        faces = FaceRenders(subject, renderer.resolution, settings.model_path,
                            renderer.conditioning, renderer.mouth_reference)
    background = BackgroundFrames(video, fps, subject.num_frames, block=max(8, batch),
                                  decoder_threads=1 if large else None)
    stream = _FrameStream(renderer, faces, np.asarray(expressions, np.float32), batch,
                          preview_side, background=background(len(expressions)))
    if stream_out is not None:
        stream_out.extend([stream, background])
    yield from stream.ready(progress)


def render_video(subject: Subject, renderer, video: str, expressions: np.ndarray,
                 out_path: str, settings: InferenceSettings, *, audio: np.ndarray | None = None,
                 started: float | None = None, voiced: np.ndarray | None = None,
                 faces: "FaceRenders | None" = None, phonemes: list | None = None) -> dict:
    """Draws output frame k with expression k on background frame pingpong(k), streaming, and
    writes out_path (+ its drive sidecar, + the preview if asked); then measures the written
    video's pixel lip sync unless settings.lip_sync_frames is 0.

    expressions: [N, E] float, one per output frame; audio: 48 kHz mono samples to mux (None:
    a silent video); voiced: [N] bool speech frames of the driving audio, for the sidecar and
    the silence measures (None: unknown); faces: the FaceRenders to reuse (a Talker's);
    phonemes: the speech's phoneme times when known (the sidecar's, for bilabial closures).
    Returns the summary dict.
    """
    t0 = time.perf_counter() if started is None else started
    fps = float(subject.meta["fps"])
    r = renderer.resolution
    batch, _ = _batch_size(renderer, subject, settings)
    num_frames = int(len(expressions))
    progress = Progress(f"infer {r}px", num_frames, enabled=settings.show_progress)
    parts: list = []
    frames = stream_frames(subject, renderer, video, expressions, settings, faces=faces,
                           preview_side=(max(min(r, 384), PREVIEW_MIN_SIDE)
                                         if settings.preview else None),
                           progress=progress, stream_out=parts)
    t_setup = time.perf_counter() - t0
    writers = dict(audio=audio, sample_rate=MUX_SAMPLE_RATE)
    preview_file = preview_path_for(out_path) if settings.preview else None
    preview = (Mp4Writer(preview_file, fps, crf=23, preset="veryfast", **writers)
               if preview_file else None)
    try:
        with Mp4Writer(out_path, fps, crf=settings.crf, preset=settings.preset,
                       **writers) as writer:
            for out, panel in frames:
                writer.write(out)
                if preview is not None:
                    preview.write(panel)
    except BaseException:
        if preview is not None:
            preview.abort()        # no preview of a video that was not written
        raise
    if preview is not None:
        preview.close()
    progress.close()
    stream, background = parts
    record = DriveRecord(fps=fps, source_video=os.path.abspath(video), source_fps=fps,
                         source_frame=background.indices(num_frames),
                         drive_opening=np.asarray(stream.drive_openings), voiced=voiced,
                         phonemes=phonemes)
    sidecar = record.write(drive_sidecar_path(out_path))
    t_done = time.perf_counter()
    seconds = num_frames / fps
    summary = {"out": out_path, "preview": preview_file, "drive_sidecar": sidecar,
               "frames": num_frames, "fps": fps, "seconds": seconds, "resolution": r,
               "batch_size": batch, "setup_s": round(t_setup, 2),
               "total_s": round(t_done - t0, 2),
               "compute_s_per_output_s": round((t_done - t0 - t_setup) / max(seconds, 1e-9), 3),
               "renderer_step": renderer.checkpoint.step}
    if settings.lip_sync_frames:
        scores = pixel_lip_sync(out_path, record, max_frames=settings.lip_sync_frames,
                                show_progress=settings.show_progress)
        summary["lip_sync"] = {"measured_on": "output pixels (dlib 68 landmarks)",
                               **scores.to_json()}
        summary["lip_sync_s"] = round(time.perf_counter() - t_done, 2)
    return summary


class _FrameStream:
    """The streaming core of `render_video` and `Talker.stream`: background frames in,
    composited frames out.

    Expressions arrive with `extend` (all at once offline, as the audio comes in a live
    stream); renders are made in batches of `batch` frames as soon as a whole batch of
    expressions exists (the last one at `finish`), and output frame k is generated once the
    renders of its window k-half..k+half exist, in batches of `batch` centres. The renders stay
    on the device (render_ring.py); background frames are dropped as soon as they are
    composited, so memory does not depend on the video's length; and the batches are the same
    whichever way the expressions arrive, so a live stream draws the offline path's frames.
    """

    def __init__(self, renderer, faces: FaceRenders, expressions: np.ndarray | None, batch: int,
                 preview_side: int | None, background=None):
        self.renderer, self.faces = renderer, faces
        self.batch, self.preview_side = batch, preview_side
        self.half = renderer.window // 2
        self.expressions = np.zeros((0, 0), np.float32)
        self.final = False
        self.background = background
        self.ring = RenderRing(batch, self.half)
        self._openings: list = []     # per render batch: (device [batch], real frames)
        # entries[k - first]: (source j, background frame) of output frame k, until composited.
        self.entries: deque = deque()
        self.first = 0            # output index of entries[0]
        self.rendered = 0         # output frames rendered so far
        self.next_centre = 0      # the next output frame to generate
        if expressions is not None:
            self.extend(expressions, final=True)

    @property
    def drive_openings(self) -> np.ndarray:
        """[rendered] the 3DMM's mouth opening of every output frame rendered so far."""
        parts = [np.asarray(v)[:n] for v, n in self._openings]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    @property
    def count(self) -> int:
        """Output frames: all of them once final; until then more than any window reaches."""
        return len(self.expressions) if self.final else np.iinfo(np.int64).max // 4

    def extend(self, expressions: np.ndarray, final: bool = False) -> None:
        """Appends expressions [n, E] of the next output frames; final: no more will come."""
        expressions = np.asarray(expressions, np.float32)
        self.expressions = (expressions if len(self.expressions) == 0 else
                            np.concatenate([self.expressions, expressions]))
        self.final = self.final or final

    def ready(self, progress=None):
        """Yields (output frame, preview panel or None) of every frame that the expressions so
        far allow, in order."""
        while True:
            available = len(self.expressions)
            rendering = self.rendered < available and (
                available - self.rendered >= self.batch or self.final)
            if rendering:
                n = min(self.batch, available - self.rendered)
                chunk = list(itertools.islice(self.background, n))
                if len(chunk) < n:
                    raise ValueError(f"the background ended after {self.rendered} frames")
                self._render(chunk)
            done = self.final and self.rendered >= available
            # Generate every centre whose window is rendered (all of them at the end).
            top = available if done else self.rendered - self.half
            while self.next_centre < top and (top - self.next_centre >= self.batch or done):
                centres = list(range(self.next_centre, min(self.next_centre + self.batch, top)))
                yield from self._generate(centres)
                if progress is not None:
                    progress.update(len(centres))
                self.next_centre = centres[-1] + 1
            while self.first < self.next_centre:                # composited frames
                self.entries.popleft()
                self.first += 1
            if not rendering:
                return

    def _render(self, chunk) -> None:
        b, n = self.batch, len(chunk)
        sources = pad_to_batch([j for j, _ in chunk], b)
        exprs = pad_to_batch(self.expressions[self.rendered:self.rendered + n], b)
        images, masks, openings, refs = self.faces(exprs, sources, real=n)
        self.ring.put(self.rendered, images, masks, refs)
        self.entries.extend(chunk)
        self._openings.append((openings, n))
        self.rendered += n

    def _generate(self, centres: list[int]):
        """Yields (output frame, preview panel or None) of output frames `centres`."""
        half, r = self.half, self.renderer.resolution
        positions = pad_to_batch(centres, self.batch)[:, None] + np.arange(-half, half + 1)[None, :]
        valid = (positions >= 0) & (positions < self.count)
        lowest = max(0, self.rendered - self.ring.slots)       # the oldest render still stored
        frames = np.clip(positions, lowest, self.rendered - 1)
        renders, masks, references, centre_masks, centre_renders = self.ring.windows(frames,
                                                                                     valid)
        generated = self.renderer.faces(renders, masks, valid, references)
        wanted = (generated, centre_masks) + ((centre_renders,) if self.preview_side else ())
        generated, centre_masks, *centre_renders = jax.device_get(wanted)
        for b, k in enumerate(centres):
            j, frame = self.entries[k - self.first]
            matrix = self.faces.matrices[j]
            out = composite_frame(frame, generated[b], matrix, blend_mask(centre_masks[b]))
            yield out, (None if self.preview_side is None else
                        _preview_panel(centre_renders[0][b], out, frame, matrix, r,
                                       self.preview_side))
