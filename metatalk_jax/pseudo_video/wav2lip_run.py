"""Wav2Lip on the subject's own frames: boxes, batched jit inference, feathered paste-back.

Per pseudo frame k of a clip (the clip's audio at the subject's fps):
  source frame   pingpong(k): the target video played forward, then backward, and so on, so a
                 clip longer than the video never jumps from the last frame to the first;
  face box       the subject's tracked detector box widened by Wav2Lip's pads (top 0, bottom 10,
                 left 0, right 0 px: the chin) and averaged over the next 5 frames' boxes, as
                 Wav2Lip's inference does, then cut to whole pixels;
  inference      the box resized to 96x96, lower half masked, itself as the reference (BGR
                 inside `wav2lip_inputs`), the frame's mel chunk; fixed batch size, so the
                 generator compiles once;
  paste          the 96-px prediction resized back to the box and blended with a feathered
                 mask (Wav2Lip pastes the square hard, which leaves a visible seam on HD frames).

Only a region of interest (ROI) of each frame is kept: the union of the face box and the
subject's crop footprints (plus the anti-alias blur's reach), so a batch of 4K frames costs a few
MB and cropping the ROI equals cropping the whole frame.
"""

from __future__ import annotations

import math
from typing import Iterator

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from metatalk_jax.errors import InputError
from metatalk_jax.fixed_batches import pad_to_batch
from metatalk_jax.media.video_read import read_frames
from metatalk_jax.models import wav2lip as w2l
from metatalk_jax.tracking.crop import antialias_sigma, feather_mask, footprint

WAV2LIP_PADS = (0, 10, 0, 0)        # top, bottom, left, right (Wav2Lip's inference default)
WAV2LIP_BOX_SMOOTHING = 5           # frames averaged per box (Wav2Lip's get_smoothened_boxes)


def wav2lip_face_boxes(boxes: np.ndarray, frame_size: tuple[int, int],
                       pads: tuple[int, int, int, int] = WAV2LIP_PADS,
                       smoothing: int = WAV2LIP_BOX_SMOOTHING) -> np.ndarray:
    """Tracked boxes [T,4] (x0, y0, x1, y1 frame px) -> Wav2Lip's face boxes, int64 [T,4].

    The pads are applied and clipped to the frame (H, W) first; each box is then replaced by the
    mean of itself and the next `smoothing`-1 boxes (the last `smoothing` boxes near the end),
    truncated to integers as Wav2Lip's integer box array does.
    """
    boxes = np.asarray(boxes, np.float64)
    if boxes.ndim != 2 or boxes.shape[1] < 4 or len(boxes) == 0:
        raise ValueError(f"wav2lip_face_boxes: boxes must be [T,4], got {boxes.shape}")
    h, w = frame_size
    top, bottom, left, right = pads
    padded = np.stack([np.maximum(0, boxes[:, 0] - left).astype(np.int64),
                       np.maximum(0, boxes[:, 1] - top).astype(np.int64),
                       np.minimum(w, boxes[:, 2] + right).astype(np.int64),
                       np.minimum(h, boxes[:, 3] + bottom).astype(np.int64)], -1)
    t = len(padded)
    window = max(1, min(int(smoothing), t))
    out = np.empty_like(padded)
    for i in range(t):
        start = min(i, t - window)
        out[i] = np.mean(padded[start:start + window], 0).astype(np.int64)
    if np.any(out[:, 2] <= out[:, 0]) or np.any(out[:, 3] <= out[:, 1]):
        raise ValueError("wav2lip_face_boxes: a face box is empty after clipping to the frame")
    return out


def regions_of_interest(face_boxes: np.ndarray, crop_matrices: list[np.ndarray],
                        resolutions: list[int], frame_size: tuple[int, int]) -> np.ndarray:
    """int64 [T,4] (x0, y0, x1, y1), end-exclusive, clipped to the frame: the part of each frame
    that the face box and every crop (matrices [T,2,3] at each resolution) read, widened by the
    crops' anti-alias blur (4 sigma, OpenCV's kernel reach)."""
    h, w = frame_size
    out = np.array(face_boxes, np.int64, copy=True)
    for matrices, resolution in zip(crop_matrices, resolutions):
        for t, matrix in enumerate(matrices):
            x0, y0, x1, y1 = footprint(matrix, resolution, (h, w))
            reach = int(math.ceil(4.0 * antialias_sigma(float(matrix[0, 0])))) + 1
            out[t] = (min(out[t, 0], x0 - reach), min(out[t, 1], y0 - reach),
                      max(out[t, 2], x1 + reach), max(out[t, 3], y1 + reach))
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h)
    return out


