"""Per-frame training examples of a fitted subject, and the crop module's final boxes.

`final_crop_boxes` is the second half of the crop module: once the 3DMM is fitted, the face area
is the projection of the model's face region (forehead included, which landmarks miss), so the
renderer's crop follows the synthetic face exactly. `TargetExamples` streams the video once more
and yields, frame by frame, what the TFDS target-video dataset stores (data_pipelines/
target_video.py): the face crop at the renderer resolution, the fitted face and mouth masks
of the subject drawn in the frame's crop (`crop_renders`, as the render cache and inference draw
it), the coefficients, the crop transform and the audio
window. It also writes the overlay preview as it goes.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from metatalk_jax.face3d.render import FaceCoeffs, posed_vertices, project_to_screen
from metatalk_jax.fixed_batches import index_batches, pad_to_batch
from metatalk_jax.media.frame_audio_windows import audio_window
from metatalk_jax.media.loudness import at_front_end_level
from metatalk_jax.media.video_read import read_frames
from metatalk_jax.media.video_write import Mp4Writer
from metatalk_jax.recon.fit import FitResult, landmark_points
from metatalk_jax.subject.conditioning import (crop_renders, dilated_mouth_masks,
                                               mouth_dilation_steps)
from metatalk_jax.subject.previews import overlay_frame
from metatalk_jax.subject.face_model import folded_face_model
from metatalk_jax.tracking.crop import CropBoxes, boxes_from_points, crop_frame

# Every this-many face vertices are projected to find the face area (plenty for a box).
FACE_AREA_STRIDE = 7


def fitted_coeffs(fit: FitResult, index: np.ndarray) -> FaceCoeffs:
    b = len(index)
    return FaceCoeffs(jnp.broadcast_to(fit.identity, (b, fit.identity.shape[0])),
                      jnp.asarray(fit.expression[index]),
                      jnp.broadcast_to(fit.texture, (b, fit.texture.shape[0])),
                      jnp.asarray(fit.angles[index]), jnp.asarray(fit.translation[index]),
                      jnp.asarray(fit.gamma[index]))


def projected_face_points(model, fit: FitResult, camera, *, batch: int = 64) -> np.ndarray:
    """[T, K, 2] frame-pixel projections of the model's face-region vertices (every
    FACE_AREA_STRIDE-th), for every frame."""
    ids = np.flatnonzero(np.asarray(model.face_mask) > 0.5)[::FACE_AREA_STRIDE]

    @jax.jit
    def project(model, coeffs):     # the model an argument, not a constant: recon.fit.AdamLoop
        verts, _ = posed_vertices(model, coeffs)
        return project_to_screen(camera, verts[:, ids])[..., :2]

    t = len(fit.expression)
    out = []
    for real, index in index_batches(t, batch):     # one batch shape: compiled once
        out.append(np.asarray(project(model, fitted_coeffs(fit, index)))[:len(real)])
    return np.concatenate(out, 0)


def final_crop_boxes(model, fit: FitResult, camera, frame_size, config) -> CropBoxes:
    """Renderer crop boxes around the fitted face's projection (config.face_margin/shift);
    camera: the video's 3D camera the fit used."""
    model = model.as_jax()
    points = projected_face_points(model, fit, camera)
    return boxes_from_points(points, frame_size, margin=config.face_margin,
                             vertical_shift=config.face_shift, size_sigma=config.size_sigma,
                             center_sigma=config.center_sigma)


