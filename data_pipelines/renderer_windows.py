"""The neural renderer's windows: 7 frames of 3DMM renders and mouth masks, and the real crop.

AudioDVP's renderer predicts, for target frame i, the real face crop of frame i times frame i's
mouth mask from the 3DMM renders of frames i-3..i+3, each times that frame's mouth mask. The
renders are not made here nor in the step: every frame's render at the training resolution R is
made once into the subject's render cache (subject/render_cache.py, a uint8 [T, R, R, 3] .npy
indexed by frame_index, read memory-mapped). A window (data_pipelines/windows.py) over one split
of the target-video shards holds exactly what the renderer task reads:

  key          dtype   shape          meaning
  render       uint8   [W, R, R, 3]   the cached 3DMM render of each frame, 0..255
  mouth_mask   uint8   [W, R, R]      its mouth mask (dilated by prepare), 0/255
  valid        bool    [W]            the position holds a frame of the split
  target       uint8   [R, R, 3]      the RGB face crop of frame i, 0..255
  reference    uint8   [R, R, 3]      (with a reference cache) frame i's mouth reference redrawn
                                      in its geometry (subject/render_cache.py), 0..255

Batches add example_id and example_valid (windows.py). Windows never reach across the split's
ends: validation is the end of the video, so train windows never see validation frames nor
validation windows train frames. Crops are stored at S x S; R must divide S by a whole factor:
images are reduced with cv2.INTER_AREA (box average) and masks re-thresholded (>= 128 -> 255).
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from metatalk_jax.data_pipelines.subject_frames import decode_image, open_target_source
from metatalk_jax.data_pipelines.windows import DEFAULT_CACHE_FRAMES, WindowSource
from metatalk_jax.errors import InputError

DEFAULT_WINDOW = 7  # AudioDVP: frames i-3..i+3
MASK_THRESHOLD = 128  # a reduced mask pixel is mouth if at least half its area was


def crop_resolutions(frames, resolution: int | None) -> tuple[int, int]:
    """(S, R): the stored crop side of `frames` (a target-video source) and the training side
    R (None = S); a ValueError unless R divides S by a whole factor."""
    stored = int(decode_image(frames[0]["face_crop"], "face_crop").shape[0])
    resolution = stored if resolution is None else int(resolution)
    if resolution <= 0 or stored % resolution != 0:
        raise InputError(
            f"resolution must divide the stored crop size {stored} by a whole factor "
            f"(e.g. {stored}, {stored // 2}, {stored // 4}), got {resolution}")
    return stored, resolution


class RendererFrames:
    """FrameFeatures of the renderer (module docstring). Keeps each frame's mouth-mask PNG (a
    few KB); the render cache is mapped lazily in each process, so pickling to grain workers
    does not copy it."""

    reads_centre = True   # the target crop is megabytes at 1024 px: read, never kept

    def __init__(self, render_cache: str, stored_resolution: int, resolution: int,
                 reference_cache: str | None = None):
        self.render_cache, self.reference_cache = render_cache, reference_cache
        self.stored, self.resolution = int(stored_resolution), int(resolution)
        self._renders = self._references = None

    def _mapped(self, path: str) -> np.ndarray:
        array = np.load(path, mmap_mode="r")
        r = self.resolution
        if array.ndim != 4 or array.shape[1:] != (r, r, 3):
            raise ValueError(f"{path}: images of shape {array.shape}, expected [T, {r}, {r}, 3]")
        return array

    def _render_array(self) -> np.ndarray:
        if self._renders is None:
            self._renders = self._mapped(self.render_cache)
        return self._renders

    def keep(self, record: dict) -> dict:
        return {"mouth_mask": bytes(record["mouth_mask"])}

    def position(self, kept: dict, frame_index: int) -> dict[str, np.ndarray]:
        mask = self._reduce(decode_image(kept["mouth_mask"], "mouth_mask", grayscale=True),
                            "mouth_mask")
        if self.resolution != self.stored:
            # Box averages of a 0/255 mask are partial coverage: back to a hard mask.
            mask = np.where(mask >= MASK_THRESHOLD, 255, 0).astype(np.uint8)
        return {"render": self._render_array()[frame_index], "mouth_mask": mask}

    def centre(self, record: dict) -> dict[str, np.ndarray]:
        out = {"target": self._reduce(decode_image(record["face_crop"], "face_crop"),
                                      "face_crop")}
        if self.reference_cache is not None:
            if self._references is None:
                self._references = self._mapped(self.reference_cache)
            out["reference"] = np.asarray(self._references[int(record["frame_index"])])
        return out

    def _reduce(self, image: np.ndarray, key: str) -> np.ndarray:
        if image.shape[:2] != (self.stored, self.stored):
            raise ValueError(f"{key} is {image.shape[:2]}, expected {self.stored}x{self.stored}")
        if self.resolution == self.stored:
            return image
        size = (self.resolution, self.resolution)
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_renders": None, "_references": None}


def renderer_windows(data_dir_or_builder_dir: str | os.PathLike, split: str, *,
                     render_cache: str, window: int = DEFAULT_WINDOW,
                     resolution: int | None = None, reference_cache: str | None = None,
                     cache_frames: int = DEFAULT_CACHE_FRAMES) -> WindowSource:
    """Renderer windows over `split` ("train" or "validation") of a subject's target-video
    shards. render_cache: the uint8 [T, R, R, 3] .npy of every frame's render at R
    (resolution, None = the stored crop side S); reference_cache: the same of every frame's
    mouth reference (None: no `reference` key)."""
    frames = open_target_source(data_dir_or_builder_dir, split)
    if len(frames) == 0:
        raise InputError(f"split {split!r} has no frames")
    stored, resolution = crop_resolutions(frames, resolution)
    return WindowSource([frames], RendererFrames(render_cache, stored, resolution,
                                                 reference_cache),
                        window=window, cache_frames=cache_frames)
