"""Tracking one face through a video: detect per frame, fill short gaps, smooth along time.

    backend = make_backend("dlib")
    track = track_video(frames, backend, source="talk.mp4")   # frames: iterable of RGB uint8
    track.to_npz("talk.track.npz")

Frames are consumed as a stream (a generator is fine); only the per-frame landmarks and boxes
are kept, [T,68,2] + [T,4] float32, so memory does not grow with the frame size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from metatalk_jax.atomic_files import write_npz
from scipy.ndimage import gaussian_filter1d

from metatalk_jax.tracking.backends import FaceBackend

NUM_LANDMARKS = 68


class TrackingError(ValueError):
    """A video that cannot be tracked; the message is one line starting with the video's name."""


@dataclass
class FaceTrack:
    """One face through T frames, in continuous pixels (pixel (i, j) centred at (j+.5, i+.5)).

    landmarks: [T,68,2] float32 pixels, x right, y down, iBUG-68 order (36/45 outer eye
        corners, 30 nose tip, 48-67 mouth); interpolated in gaps, then smoothed along time.
    boxes: [T,4] float32 pixels (x0, y0, x1, y1), pixel edges: the detector's box of the chosen
        face (not the landmark extent: on the carphone clip dlib's box is ~6% wider than the
        68 points' span), filled and smoothed like the landmarks.
    detected: [T] bool, False on frames whose values were filled in.
    gaps: inclusive (first_frame, last_frame) runs that were filled in, in frame order.
    frame_size: (H, W) of the video in pixels.
    """

    landmarks: np.ndarray
    boxes: np.ndarray
    detected: np.ndarray
    gaps: list[tuple[int, int]] = field(default_factory=list)
    frame_size: tuple[int, int] = (0, 0)

    @property
    def num_frames(self) -> int:
        return int(self.landmarks.shape[0])

    def summary(self) -> dict:
        """{'frames', 'detected', 'interpolated', 'gaps'}: counts and the filled runs."""
        detected = int(np.count_nonzero(self.detected))
        return {"frames": self.num_frames, "detected": detected,
                "interpolated": self.num_frames - detected,
                "gaps": [tuple(g) for g in self.gaps]}

    def to_npz(self, path: str) -> str:
        """Writes the track to `path` (uncompressed npz) atomically: temp name, then rename."""
        return write_npz(path, landmarks=self.landmarks.astype(np.float32),
                         boxes=self.boxes.astype(np.float32),
                         detected=self.detected.astype(bool),
                         gaps=np.asarray(self.gaps, np.int64).reshape(-1, 2),
                         frame_size=np.asarray(self.frame_size, np.int64))

    @classmethod
    def from_npz(cls, path: str) -> "FaceTrack":
        with np.load(path, allow_pickle=False) as data:
            return cls(landmarks=data["landmarks"].astype(np.float32),
                       boxes=data["boxes"].astype(np.float32),
                       detected=data["detected"].astype(bool),
                       gaps=[(int(a), int(b)) for a, b in data["gaps"]],
                       frame_size=tuple(int(v) for v in data["frame_size"]))


