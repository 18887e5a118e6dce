"""The contact sheet of who is in the subject (previews/identity.png), and its terminal listing.

    image = identity_sheet(table, decision, title="talk.mp4")     # [H, 960, 3] uint8 RGB
    lines = shot_lines(decision)                                  # one line per shot

One row per face track ("shot": one person between two cuts): its number (what --keep-shots /
--drop-shots take), its video frames, up to six thumbnails spread over it, its distance to the
target's centre, and KEPT / EXCLUDED / AMBIGUOUS in large coloured letters, so a person sees at
a glance who is in the subject. The header gives the target's limits.
"""

from __future__ import annotations

import cv2
import numpy as np

from metatalk_jax.tracking.face_tracks import THUMB, FaceTable
from metatalk_jax.tracking.identity_decision import EXCLUDED, KEPT, UNSURE, IdentityDecision

FONT = cv2.FONT_HERSHEY_SIMPLEX
WIDTH = 960
ROW = THUMB + 16
HEADER = 64
LABEL_COLOURS = {KEPT: (40, 150, 60), EXCLUDED: (200, 50, 50), UNSURE: (230, 140, 20)}  # RGB
LABEL_WORDS = {KEPT: "KEPT", EXCLUDED: "EXCLUDED", UNSURE: "AMBIGUOUS"}
MAX_ROWS = 60
THUMBS = 6


def _text(image, text, x, y, scale=0.45, colour=(0, 0, 0), thickness=1):
    cv2.putText(image, text, (int(x), int(y)), FONT, scale, colour, thickness, cv2.LINE_AA)


def _row(table: FaceTable, shot, decision: IdentityDecision) -> np.ndarray:
    row = np.full((ROW, WIDTH, 3), 255, np.uint8)
    _text(row, f"#{shot.number}", 8, 34, 0.9, thickness=2)
    _text(row, f"frames {shot.first}-{shot.last}", 8, 56, 0.42)
    _text(row, f"({shot.frames} with a face)", 8, 74, 0.38, (70, 70, 70))
    thumbs = table.thumbs_of(shot.number)[:THUMBS]
    x = 120
    for thumb in thumbs:
        row[8:8 + THUMB, x:x + THUMB] = thumb
        x += THUMB + 4
    if not len(thumbs):
        _text(row, "(no descriptor)", x, 44)
    x = 120 + THUMBS * (THUMB + 4) + 8
    distance = ("distance -" if not np.isfinite(shot.distance)
                else f"distance {shot.distance:.2f}")
    _text(row, distance, x, 30, 0.5)
    _text(row, shot.why[:44], x, 52, 0.36, (70, 70, 70))
    colour = LABEL_COLOURS[shot.decision]
    cv2.rectangle(row, (WIDTH - 200, 12), (WIDTH - 10, ROW - 12), colour, -1)
    word = LABEL_WORDS[shot.decision]
    size = cv2.getTextSize(word, FONT, 0.9, 2)[0][0]
    _text(row, word, WIDTH - 105 - size / 2, ROW / 2 + 10, 0.9, (255, 255, 255), 2)
    cv2.line(row, (0, ROW - 1), (WIDTH, ROW - 1), (210, 210, 210), 1)
    return row


def identity_sheet(table: FaceTable, decision: IdentityDecision, *, title: str) -> np.ndarray:
    """[H, WIDTH, 3] uint8 RGB: the header, then one row per shot (at most MAX_ROWS: the kept
    and ambiguous ones first, then the longest; a last line says how many are not shown)."""
    shots = decision.shots
    if len(shots) > MAX_ROWS:
        order = sorted(shots, key=lambda s: (s.decision == EXCLUDED, -s.frames))[:MAX_ROWS]
        shown = sorted(order, key=lambda s: s.number)
    else:
        shown = shots
    header = np.full((HEADER, WIDTH, 3), 245, np.uint8)
    kept = sum(s.frames for s in shots if s.decision == KEPT)
    _text(header, f"{title}: who is in the subject ({kept} frames of the target kept)", 8, 24,
          0.6)
    _text(header, f"target #{decision.seed}; kept within {decision.keep_limit:.2f} of its centre "
                  f"(its own spread, 90th pct {decision.spread_q90:.2f}), ambiguous up to "
                  f"{decision.exclude_limit:.2f}, excluded beyond", 8, 48, 0.42)
    rows = [header] + [_row(table, s, decision) for s in shown]
    if len(shown) < len(shots):
        more = np.full((28, WIDTH, 3), 255, np.uint8)
        _text(more, f"... and {len(shots) - len(shown)} more short excluded shots "
                    "(report.json lists all)", 8, 20)
        rows.append(more)
    return np.concatenate(rows, 0)


def shot_lines(decision: IdentityDecision, limit: int = 30) -> list[str]:
    """One line per shot for the terminal: number, decision, frames, distance, why (the kept
    and ambiguous ones first when there are more than `limit`)."""
    shots = decision.shots
    if len(shots) > limit:
        shots = sorted(sorted(shots, key=lambda s: (s.decision == EXCLUDED, -s.frames))[:limit],
                       key=lambda s: s.number)
    lines = []
    for s in shots:
        d = "-" if not np.isfinite(s.distance) else f"{s.distance:.2f}"
        lines.append(f"shot #{s.number}: {LABEL_WORDS[s.decision].lower():9s} frames "
                     f"{s.first}-{s.last} ({s.frames}), distance {d}: {s.why}")
    if len(shots) < len(decision.shots):
        lines.append(f"... {len(decision.shots) - len(shots)} more short excluded shots "
                     "(report.json)")
    return lines