def local_matrix(matrix: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """A frame-to-crop map [2,3] re-expressed for the ROI sub-image starting at (x0, y0)."""
    local = np.asarray(matrix, np.float64).copy()
    local[:, 2] += local[:, :2] @ np.asarray(roi[:2], np.float64)
    return local


class SourceFrames:
    """ROI sub-images of the subject's video frames by index, decoding the video in order.

    Requests are served from one forward decode; a request for an earlier frame than the
    decoder has reached restarts it (the backward half of a ping-pong pass), so only the frames
    of the current request are ever held, never a whole clip.
    """

    def __init__(self, video: str, fps: float, num_frames: int, rois: np.ndarray):
        self.video, self.fps, self.num_frames, self.rois = video, fps, int(num_frames), rois
        self._frames: Iterator[np.ndarray] | None = None
        self._next = 0
        self.restarts = 0

    def _restart(self) -> None:
        if self._frames is not None:
            self._frames.close()
        self._frames = read_frames(self.video, fps=self.fps, max_frames=self.num_frames)
        self._next = 0
        self.restarts += 1

    def take(self, indices: np.ndarray) -> list[np.ndarray]:
        """uint8 ROI images [h_i, w_i, 3] of source frames `indices`, in their order."""
        wanted = sorted(set(int(i) for i in indices))
        if wanted[0] < 0 or wanted[-1] >= self.num_frames:
            raise ValueError(f"{self.video}: frame index out of range 0..{self.num_frames - 1}")
        if self._frames is None or wanted[0] < self._next:
            self._restart()
        got: dict[int, np.ndarray] = {}
        for index in wanted:
            while self._next <= index:
                frame = next(self._frames, None)
                if frame is None:
                    raise InputError(f"{self.video}: the video ends after {self._next} frames; "
                                     f"the subject has {self.num_frames}")
                if self._next == index:
                    x0, y0, x1, y1 = self.rois[index]
                    got[index] = np.ascontiguousarray(frame[y0:y1, x0:x1])
                self._next += 1
        return [got[int(i)] for i in indices]

    def close(self) -> None:
        if self._frames is not None:
            self._frames.close()
            self._frames = None


class Wav2LipRunner:
    """The generator jit-compiled for one batch size; `__call__` pads smaller batches."""

    def __init__(self, model, variables, batch_size: int):
        if batch_size <= 0:
            raise InputError(f"batch size must be positive, got {batch_size}")
        self.batch_size = int(batch_size)
        self.variables = jax.device_put(variables)

        @jax.jit
        def predict(variables, mels, faces):
            face_input = w2l.wav2lip_inputs(faces, faces)
            return model.apply(variables, mels[..., None], face_input)

        self._predict = predict

    def __call__(self, faces_rgb: np.ndarray, mels: np.ndarray) -> np.ndarray:
        """faces_rgb uint8 [n,96,96,3] (n <= batch size), mels float32 [n,80,16] ->
        generated faces, RGB uint8 [n,96,96,3]."""
        n = len(faces_rgb)
        if not 0 < n <= self.batch_size:
            raise ValueError(f"Wav2LipRunner: got {n} faces for batch size {self.batch_size}")
        out = self._predict(self.variables,
                            jnp.asarray(pad_to_batch(mels, self.batch_size), jnp.float32),
                            jnp.asarray(pad_to_batch(faces_rgb, self.batch_size), jnp.uint8))
        return w2l.wav2lip_output_frames(out[:n])


def face_input(roi_image: np.ndarray, box: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """The face box of a ROI image resized to Wav2Lip's 96x96 (bilinear, as Wav2Lip), uint8."""
    x0, y0, x1, y1 = (int(v) for v in box)
    ox, oy = int(roi[0]), int(roi[1])
    face = roi_image[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    return cv2.resize(face, (w2l.IMAGE_SIZE, w2l.IMAGE_SIZE), interpolation=cv2.INTER_LINEAR)


def paste_feathered(roi_image: np.ndarray, generated: np.ndarray, box: np.ndarray,
                    roi: np.ndarray, feather_fraction: float) -> np.ndarray:
    """A new ROI image with the generated 96-px face (RGB uint8) resized into the box and blended
    with tracking.crop.feather_mask (feather = feather_fraction x the box's shorter side);
    pixels outside the box are the ROI's own."""
    x0, y0, x1, y1 = (int(v) for v in box)
    ox, oy = int(roi[0]), int(roi[1])
    h, w = y1 - y0, x1 - x0
    face = cv2.resize(generated, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    alpha = feather_mask((h, w), max(1, int(round(feather_fraction * min(h, w)))))[..., None]
    out = roi_image.copy()
    region = out[y0 - oy:y1 - oy, x0 - ox:x1 - ox].astype(np.float32)
    out[y0 - oy:y1 - oy, x0 - ox:x1 - ox] = np.clip(
        np.rint(region * (1.0 - alpha) + face * alpha), 0, 255).astype(np.uint8)
    return out
