"""Putting the renderer's face into the frame.

The renderer was trained to produce the real crop inside the (dilated) mouth mask only, so its
output is used there: AudioDVP's blend erodes that mask (3x3, 9 times at 256 px) and blurs it
(5x5 Gaussian), so the seam falls inside the region the renderer learnt; here both scale with the
crop resolution. The blended crop then goes back into the full-resolution frame through the crop
module's feathered paste-back, which touches only the crop's footprint.
"""

from __future__ import annotations

import cv2
import numpy as np

from metatalk_jax.subject.conditioning import MOUTH_DILATE_KERNEL
from metatalk_jax.tracking.crop import paste_back


def blend_mask(mouth_mask: np.ndarray) -> np.ndarray:
    """[R, R] uint8 dilated mouth mask -> float32 [R, R] alpha in [0, 1] (eroded, blurred)."""
    r = mouth_mask.shape[0]
    erode = max(1, int(round(9 * r / 256)))
    blur = 2 * max(1, int(round(2 * r / 256))) + 1          # 5 at 256
    eroded = cv2.erode(mouth_mask, MOUTH_DILATE_KERNEL, iterations=erode)
    return cv2.GaussianBlur(eroded.astype(np.float32) / 255.0, (blur, blur), 0)


def composite_frame(frame: np.ndarray, face: np.ndarray, matrix: np.ndarray,
                    alpha: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 frame with the [R, R, 3] uint8 generated face blended in by `alpha`
    ([R, R] in [0, 1]) through the frame-to-crop map `matrix` [2, 3]. Pixels where the warped
    alpha is 0 (everything outside the mouth region) keep their exact values."""
    return paste_back(frame, face, matrix, mask=alpha)
