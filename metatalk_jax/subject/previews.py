"""Previews a person can look at: the fitted face over the video, and per-frame error curves.

Both are drawn with OpenCV (no plotting library): `overlay_frame` blends the rendered 3DMM face
into the frame and marks the tracked (red) and fitted (green) landmarks; `error_plot` draws one
panel per series, frames on the x axis.
"""

from __future__ import annotations

import cv2
import numpy as np

from metatalk_jax.tracking.crop import paste_back

TRACKED_COLOUR = (255, 60, 60)    # RGB
FITTED_COLOUR = (60, 255, 60)


def overlay_frame(frame: np.ndarray, render_crop: np.ndarray, alpha_crop: np.ndarray,
                  matrix: np.ndarray, tracked: np.ndarray, fitted: np.ndarray, *,
                  opacity: float = 0.6, min_height: int = 432) -> np.ndarray:
    """One preview frame.

    frame [H,W,3] uint8 RGB; render_crop [R,R,3] float in [0,1] and alpha_crop [R,R] the fitted
    face rendered in this frame's crop; matrix [2,3] frame-to-crop map; tracked/fitted [68,2]
    landmarks in frame pixels (continuous coordinates). Small videos are enlarged (nearest
    neighbour) to at least `min_height` rows so the landmarks stay visible.
    """
    out = paste_back(frame, render_crop * 255.0, matrix, mask=alpha_crop * opacity, feather=1)
    scale = max(1, int(np.ceil(min_height / frame.shape[0])))
    if scale > 1:
        out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    radius = max(1, scale)
    for points, colour in ((tracked, TRACKED_COLOUR), (fitted, FITTED_COLOUR)):
        for x, y in np.asarray(points, np.float64) * scale:
            cv2.circle(out, (int(round(x)), int(round(y))), radius, colour, -1, cv2.LINE_AA)
    return out


def error_plot(series: dict, *, width: int = 960, panel_height: int = 220,
               title: str = "") -> np.ndarray:
    """[H, W, 3] uint8 RGB plot: one panel per `name -> [T] values` entry, with the mean dashed."""
    panels = []
    for name, values in series.items():
        values = np.asarray(values, np.float64)
        panel = np.full((panel_height, width, 3), 255, np.uint8)
        left, right, top, bottom = 70, width - 20, 28, panel_height - 30
        top_value = float(values.max()) * 1.1 if values.size and values.max() > 0 else 1.0
        cv2.rectangle(panel, (left, top), (right, bottom), (0, 0, 0), 1)
        for frac in (0.0, 0.5, 1.0):
            y = int(bottom - frac * (bottom - top))
            cv2.putText(panel, f"{frac * top_value:.3g}", (4, y + 4), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4, (0, 0, 0), 1, cv2.LINE_AA)
        n = max(len(values), 1)
        xs = left + (np.arange(len(values)) + 0.5) * (right - left) / n
        ys = bottom - values / top_value * (bottom - top)
        pts = np.stack([xs, ys], -1).round().astype(np.int32)
        if len(pts) > 1:
            cv2.polylines(panel, [pts], False, (30, 90, 200), 1, cv2.LINE_AA)
        if values.size:
            mean_y = int(round(bottom - values.mean() / top_value * (bottom - top)))
            for x in range(left, right, 12):
                cv2.line(panel, (x, mean_y), (min(x + 6, right), mean_y), (200, 60, 60), 1)
            label = f"{name}: mean {values.mean():.3g}, max {values.max():.3g} (frame {values.argmax()})"
        else:
            label = f"{name}: no frames"
        cv2.putText(panel, label, (left, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
        cv2.putText(panel, "frame", (right - 50, panel_height - 8), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, (0, 0, 0), 1, cv2.LINE_AA)
        panels.append(panel)
    if title:
        head = np.full((30, width, 3), 255, np.uint8)
        cv2.putText(head, title, (10, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        panels.insert(0, head)
    return np.concatenate(panels, 0)