def _encode(image: np.ndarray, fmt: str) -> bytes:
    ext = ".jpg" if fmt == "jpeg" else ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if fmt == "jpeg" else []
    if image.ndim == 3:
        image = np.ascontiguousarray(image[..., ::-1])          # RGB -> OpenCV's BGR
    ok, data = cv2.imencode(ext, image, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {fmt} image")
    return data.tobytes()


class TargetExamples:
    """Callable returning the iterator of per-frame example dicts (in frame order).

    camera: the video's 3D camera, the one the coefficients were fitted with (frame pixels);
    each frame's crop is rendered by it followed by the final box's screen transform at R.
    """

    def __init__(self, video: str, model, fit: FitResult, boxes: CropBoxes, camera,
                 tracked_landmarks: np.ndarray, audio: np.ndarray | None, config, *,
                 preview_path: str | None = None):
        self.video, self.fit, self.boxes = video, fit, boxes
        self.tracked = tracked_landmarks
        # The A2E's audio front end: the whole track at its loudness (media/loudness.py), as
        # inference and the pseudo corpora bring theirs.
        self.audio = None if audio is None else at_front_end_level(audio, config.sample_rate)
        self.config = config
        # The subject as training and inference draw it: identity and albedo folded in.
        self.model = folded_face_model(model, fit.identity, fit.albedo).as_jax()
        self.resolution = int(config.renderer_resolution)
        self.audio_samples = int(round(config.audio_window_s * config.sample_rate))
        self.preview_path = preview_path
        self._preview = None
        # The 3D camera the coefficients were fitted with, rasterizing at R.
        self.camera = dataclasses.replace(camera, height=self.resolution, width=self.resolution)
        r = self.resolution
        dilations = mouth_dilation_steps(config.mouth_dilation, r)

        folded = {"identity": jnp.zeros(0)}      # the identity is in the model's mean shape

        # The subject's model is an argument, not a captured constant (see recon.fit.AdamLoop):
        # a small program, one cache entry for subjects of one shape.
        @jax.jit
        def render_masks(model, expression, gamma, angles, translation, screen):
            out = crop_renders(model, self.camera, expression, gamma, angles, translation,
                               screen)
            pose = {"expression": expression, "angles": angles, "translation": translation}
            frame_landmarks = landmark_points(model, folded, pose, self.camera)
            return (out.image, out.alpha, dilated_mouth_masks(out.mouth, dilations),
                    frame_landmarks)

        self._render = render_masks

    def close(self) -> None:
        if self._preview is not None:
            self._preview.__exit__(None, None, None)
            self._preview = None

    def __call__(self) -> Iterator[dict]:
        r, batch = self.resolution, int(self.config.batch)
        t = len(self.boxes)
        matrices = self.boxes.matrices(r)
        screens = self.boxes.screen_transform(r)
        if self.preview_path and self._preview is None:
            self._preview = Mp4Writer(self.preview_path, self.config.fps).__enter__()
        frames = read_frames(self.video, fps=self.config.fps, max_frames=t)
        pending = []
        for i, frame in enumerate(frames):
            pending.append((i, frame))
            if len(pending) == batch or i == t - 1:
                yield from self._emit(pending, matrices, screens)
                pending = []
        if pending:
            yield from self._emit(pending, matrices, screens)
        self.close()

    def _emit(self, pending, matrices, screens) -> Iterator[dict]:
        r, batch = self.resolution, int(self.config.batch)
        index = np.array([i for i, _ in pending])
        padded = pad_to_batch(index, batch)
        fit = self.fit
        image, alpha, mouth_masks, lm = jax.device_get(self._render(
            self.model, fit.expression[padded], fit.gamma[padded], fit.angles[padded],
            fit.translation[padded], screens[padded]))
        fmt = self.config.image_format
        for j, (i, frame) in enumerate(pending):
            face_crop = crop_frame(frame, matrices[i], r)
            face_mask = (alpha[j] > 0.5).astype(np.uint8) * 255
            if self._preview is not None and i < self.config.preview_frames:
                self._preview.write(overlay_frame(frame, image[j], alpha[j], matrices[i],
                                                  self.tracked[i], lm[j]))
            yield {"frame_index": np.int64(i), "time_s": np.float32(i / self.config.fps),
                   "face_crop": _encode(face_crop, fmt), "face_mask": _encode(face_mask, "png"),
                   "mouth_mask": _encode(mouth_masks[j], "png"),
                   "expression": self.fit.expression[i].astype(np.float32),
                   "gamma": self.fit.gamma[i].astype(np.float32),
                   "angles": self.fit.angles[i].astype(np.float32),
                   "translation": self.fit.translation[i].astype(np.float32),
                   "crop_transform": matrices[i].astype(np.float32),
                   "audio": audio_window(self.audio, i / self.config.fps, self.audio_samples,
                                         int(self.config.sample_rate))}

