"""Previews a person can look at: the fitted face over the video, and per-frame error curves.

Both are drawn with OpenCV (no plotting library): `overlay_frame` blends the rendered 3DMM face
into the frame and marks the tracked (red) and fitted (green) landmarks under a legend band;
`error_plot` draws one panel per series over the video's frames, with the frames left out of
the subject (another person, no target face) shaded and named in a legend.
"""

from __future__ import annotations

import cv2
import numpy as np

from metatalk_jax.tracking.crop import paste_back

TRACKED_COLOUR = (255, 60, 60)    # RGB
FITTED_COLOUR = (60, 255, 60)
EXCLUDED_COLOURS = {"other_person": (255, 205, 205), "no_face": (215, 215, 215),
                    "ambiguous": (255, 225, 170), "dropped": (205, 205, 255)}
EXCLUDED_WORDS = {"other_person": "another person", "no_face": "no target face",
                  "ambiguous": "maybe another person", "dropped": "dropped by you"}
FONT = cv2.FONT_HERSHEY_SIMPLEX


def legend_band(width: int, entries, *, height: int = 28) -> np.ndarray:
    """[height, width, 3] uint8 white band with one (colour, text) legend entry after another;
    entries that do not fit on the first line go on further lines (the band grows)."""
    lines, line, x = [], [], 8
    for colour, text in entries:
        w = 22 + cv2.getTextSize(text, FONT, 0.45, 1)[0][0] + 16
        if line and x + w > width:
            lines.append(line)
            line, x = [], 8
        line.append((x, colour, text))
        x += w
    lines.append(line)
    band = np.full((height * len(lines), width, 3), 255, np.uint8)
    for row, items in enumerate(lines):
        y = row * height + height // 2
        for x, colour, text in items:
            cv2.circle(band, (x + 6, y), 6, colour, -1, cv2.LINE_AA)
            cv2.circle(band, (x + 6, y), 6, (90, 90, 90), 1, cv2.LINE_AA)   # pale ones show
            cv2.putText(band, text, (x + 18, y + 5), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return band


def overlay_frame(frame: np.ndarray, render_crop: np.ndarray, alpha_crop: np.ndarray,
                  matrix: np.ndarray, tracked: np.ndarray, fitted: np.ndarray, *,
                  opacity: float = 0.6, min_height: int = 432) -> np.ndarray:
    """One preview frame.

    frame [H,W,3] uint8 RGB; render_crop [R,R,3] float in [0,1] and alpha_crop [R,R] the fitted
    face rendered in this frame's crop; matrix [2,3] frame-to-crop map; tracked/fitted [68,2]
    landmarks in frame pixels (continuous coordinates). Small videos are enlarged (nearest
    neighbour) to at least `min_height` rows so the landmarks stay visible. A legend band on top
    names the colours; the result is [legend + scale H, scale W, 3] uint8 RGB.
    """
    out = paste_back(frame, render_crop * 255.0, matrix, mask=alpha_crop * opacity, feather=1)
    scale = max(1, int(np.ceil(min_height / frame.shape[0])))
    if scale > 1:
        out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    radius = max(1, scale)
    for points, colour in ((tracked, TRACKED_COLOUR), (fitted, FITTED_COLOUR)):
        for x, y in np.asarray(points, np.float64) * scale:
            cv2.circle(out, (int(round(x)), int(round(y))), radius, colour, -1, cv2.LINE_AA)
    legend = legend_band(out.shape[1], [(TRACKED_COLOUR, "tracked landmarks (dlib)"),
                                        (FITTED_COLOUR, "fitted 3DMM landmarks"),
                                        ((200, 170, 150), "fitted face (blended)")])
    return np.concatenate([legend, out], axis=0)


def error_plot(series: dict, *, width: int = 960, panel_height: int = 220,
               title: str = "", x: np.ndarray | None = None, total: int | None = None,
               excluded: dict | None = None) -> np.ndarray:
    """[H, W, 3] uint8 RGB plot: one panel per `name -> [T] values` entry, with the mean dashed.

    x: [T] the video frame of each value (default 0..T-1); total: the video's frame count, the
    x axis's span (default T). excluded: {"other_person" | "no_face": [(first, last), ...]}
    inclusive video-frame ranges, shaded in every panel and named in a legend under the title.
    Lines are broken where x jumps (no line is drawn across excluded frames).
    """
    panels = []
    count = len(next(iter(series.values()))) if series else 0
    at = np.arange(count, dtype=np.float64) if x is None else np.asarray(x, np.float64)
    total = int(total if total is not None else (int(at.max()) + 1 if len(at) else 1))
    for name, values in series.items():
        values = np.asarray(values, np.float64)
        panel = np.full((panel_height, width, 3), 255, np.uint8)
        left, right, top, bottom = 70, width - 20, 28, panel_height - 30
        top_value = float(values.max()) * 1.1 if values.size and values.max() > 0 else 1.0
        for reason, ranges in (excluded or {}).items():
            for first, last in ranges:
                x0 = int(left + first * (right - left) / max(total, 1))
                x1 = int(left + (last + 1) * (right - left) / max(total, 1))
                cv2.rectangle(panel, (x0, top), (max(x1, x0 + 1), bottom),
                              EXCLUDED_COLOURS.get(reason, (230, 230, 230)), -1)
        cv2.rectangle(panel, (left, top), (right, bottom), (0, 0, 0), 1)
        for frac in (0.0, 0.5, 1.0):
            y = int(bottom - frac * (bottom - top))
            cv2.putText(panel, f"{frac * top_value:.3g}", (4, y + 4), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4, (0, 0, 0), 1, cv2.LINE_AA)
        xs = left + (at + 0.5) * (right - left) / max(total, 1)
        ys = bottom - values / top_value * (bottom - top)
        pts = np.stack([xs, ys], -1).round().astype(np.int32)
        for piece in np.split(pts, np.flatnonzero(np.diff(at) > 1) + 1):
            if len(piece) > 1:
                cv2.polylines(panel, [piece], False, (30, 90, 200), 1, cv2.LINE_AA)
        if values.size:
            mean_y = int(round(bottom - values.mean() / top_value * (bottom - top)))
            for x in range(left, right, 12):
                cv2.line(panel, (x, mean_y), (min(x + 6, right), mean_y), (200, 60, 60), 1)
            label = (f"{name}: mean {values.mean():.3g}, max {values.max():.3g} "
                     f"(frame {int(at[values.argmax()])})")
        else:
            label = f"{name}: no frames"
        cv2.putText(panel, label, (left, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
        for frac in (0.0, 0.5, 1.0):
            tick = int(round(frac * (total - 1)))
            tx = int(left + (tick + 0.5) * (right - left) / max(total, 1))
            cv2.putText(panel, str(tick), (tx - 8, bottom + 14), FONT, 0.4, (0, 0, 0), 1,
                        cv2.LINE_AA)
        cv2.putText(panel, "video frame", (right - 90, panel_height - 4), FONT, 0.4,
                    (0, 0, 0), 1, cv2.LINE_AA)
        panels.append(panel)
    head = []
    if title:
        band = np.full((30, width, 3), 255, np.uint8)
        cv2.putText(band, title, (10, 21), FONT, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        head.append(band)
    shown = [(EXCLUDED_COLOURS[r], f"excluded: {EXCLUDED_WORDS[r]} "
              f"({sum(b - a + 1 for a, b in ranges)} frames)")
             for r, ranges in (excluded or {}).items() if ranges and r in EXCLUDED_COLOURS]
    if shown:
        head.append(legend_band(width, shown))
    return np.concatenate(head + panels, 0)
