"""How open a mouth is, from 68 landmarks: on video pixels (dlib) or on a 3DMM's geometry.

    opening = inner-lip gap / inter-ocular distance

inner-lip gap: the mean distance of the three inner-lip pairs (iBUG 61-67, 62-66, 63-65);
inter-ocular distance: between the centres of the two eyes (points 36-41 and 42-47). Both
scale with the face, so the ratio does not depend on the image size or the face's distance;
a closed mouth is about 0, a wide-open one about 0.5.

`MouthMeter` measures it on a frame with the project's landmark detector (dlib's HOG face
detector and 68-point predictor), at a fixed working scale: the frame is resized for detection
so that faces of a talking-head video are well inside HOG's range, and the landmarks are found
on the face resized to LANDMARK_FACE_SIDE pixels, so the 1-pixel quantisation of dlib's points
is small against any mouth (on a 176x144 video the mouth is ~15 px wide).
"""

from __future__ import annotations

import cv2
import numpy as np

INNER_UPPER = (61, 62, 63)
INNER_LOWER = (67, 66, 65)
LEFT_EYE = tuple(range(36, 42))
RIGHT_EYE = tuple(range(42, 48))
DETECT_LONG_SIDE = 480          # frames are resized to this long side for the HOG detector
LANDMARK_FACE_SIDE = 256        # face boxes are resized to this side for the 68 points


def mouth_opening(landmarks):
    """[..., 68, 2] landmarks -> [...] inner-lip gap / inter-ocular distance.

    NumPy in, NumPy out; JAX in, JAX out (inference measures its 3DMM on device)."""
    if isinstance(landmarks, np.ndarray):
        xp = np
    else:
        import jax.numpy as xp
    upper = landmarks[..., INNER_UPPER, :]
    lower = landmarks[..., INNER_LOWER, :]
    gap = xp.mean(xp.linalg.norm(upper - lower, axis=-1), axis=-1)
    eyes = (xp.mean(landmarks[..., LEFT_EYE, :], axis=-2)
            - xp.mean(landmarks[..., RIGHT_EYE, :], axis=-2))
    return gap / xp.maximum(xp.linalg.norm(eyes, axis=-1), 1e-6)


class MouthMeter:
    """Mouth opening of the most prominent face of RGB uint8 frames, NaN where none is found.

    backend: a tracking backend (metatalk_jax.tracking.backends); default dlib at upsample 0
    with one retry at 1 on the resized frame (faces down to ~10% of the frame's long side).
    """

    def __init__(self, backend=None):
        if backend is None:
            from metatalk_jax.tracking.backends import make_backend
            backend = make_backend("dlib", upsample=0, max_upsample=1)
        self.backend = backend

    def landmarks(self, frame: np.ndarray) -> np.ndarray | None:
        """[68, 2] landmarks (frame pixels) of the largest detected face, or None."""
        frame = np.ascontiguousarray(frame)
        h, w = frame.shape[:2]
        scale = DETECT_LONG_SIDE / max(h, w)
        small = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        boxes = self.backend.detect(small)
        if len(boxes) == 0:
            return None
        sizes = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        x0, y0, x1, y1 = boxes[int(np.argmax(sizes)), :4] / scale
        # The face with a margin, resized so that its box is LANDMARK_FACE_SIDE pixels wide.
        side = max(x1 - x0, y1 - y0)
        zoom = LANDMARK_FACE_SIDE / max(side, 1.0)
        margin = 0.25 * side
        left, top = x0 - margin, y0 - margin
        matrix = np.array([[zoom, 0, -left * zoom], [0, zoom, -top * zoom]], np.float64)
        size = int(round((side + 2 * margin) * zoom))
        face = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        box = np.array([margin, margin, margin + x1 - x0, margin + y1 - y0]) * zoom
        points = self.backend.landmarks(face, box)
        return points / zoom + np.array([left, top], np.float32)

    def __call__(self, frame: np.ndarray) -> float:
        points = self.landmarks(frame)
        return float("nan") if points is None else float(mouth_opening(points))
