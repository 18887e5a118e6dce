"""Preview images a person can read: enlarged to a legible size, with each column named.

Used by inference's side-by-side preview video and the training previews (renderer: render |
generated | real; A2E: the coefficient curves' legend). Drawn with OpenCV, RGB uint8.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
MIN_BAND = 18           # px: the smallest label band that keeps the text legible


def enlarge_to(image: np.ndarray, min_height: int, rows: int = 1) -> np.ndarray:
    """`image` [rows * h, W, 3] (rows stacked examples of height h) enlarged by the smallest
    whole factor that makes each example at least `min_height` px tall, nearest-neighbour so
    every source pixel stays a visible square (a 32-px render becomes 8x8 blocks, not a blur).
    Unchanged when it is already tall enough."""
    factor = max(1, -(-int(min_height) // (image.shape[0] // max(rows, 1))))
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def label_columns(image: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """[band + H, W, 3] uint8: `image` [H, W, 3] under a black band that names each of its
    len(labels) equal-width columns in white, left-aligned over the column. The band is
    max(18, column width / 12) px, rounded so the total height stays even (H.264's yuv420p
    needs even heights)."""
    height, width = image.shape[:2]
    column = width // max(len(labels), 1)
    band = max(MIN_BAND, column // 12)
    band += (height + band) % 2
    head = np.zeros((band, width, 3), np.uint8)
    scale = band / 36
    for k, label in enumerate(labels):
        # shrink a label that would run into the next column
        text_width = cv2.getTextSize(label, FONT, scale, 1)[0][0]
        fitted = scale * min(1.0, (column - 8) / max(text_width, 1))
        cv2.putText(head, label, (k * column + 4, band - 5), FONT, fitted, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return np.concatenate([head, np.asarray(image, np.uint8)], axis=0)
