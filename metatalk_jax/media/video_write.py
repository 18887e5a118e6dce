"""Writing frames to files atomically: PNG images and mp4 videos (OpenCV, no audio yet).

Outputs go to a temporary name in the destination folder and are renamed when complete, so an
interrupted run never leaves a file that looks finished.
"""

from __future__ import annotations

import os
import tempfile

import cv2
import numpy as np


def _to_bgr_u8(frame) -> np.ndarray:
    """[H, W, 3] RGB float in [0, 1] or uint8 -> contiguous BGR uint8."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(frame[..., ::-1])


def _temp_path(path: str, suffix: str) -> str:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    return tmp


def write_png(path: str, frame) -> str:
    """Writes an RGB frame ([H, W, 3] float in [0,1] or uint8) as PNG, atomically."""
    tmp = _temp_path(path, ".png")
    try:
        if not cv2.imwrite(tmp, _to_bgr_u8(frame)):
            raise OSError(f"{path}: OpenCV could not encode the PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


class Mp4Writer:
    """Streams RGB frames into an mp4 (MPEG-4 Part 2 via OpenCV); renamed into place on close.

    Usage: `with Mp4Writer(path, fps) as w: w.write(frame)`. On an exception the partial file
    is deleted.
    """

    def __init__(self, path: str, fps: float):
        self.path, self.fps = path, float(fps)
        self._tmp = _temp_path(path, ".mp4")
        self._writer = None
        self.frames = 0

    def write(self, frame) -> None:
        bgr = _to_bgr_u8(frame)
        if self._writer is None:
            h, w = bgr.shape[:2]
            self._writer = cv2.VideoWriter(self._tmp, cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                raise OSError(f"{self.path}: OpenCV could not open an mp4 writer")
        self._writer.write(bgr)
        self.frames += 1

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._writer is not None:
            self._writer.release()
        if exc_type is None and self.frames > 0:
            os.replace(self._tmp, self.path)
        elif os.path.exists(self._tmp):
            os.remove(self._tmp)
        return False
