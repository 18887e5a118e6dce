"""How much detail a generated mouth has, against the real frame it was drawn on.

    sharpness ratio of a frame = detail(output, mouth box) / detail(background frame, same box)
    detail(image, box)         = variance of the Laplacian of the box's grey levels

The mouth box is the bounding box of the 20 lip landmarks (iBUG 48-67) found on the output
frame, widened on every side by MOUTH_BOX_MARGIN of the mouth's width (the lips' outer edge, the
philtrum and the chin crease are where a blurred mouth loses its detail), and the same box is
cut from both frames. The Laplacian is OpenCV's 3x3 kernel on grey levels 0-255, computed on the
box plus a one-pixel border so the box's own edge pixels count. A video summary is the median of
the per-frame ratios: about 1 for a mouth as crisp as the footage, about 0.2 for a smudge.

No learnt weights: the box comes from the project's landmark detector (eval.mouth_opening), which
`pixel_lip_sync` runs on both frames anyway.
"""

from __future__ import annotations

import cv2
import numpy as np

LIPS = slice(48, 68)
MOUTH_BOX_MARGIN = 0.25     # fraction of the mouth width added on every side of the lip box


def mouth_box(landmarks: np.ndarray, frame_shape: tuple[int, ...],
              margin: float = MOUTH_BOX_MARGIN) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) end-exclusive integer pixel box around the lips of [68, 2] landmarks
    (frame pixels), widened by `margin` x the mouth width, clipped to the frame with one pixel
    to spare for the Laplacian's border; None when less than 3x3 pixels remain."""
    lips = np.asarray(landmarks, np.float64)[LIPS]
    lo, hi = lips.min(axis=0), lips.max(axis=0)
    pad = margin * max(hi[0] - lo[0], 1.0)
    h, w = frame_shape[:2]
    x0, y0 = int(np.clip(np.floor(lo[0] - pad), 1, w - 1)), int(np.clip(np.floor(lo[1] - pad),
                                                                        1, h - 1))
    x1, y1 = int(np.clip(np.ceil(hi[0] + pad), 1, w - 1)), int(np.clip(np.ceil(hi[1] + pad),
                                                                      1, h - 1))
    if x1 - x0 < 3 or y1 - y0 < 3:
        return None
    return x0, y0, x1, y1


def box_patch(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """float64 grey [h + 2, w + 2] of the box with its one-pixel border (RGB uint8 frame)."""
    x0, y0, x1, y1 = box
    piece = np.ascontiguousarray(frame[y0 - 1:y1 + 1, x0 - 1:x1 + 1])
    return cv2.cvtColor(piece, cv2.COLOR_RGB2GRAY).astype(np.float64)


def laplacian_variance(patch: np.ndarray) -> float:
    """Variance of the 3x3 Laplacian over the inside of a bordered grey patch (box_patch)."""
    lap = cv2.Laplacian(np.asarray(patch, np.float64), cv2.CV_64F, ksize=1)
    return float(np.var(lap[1:-1, 1:-1]))


def sharpness_ratio(output_patch: np.ndarray, background_patch: np.ndarray) -> float:
    """detail(output) / detail(background) of the same box; NaN for a featureless background."""
    reference = laplacian_variance(background_patch)
    if reference <= 1e-9:
        return float("nan")
    return laplacian_variance(output_patch) / reference


def median_ratio(ratios) -> float:
    """The video's mouth sharpness: median of the finite per-frame ratios (NaN when none)."""
    values = np.asarray(list(ratios), np.float64)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else float("nan")
