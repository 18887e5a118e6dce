"""Face detection + 68-point landmark backends, behind one small interface and a name registry.

A backend answers two questions about one RGB uint8 frame [H,W,3]:

    detect(frame)         -> [N,5] float32: x0, y0, x1, y1, score per face (pixels; N may be 0)
    landmarks(frame, box) -> [68,2] float32: x, y of the iBUG-68 points inside that face box

Coordinates are continuous pixels, as in face3d.geometry and the rasterizer: x right, y down,
pixel (i, j) covers [j, j+1) x [i, i+1) and is centred at (j + 0.5, i + 0.5). So a box's edges
are pixel edges (x1 - x0 is its width in pixels) and a landmark on pixel (i, j) is at
(j + 0.5, i + 0.5). The score is only comparable within one backend (dlib's is the HOG SVM
margin, not a probability).

    backend = make_backend("dlib", upsample=1)
"""

from __future__ import annotations

import importlib.util
import os
from typing import Callable, Protocol

import numpy as np

from metatalk_jax.errors import InputError, MissingInputError


class FaceBackend(Protocol):
    """What track_video needs from a detector/landmarker."""

    def detect(self, frame: np.ndarray) -> np.ndarray:
        """RGB uint8 [H,W,3] -> [N,5] float32 (x0, y0, x1, y1, score), pixels."""
        ...

    def landmarks(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        """RGB uint8 [H,W,3] and one box (x0, y0, x1, y1[, score]) -> [68,2] float32 pixels."""
        ...


def check_frame(frame) -> np.ndarray:
    """Returns the frame as a C-contiguous uint8 [H,W,3] array, or raises ValueError.

    dlib reads the buffer directly, so a strided view (e.g. a BGR->RGB flip) must be copied.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 frame [H,W,3], got {frame.dtype} {frame.shape}")
    return np.ascontiguousarray(frame)


def default_dlib_model_path() -> str:
    """The 68-point shape predictor shipped in the face-recognition-models package.

    Found through the package's location rather than by importing it: its __init__ imports
    pkg_resources, which setuptools >= 81 no longer provides.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(list(spec.submodule_search_locations)[0], "models",
                            "shape_predictor_68_face_landmarks.dat")
    if path is None or not os.path.isfile(path):
        raise ImportError("the dlib backend needs the 68-point model from the "
                          "face-recognition-models package (pip install face-recognition-models), "
                          "or pass model_path=")
    return path


class DlibBackend:
    """dlib's HOG frontal-face detector + its 68-point shape predictor (iBUG-68 order).

    upsample: how many times dlib doubles the image before detecting. HOG finds faces down to
        about 80x80 px at 0; each doubling halves that. On the 176x144 carphone clip (face ~45 px)
        upsample=0 finds nothing and upsample=1 finds the face in 118 of 120 frames.
    max_upsample: when nothing is found at `upsample`, retry at each level up to this one
        (default upsample + 1, i.e. one retry; pass upsample to turn retries off). A retry costs
        about 4x a plain detection, but only on frames without a face.
    adjust_threshold: added to the detector's threshold (negative finds more, weaker faces).
    model_path: the shape predictor .dat file; default: face-recognition-models' 68-point model.
    """

    name = "dlib"

    def __init__(self, upsample: int = 1, model_path: str | None = None, *,
                 max_upsample: int | None = None, adjust_threshold: float = 0.0):
        import dlib  # imported here so that the registry works without dlib installed

        if upsample < 0:
            raise InputError(f"upsample must be >= 0, got {upsample}")
        self.upsample = int(upsample)
        self.max_upsample = self.upsample + 1 if max_upsample is None else int(max_upsample)
        if self.max_upsample < self.upsample:
            raise InputError(f"max_upsample ({self.max_upsample}) < upsample ({self.upsample})")
        self.adjust_threshold = float(adjust_threshold)
        self.model_path = model_path if model_path is not None else default_dlib_model_path()
        if not os.path.isfile(self.model_path):
            raise MissingInputError(f"dlib 68-point landmark model not found: {self.model_path}")
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(self.model_path)

    def detect(self, frame: np.ndarray) -> np.ndarray:
        """RGB uint8 [H,W,3] -> [N,5] float32 (x0, y0, x1, y1, score); boxes may cross the border.

        Tries upsample levels from `upsample` to `max_upsample` and returns the first non-empty
        result, so frames with a large enough face pay for one pass only.
        """
        frame = check_frame(frame)
        for level in range(self.upsample, self.max_upsample + 1):
            rects, scores, _ = self._detector.run(frame, level, self.adjust_threshold)
            if len(rects):
                # dlib's right()/bottom() are the last pixel inside: its far edge is one more.
                return np.array([(r.left(), r.top(), r.right() + 1, r.bottom() + 1, s)
                                 for r, s in zip(rects, scores)], dtype=np.float32)
        return np.zeros((0, 5), np.float32)

    def landmarks(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        """RGB uint8 [H,W,3] and a box (x0, y0, x1, y1[, score]) -> [68,2] float32.

        dlib returns the pixel index each point falls on, so the raw points are quantised to 1 px
        and sit on pixel centres (+0.5 here).
        """
        frame = check_frame(frame)
        x0, y0, x1, y1 = (int(round(float(v))) for v in np.asarray(box)[:4])
        shape = self._predictor(frame, self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        if shape.num_parts != 68:
            raise InputError(f"{self.model_path}: predicts {shape.num_parts} points, not 68")
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32) + 0.5


_BACKENDS: dict[str, Callable[..., FaceBackend]] = {"dlib": DlibBackend}


def register_backend(name: str, factory: Callable[..., FaceBackend]) -> None:
    """Makes `make_backend(name, **options)` call `factory(**options)`; replaces an older one."""
    _BACKENDS[name] = factory


def known_backends() -> list[str]:
    return sorted(_BACKENDS)


def make_backend(name: str, **options) -> FaceBackend:
    """The backend registered under `name`, built with `options` (e.g. upsample=2 for dlib)."""
    try:
        factory = _BACKENDS[name]
    except KeyError:
        raise InputError(f"unknown face tracking backend {name!r}; known: "
                         f"{', '.join(known_backends())}") from None
    return factory(**options)