def smooth_track(points: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian low-pass along time (axis 0) of [T,K,2] points (any [T,...] works); same shape.

    sigma_frames is the kernel's standard deviation in frames (0 returns a float32 copy). The
    kernel is symmetric and sums to 1, so its first moment is zero: a constant or linearly moving
    point comes out unchanged wherever the kernel (radius 4 sigma) fits inside the video. Within
    that radius of the first/last frame the ends are padded by repeating the end frame, which pulls
    a moving point towards the end value. Independent (white) jitter of std s comes out with std
    s * sqrt(sum_i w_i^2): 0.80 for sigma 0.5, 0.53 for sigma 1, 0.38 for sigma 2. The price is
    fast motion: at 30 fps, sigma 1 keeps 92% of a 2 Hz, 70% of a 4 Hz and 45% of a 6 Hz
    oscillation (gain exp(-2 pi^2 sigma^2 f^2), f in cycles per frame), so keep sigma small where
    lip motion matters.
    """
    if sigma_frames < 0:
        raise ValueError(f"sigma_frames must be >= 0, got {sigma_frames}")
    points = np.asarray(points)
    if sigma_frames == 0 or points.shape[0] < 2:
        return points.astype(np.float32, copy=True)
    # float64 so that a long sum of tiny weights does not lose the sub-pixel part.
    smoothed = gaussian_filter1d(points.astype(np.float64), float(sigma_frames), axis=0,
                                 mode="nearest", truncate=4.0)
    return smoothed.astype(np.float32)


def _area(boxes: np.ndarray) -> np.ndarray:
    """[..., 4] (x0, y0, x1, y1) -> [...] area in square pixels (0 for an inverted box)."""
    return (np.clip(boxes[..., 2] - boxes[..., 0], 0, None)
            * np.clip(boxes[..., 3] - boxes[..., 1], 0, None))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one (x0, y0, x1, y1) box with [N,4] boxes -> [N]."""
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    union = _area(box) + _area(boxes) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def choose_face(boxes: np.ndarray, previous: np.ndarray | None) -> int:
    """Index into [N,4+] boxes of the face to follow.

    The one overlapping `previous` (the last tracked box) most; the largest when there is no
    previous box or none overlaps it (the face moved too far to associate, so start afresh).
    """
    boxes = np.asarray(boxes, np.float64)[:, :4]
    if previous is not None:
        overlap = _iou(np.asarray(previous, np.float64)[:4], boxes)
        if overlap.max() > 0:
            return int(np.argmax(overlap))
    return int(np.argmax(_area(boxes)))


def _missing_runs(detected: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (first, last) runs of False in a [T] bool array, in order."""
    runs, start = [], None
    for t, ok in enumerate(detected):
        if not ok and start is None:
            start = t
        elif ok and start is not None:
            runs.append((start, t - 1))
            start = None
    if start is not None:
        runs.append((start, len(detected) - 1))
    return runs


def fill_gaps(values: np.ndarray, detected: np.ndarray,
              runs: list[tuple[int, int]]) -> np.ndarray:
    """Fills [T,...] values on the given missing runs; returns a new float32 array.

    Interior runs: linear interpolation in time between the tracked frames either side. Runs at
    the start or end: copies of the nearest tracked frame (extrapolating a motion would drift).
    """
    out = np.array(values, np.float32)
    T = len(detected)
    for first, last in runs:
        before, after = first - 1, last + 1
        if before < 0 and after >= T:
            raise ValueError("no tracked frame to fill from")
        if before < 0:
            out[first:last + 1] = out[after]
        elif after >= T:
            out[first:last + 1] = out[before]
        else:
            w = (np.arange(first, last + 1, dtype=np.float64) - before) / (after - before)
            w = w.reshape((-1,) + (1,) * (out.ndim - 1))
            out[first:last + 1] = ((1 - w) * out[before] + w * out[after]).astype(np.float32)
    return out


def _check_trackable(name: str, detected: np.ndarray, runs: list[tuple[int, int]],
                     max_gap: int, min_tracked_fraction: float) -> None:
    """Raises TrackingError (one line) when the detections cannot make a whole track."""
    T, found = len(detected), int(np.count_nonzero(detected))
    if T == 0:
        raise TrackingError(f"{name}: no frames")
    if found == 0:
        raise TrackingError(f"{name}: no face found in any of {T} frames")
    # A long gap is checked before the overall fraction: it names the frames to look at.
    too_long = [r for r in runs if r[1] - r[0] + 1 > max_gap]
    if too_long:
        first, last = max(too_long, key=lambda r: r[1] - r[0])
        more = f"; {len(too_long) - 1} more such gaps" if len(too_long) > 1 else ""
        raise TrackingError(f"{name}: no face in frames {first}-{last} ({last - first + 1} frames;"
                            f" at most {max_gap} can be filled in{more})")
    if found < min_tracked_fraction * T:
        raise TrackingError(f"{name}: a face was tracked in only {found} of {T} frames "
                            f"(needs {min_tracked_fraction:.0%})")


def track_video(frames: Iterable[np.ndarray], backend: FaceBackend, *, source: str,
                max_gap: int = 12, min_tracked_fraction: float = 0.8,
                smoothing_sigma: float = 1.0, progress=None) -> FaceTrack:
    """Tracks one face through `frames` (RGB uint8 [H,W,3] each, any iterable) -> FaceTrack.

    Per frame: backend.detect, choose_face (most overlap with the last tracked box; the largest
    first), backend.landmarks in that box. Then runs of up to `max_gap` frames without a face are
    filled (fill_gaps) and listed in `gaps`, and landmarks and boxes are smoothed with
    smooth_track(smoothing_sigma frames; 0 = off). `source` names the video in errors;
    `progress` (e.g. metatalk_jax.progress.Progress; the caller closes it) gets update(1) per
    frame.

    Raises TrackingError when no face is found, a run without a face is longer than max_gap, or
    fewer than min_tracked_fraction of the frames have a detected face.
    """
    if max_gap < 0 or not 0.0 <= min_tracked_fraction <= 1.0:
        raise ValueError(f"need max_gap >= 0 and 0 <= min_tracked_fraction <= 1, got "
                         f"{max_gap} and {min_tracked_fraction}")
    name = os.path.basename(str(source)) or str(source)
    landmarks, boxes, detected = [], [], []
    frame_size, previous = None, None
    for t, frame in enumerate(frames):
        size = tuple(np.shape(frame)[:2])
        if frame_size is None:
            frame_size = size
        elif size != frame_size:
            raise TrackingError(f"{name}: frame {t} is {size[1]}x{size[0]}, "
                                f"frame 0 was {frame_size[1]}x{frame_size[0]}")
        found = np.asarray(backend.detect(frame), np.float32).reshape(-1, 5)
        if len(found):
            box = found[choose_face(found, previous)]
            points = np.asarray(backend.landmarks(frame, box), np.float32)
            if points.shape != (NUM_LANDMARKS, 2):
                raise ValueError(f"backend returned landmarks {points.shape}, expected [68,2]")
            previous = box[:4]
            landmarks.append(points)
            boxes.append(box[:4])
            detected.append(True)
        else:
            # Placeholders keep the arrays aligned with frame numbers; fill_gaps overwrites them.
            landmarks.append(np.zeros((NUM_LANDMARKS, 2), np.float32))
            boxes.append(np.zeros(4, np.float32))
            detected.append(False)
        if progress is not None:
            progress.update(1)

    detected = np.asarray(detected, bool)
    runs = _missing_runs(detected)
    _check_trackable(name, detected, runs, max_gap, min_tracked_fraction)
    landmarks = fill_gaps(np.stack(landmarks), detected, runs)
    boxes = fill_gaps(np.stack(boxes), detected, runs)
    return FaceTrack(landmarks=smooth_track(landmarks, smoothing_sigma),
                     boxes=smooth_track(boxes, smoothing_sigma),
                     detected=detected, gaps=runs, frame_size=frame_size)
