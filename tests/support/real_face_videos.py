"""Videos made from real photos for the identity tests: each face is moved like a person on
camera (slow pan, zoom and a few degrees of roll), optionally relit, in a square panel."""

from __future__ import annotations

import cv2
import numpy as np

from metatalk_jax.real_faces import face


def animated(name: str, frames: int, *, size: int = 240, face_px: float = 100.0,
             phase: float = 0.0, gain: float = 1.0, gamma: float = 1.0,
             tint=(1.0, 1.0, 1.0)) -> list[np.ndarray]:
    """`frames` RGB uint8 [size, size, 3] panels of `name`'s face (~face_px wide; the photo's edge
    pixels repeated beyond it, never a mirrored second face), moving:
    +-6 px pan, +-6% zoom, +-4 degrees roll; then relit: gain, gamma and a per-channel tint."""
    image, box = face(name)
    x0, y0, x1, y1 = box
    cx, cy, width = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0
    out = []
    lut = np.clip(255.0 * gain * (np.arange(256) / 255.0) ** gamma, 0, 255)
    tables = [np.clip(lut * c, 0, 255).astype(np.uint8) for c in tint]
    for t in range(frames):
        s = t / 6.0 + phase
        scale = face_px / width * (1 + 0.06 * np.sin(s * 0.7))
        angle = 4.0 * np.sin(s * 0.5)
        m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
        m[0, 2] += size / 2 - cx + 6 * np.sin(s)
        m[1, 2] += size / 2 - cy + 6 * np.cos(s * 0.8)
        panel = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_AREA,
                               borderMode=cv2.BORDER_REPLICATE)
        out.append(np.stack([tables[c][panel[..., c]] for c in range(3)], -1))
    return out
