"""Tracking one face through a video: detect per frame, fill short gaps, smooth along time.

    backend = make_backend("dlib")
    track = track_video(frames, backend, source="talk.mp4")   # frames: iterable of RGB uint8
    track.to_npz("talk.track.npz")

    # one person held through cuts and crowds (what `prepare` does): every face becomes a
    # short track with descriptors, and identity is decided per track for the whole video
    track = track_video(frames, backend, source="film.mp4", faces=FaceTracks(describe),
                        decide=lambda table: decide_identity(table, seed=...),
                        cuts=ShotCuts(), exclude_runs=True)
    track.identity                             # the decision per face track (and its table)
    subject_track = track.kept_only()          # the frames that show the target person
    track_from_faces(table, decision, ...)     # the same from a saved FaceTable, no video

Frames are consumed as a stream (a generator is fine); only the per-frame landmarks and boxes
are kept, [T,68,2] + [T,4] float32, so memory does not grow with the frame size.

Every frame ends with a status (tracking/identity.py): tracked (the target's face detected),
filled (a short run without any face inside one shot, interpolated), no_face, other_person,
ambiguous or dropped (excluded: the target is absent; only other people are there; only faces
that may or may not be the target; only shots the user dropped). Without exclude_runs a run
that cannot be filled is an error, as for a single-person video; with it the run is excluded
and listed (`excluded_ranges`), and only too small a remainder is an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from metatalk_jax.atomic_files import write_npz
from metatalk_jax.errors import InputError
from scipy.ndimage import gaussian_filter1d

from metatalk_jax.tracking.backends import FaceBackend
from metatalk_jax.tracking.face_tracks import FaceTable, FaceTracks
from metatalk_jax.tracking.identity import (AMBIGUOUS, EXCLUDED_STATUSES, FILLED, NO_FACE,
                                            OTHER_PERSON, STATUS_NAMES, TRACKED, ShotCuts,
                                            box_area, box_iou)
from metatalk_jax.tracking.identity_decision import IdentityDecision, frame_statuses

NUM_LANDMARKS = 68
STATUS_CODES = {name: code for code, name in STATUS_NAMES.items()}


class TrackingError(InputError):
    """A video that cannot be tracked; the message is one line starting with the video's name."""


@dataclass
class FaceTrack:
    """One face through T frames, in continuous pixels (pixel (i, j) centred at (j+.5, i+.5)).

    landmarks: [T,68,2] float32 pixels, x right, y down, iBUG-68 order (36/45 outer eye
        corners, 30 nose tip, 48-67 mouth); interpolated in gaps, then smoothed along time.
    boxes: [T,4] float32 pixels (x0, y0, x1, y1), pixel edges: the detector's box of the chosen
        face (not the landmark extent: on the carphone clip dlib's box is ~6% wider than the
        68 points' span), filled and smoothed like the landmarks.
    detected: [T] bool, False on frames whose values were filled in (or excluded).
    gaps: inclusive (first_frame, last_frame) runs that were filled in, in row order.
    frame_size: (H, W) of the video in pixels.
    status: [T] int8 per-row status (identity.STATUS_NAMES); the landmarks and boxes of
        excluded rows (identity.EXCLUDED_STATUSES) are NaN.
    cuts: rows that start a new stretch: shot cuts in a whole-video track; in a `kept_only`
        track, every row after a cut or after excluded frames.
    source_frames: [T] int64, the video frame of each row (arange(T) for a whole-video track).
    identity: (FaceTable, IdentityDecision) of a track decided per face track; not saved.
    """

    landmarks: np.ndarray
    boxes: np.ndarray
    detected: np.ndarray
    gaps: list[tuple[int, int]] = field(default_factory=list)
    frame_size: tuple[int, int] = (0, 0)
    status: np.ndarray | None = None
    cuts: list[int] = field(default_factory=list)
    source_frames: np.ndarray | None = None
    identity: tuple[FaceTable, IdentityDecision] | None = None

    def __post_init__(self):
        t = self.num_frames
        if self.status is None:
            self.status = np.where(self.detected, TRACKED, FILLED).astype(np.int8)
        if self.source_frames is None:
            self.source_frames = np.arange(t, dtype=np.int64)

    @property
    def num_frames(self) -> int:
        return int(self.landmarks.shape[0])

    @property
    def kept(self) -> np.ndarray:
        """[T] bool: rows that show the target (tracked or filled)."""
        return (self.status == TRACKED) | (self.status == FILLED)

    def excluded_ranges(self) -> dict[str, list[tuple[int, int]]]:
        """{"no_face": [(first, last), ...], "other_person": [...], "ambiguous": [...],
        "dropped": [...]}: inclusive video-frame ranges of the excluded rows, by reason."""
        out = {}
        for code in EXCLUDED_STATUSES:
            runs = _missing_runs(self.status != code)
            out[STATUS_NAMES[code]] = [(int(self.source_frames[a]), int(self.source_frames[b]))
                                       for a, b in runs]
        return out

    def summary(self) -> dict:
        """{'frames', 'detected', 'interpolated', 'gaps', 'kept', 'excluded', 'cuts'}: counts,
        the filled runs, the excluded frames by reason (count and ranges) and the shot cuts."""
        detected = int(np.count_nonzero(self.status == TRACKED))
        excluded = {name: {"frames": int(sum(b - a + 1 for a, b in ranges)),
                           "ranges": [tuple(r) for r in ranges]}
                    for name, ranges in self.excluded_ranges().items()}
        return {"frames": self.num_frames, "detected": detected,
                "interpolated": int(np.count_nonzero(self.status == FILLED)),
                "gaps": [tuple(g) for g in self.gaps], "kept": int(np.count_nonzero(self.kept)),
                "excluded": excluded, "cuts": [int(c) for c in self.cuts]}

    def kept_only(self) -> "FaceTrack":
        """The rows that show the target, as their own track (what a subject is made of):
        source_frames maps each row to its video frame, gaps are in row numbers, and `cuts`
        lists the rows that follow a shot cut or excluded frames."""
        rows = np.flatnonzero(self.kept)
        position = np.full(self.num_frames, -1, np.int64)
        position[rows] = np.arange(len(rows))
        breaks = set(self.cuts) | {int(r) for r in rows[1:][np.diff(rows) > 1]}
        return FaceTrack(landmarks=self.landmarks[rows], boxes=self.boxes[rows],
                         detected=self.detected[rows],
                         gaps=[(int(position[a]), int(position[b])) for a, b in self.gaps],
                         frame_size=self.frame_size, status=self.status[rows],
                         cuts=sorted(int(position[r]) for r in breaks
                                     if r < self.num_frames and position[r] > 0),
                         source_frames=self.source_frames[rows])

    def to_npz(self, path: str) -> str:
        """Writes the track to `path` (uncompressed npz) atomically: temp name, then rename."""
        return write_npz(path, landmarks=self.landmarks.astype(np.float32),
                         boxes=self.boxes.astype(np.float32),
                         detected=self.detected.astype(bool),
                         gaps=np.asarray(self.gaps, np.int64).reshape(-1, 2),
                         frame_size=np.asarray(self.frame_size, np.int64),
                         status=self.status.astype(np.int8),
                         cuts=np.asarray(self.cuts, np.int64),
                         source_frames=self.source_frames.astype(np.int64))

    @classmethod
    def from_npz(cls, path: str) -> "FaceTrack":
        with np.load(path, allow_pickle=False) as data:
            optional = {k: data[k] for k in ("status", "source_frames") if k in data.files}
            return cls(landmarks=data["landmarks"].astype(np.float32),
                       boxes=data["boxes"].astype(np.float32),
                       detected=data["detected"].astype(bool),
                       gaps=[(int(a), int(b)) for a, b in data["gaps"]],
                       frame_size=tuple(int(v) for v in data["frame_size"]),
                       cuts=[int(c) for c in data["cuts"]] if "cuts" in data.files else [],
                       **optional)


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
        raise InputError(f"sigma_frames must be >= 0, got {sigma_frames}")
    points = np.asarray(points)
    if sigma_frames == 0 or points.shape[0] < 2:
        return points.astype(np.float32, copy=True)
    # float64 so that a long sum of tiny weights does not lose the sub-pixel part.
    smoothed = gaussian_filter1d(points.astype(np.float64), float(sigma_frames), axis=0,
                                 mode="nearest", truncate=4.0)
    return smoothed.astype(np.float32)


def choose_face(boxes: np.ndarray, previous: np.ndarray | None) -> int:
    """Index into [N,4+] boxes of the face to follow.

    The one overlapping `previous` (the last tracked box) most; the largest when there is no
    previous box or none overlaps it (the face moved too far to associate, so start afresh).
    """
    boxes = np.asarray(boxes, np.float64)[:, :4]
    if previous is not None:
        overlap = box_iou(np.asarray(previous, np.float64)[:4], boxes)
        if overlap.max() > 0:
            return int(np.argmax(overlap))
    return int(np.argmax(box_area(boxes)))


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


def _describe_range(first: int, last: int) -> str:
    return f"frames {first}-{last} ({last - first + 1} frames)"


def resolve_runs(status: np.ndarray, cuts: list[int], max_gap: int, *, name: str,
                 exclude_runs: bool) -> np.ndarray:
    """Marks the runs without the target that can be filled as FILLED; returns the new status.

    A run is filled when every frame of it has no face at all, it is at most max_gap frames
    long and no shot cut falls inside it or at its end (the frames either side are of one
    shot). The others stay excluded with exclude_runs; without it they raise TrackingError
    (one line), the longest run without a face first.
    """
    status = np.array(status, np.int8)
    cut_set = set(int(c) for c in cuts)
    unfillable = []
    for first, last in _missing_runs(status == TRACKED):
        faceless = bool(np.all(status[first:last + 1] == NO_FACE))
        one_shot = not any(c in cut_set for c in range(first, last + 2))
        if faceless and last - first + 1 <= max_gap and one_shot:
            status[first:last + 1] = FILLED
        else:
            unfillable.append((first, last))
    if unfillable and not exclude_runs:
        others = [r for r in unfillable
                  if np.any(np.isin(status[r[0]:r[1] + 1], (OTHER_PERSON, AMBIGUOUS)))]
        if others:
            first, last = others[0]
            raise TrackingError(f"{name}: another person instead of the target in "
                                f"{_describe_range(first, last)}")
        first, last = max(unfillable, key=lambda r: r[1] - r[0])
        more = f"; {len(unfillable) - 1} more such gaps" if len(unfillable) > 1 else ""
        why = (f"at most {max_gap} can be filled in" if last - first + 1 > max_gap
               else "a shot cut inside it")
        raise TrackingError(f"{name}: no face in frames {first}-{last} ({last - first + 1} "
                            f"frames; {why}{more})")
    return status


def _check_trackable(name: str, status: np.ndarray, any_face: bool, *,
                     min_tracked_fraction: float, min_kept_fraction: float,
                     min_kept_frames: int) -> None:
    """Raises TrackingError (one line) when too little of the video shows the target."""
    t = len(status)
    if t == 0:
        raise TrackingError(f"{name}: no frames")
    if not any_face:
        raise TrackingError(f"{name}: no face found in any of {t} frames")
    tracked = int(np.count_nonzero(status == TRACKED))
    if tracked == 0:
        raise TrackingError(f"{name}: the chosen person is in none of the {t} frames (other "
                            f"faces only); choose another with --face X,Y")
    kept = tracked + int(np.count_nonzero(status == FILLED))
    if kept < min_kept_fraction * t or kept < min_kept_frames:
        absent = int(np.count_nonzero(status == NO_FACE))
        other = int(np.count_nonzero(np.isin(status, (OTHER_PERSON, STATUS_CODES["dropped"]))))
        unsure = int(np.count_nonzero(status == AMBIGUOUS))
        unsure = f", {unsure} with a face that may or may not be them" if unsure else ""
        raise TrackingError(
            f"{name}: only {kept} of {t} frames ({kept / t:.0%}) show the target person "
            f"(needs {min_kept_fraction:.0%} and {min_kept_frames} frames): {absent} without "
            f"them, {other} with another person instead{unsure}; trim the video to the target's "
            f"shots or choose another person with --face X,Y")
    if tracked < min_tracked_fraction * kept:
        raise TrackingError(f"{name}: a face was tracked in only {tracked} of {kept} frames "
                            f"(needs {min_tracked_fraction:.0%})")


def _segments(kept: np.ndarray, cuts: list[int]) -> list[tuple[int, int]]:
    """Inclusive runs of kept frames, also split at shot cuts."""
    out = []
    for first, last in _missing_runs(~np.asarray(kept, bool)):
        starts = [first] + sorted(c for c in cuts if first < c <= last) + [last + 1]
        out += [(a, b - 1) for a, b in zip(starts[:-1], starts[1:])]
    return out


class NoFaceYet(TrackingError):
    """No face in the first frames: raised while tracking, before the rest is decoded."""


def _scan(frames, backend: FaceBackend, name: str, *, faces, cuts, progress,
          first_face_frames, no_face_hint):
    """The per-frame pass of track_video: detect, then either hand every face to `faces`
    (FaceTracks) or choose one (choose_face) and take its landmarks. Returns (landmarks [T,68,2]
    list, boxes [T,4] list, status per frame before filling (TRACKED / NO_FACE; placeholders
    with `faces`), shot-cut frames, (H, W), whether any face was seen)."""
    landmarks, boxes, found_status, cut_frames = [], [], [], []
    frame_size, previous, any_face = None, None, False
    for t, frame in enumerate(frames):
        size = tuple(np.shape(frame)[:2])
        if frame_size is None:
            frame_size = size
        elif size != frame_size:
            raise TrackingError(f"{name}: frame {t} is {size[1]}x{size[0]}, "
                                f"frame 0 was {frame_size[1]}x{frame_size[0]}")
        cut = bool(cuts(frame)) if cuts is not None else False
        if cut:
            cut_frames.append(t)
            previous = None
        found = np.asarray(backend.detect(frame), np.float32).reshape(-1, 5)
        any_face = any_face or len(found) > 0
        marks: dict[int, np.ndarray] = {}

        def landmarks_of(i: int, frame=frame, found=found, marks=marks) -> np.ndarray:
            if i not in marks:
                points = np.asarray(backend.landmarks(frame, found[i]), np.float32)
                if points.shape != (NUM_LANDMARKS, 2):
                    raise ValueError(f"backend returned landmarks {points.shape}, "
                                     "expected [68,2]")
                marks[i] = points
            return marks[i]

        chosen = None
        if faces is not None:
            faces.observe(t, frame, found, landmarks_of, cut)
        elif len(found):
            chosen = choose_face(found, previous)
        if chosen is not None:
            previous = found[chosen, :4]
            landmarks.append(landmarks_of(chosen))
            boxes.append(found[chosen, :4])
        else:
            # Placeholders keep the arrays aligned with frame numbers; filled or NaN later.
            landmarks.append(np.zeros((NUM_LANDMARKS, 2), np.float32))
            boxes.append(np.zeros(4, np.float32))
        found_status.append(TRACKED if chosen is not None else NO_FACE)
        if progress is not None:
            progress.update(1)
        if not any_face and first_face_frames and t + 1 >= first_face_frames:
            hint = no_face_hint(frame) if no_face_hint is not None else ""
            raise NoFaceYet(f"{name}: no face found in the first {t + 1} frames{hint}")

    return landmarks, boxes, found_status, cut_frames, frame_size, any_face


def track_video(frames: Iterable[np.ndarray], backend: FaceBackend, *, source: str,
                max_gap: int = 12, min_tracked_fraction: float = 0.8,
                smoothing_sigma: float = 1.0, progress=None,
                faces: FaceTracks | None = None, decide=None, cuts: ShotCuts | None = None,
                exclude_runs: bool = False, min_kept_fraction: float = 0.0,
                min_kept_frames: int = 1, first_face_frames: int | None = None,
                no_face_hint=None) -> FaceTrack:
    """Tracks one face through `frames` (RGB uint8 [H,W,3] each, any iterable) -> FaceTrack.

    Per frame: backend.detect; then either every face goes to `faces` (FaceTracks: short
    tracks with descriptors) and after the stream decide(FaceTable) -> IdentityDecision says
    which tracks are the target (tracking/identity_decision.py; the track's `identity` keeps
    both); or, without `faces`, choose_face picks the face to follow (most overlap with the
    last tracked box; the largest first) and backend.landmarks is taken in its box. cuts: a
    shot cut detector (a cut resets box continuity and is never filled across). Then runs
    without the target are filled or excluded (resolve_runs, exclude_runs), landmarks and boxes
    are smoothed with smooth_track(smoothing_sigma frames; 0 = off) within each stretch of kept
    frames. `source` names the video in errors; `progress` (e.g. metatalk_jax.progress.Progress;
    the caller closes it) gets update(1) per frame.

    first_face_frames: when no face at all is found in this many first frames, NoFaceYet is
    raised at once (a video without a face costs seconds, not a whole pass); no_face_hint(frame)
    -> str is appended to that message (e.g. "the video looks rotated").

    Raises TrackingError when no face is found, a run cannot be filled (without exclude_runs),
    fewer than min_kept_fraction (or min_kept_frames) of the frames show the target, or fewer
    than min_tracked_fraction of the kept frames have a detected face.
    """
    if max_gap < 0 or not 0.0 <= min_tracked_fraction <= 1.0:
        raise InputError(f"need max_gap >= 0 and 0 <= min_tracked_fraction <= 1, got "
                         f"{max_gap} and {min_tracked_fraction}")
    if (faces is None) != (decide is None):
        raise ValueError("track_video: faces and decide go together")
    name = os.path.basename(str(source)) or str(source)
    landmarks, boxes, found_status, cut_frames, frame_size, any_face = _scan(
        frames, backend, name, faces=faces, cuts=cuts, progress=progress,
        first_face_frames=first_face_frames, no_face_hint=no_face_hint)
    checks = dict(max_gap=max_gap, min_tracked_fraction=min_tracked_fraction,
                  smoothing_sigma=smoothing_sigma, exclude_runs=exclude_runs,
                  min_kept_fraction=min_kept_fraction, min_kept_frames=min_kept_frames)
    if faces is not None:
        table = faces.finish(len(found_status), frame_size or (0, 0), cut_frames)
        if not any_face:
            _check_trackable(name, np.asarray(found_status, np.int8), any_face,
                             min_tracked_fraction=min_tracked_fraction,
                             min_kept_fraction=min_kept_fraction,
                             min_kept_frames=min_kept_frames)
        return track_from_faces(table, decide(table), source=source, **checks)
    return _finish(name, np.asarray(found_status, np.int8), landmarks, boxes, cut_frames,
                   frame_size, any_face, **checks)


def track_from_faces(table: FaceTable, decision: IdentityDecision, *, source: str,
                     max_gap: int = 12, min_tracked_fraction: float = 0.8,
                     smoothing_sigma: float = 1.0, exclude_runs: bool = True,
                     min_kept_fraction: float = 0.0, min_kept_frames: int = 1) -> FaceTrack:
    """The FaceTrack of a decided FaceTable: per frame, the kept track's face (landmarks and
    box) and the status of frame_statuses; then filled, checked and smoothed as track_video
    does. Needs no video: a saved table is decided again in milliseconds."""
    name = os.path.basename(str(source)) or str(source)
    status, chosen = frame_statuses(table, decision)
    t = table.num_frames
    landmarks = np.zeros((t, NUM_LANDMARKS, 2), np.float32)
    boxes = np.zeros((t, 4), np.float32)
    rows = chosen >= 0
    landmarks[rows] = table.obs_landmarks[chosen[rows]]
    boxes[rows] = table.obs_box[chosen[rows]]
    track = _finish(name, status, list(landmarks), list(boxes), list(table.cuts),
                    table.frame_size, len(table.obs_track) > 0, max_gap=max_gap,
                    min_tracked_fraction=min_tracked_fraction, smoothing_sigma=smoothing_sigma,
                    exclude_runs=exclude_runs, min_kept_fraction=min_kept_fraction,
                    min_kept_frames=min_kept_frames)
    track.identity = (table, decision)
    return track


def _finish(name, status, landmarks, boxes, cut_frames, frame_size, any_face, *, max_gap,
            min_tracked_fraction, smoothing_sigma, exclude_runs, min_kept_fraction,
            min_kept_frames) -> FaceTrack:
    """Per-frame statuses and the chosen faces' points -> the checked, filled, smoothed track."""
    if len(status) == 0 or not any_face:
        _check_trackable(name, status, any_face, min_tracked_fraction=min_tracked_fraction,
                         min_kept_fraction=min_kept_fraction, min_kept_frames=min_kept_frames)
    status = resolve_runs(status, cut_frames, max_gap, name=name, exclude_runs=exclude_runs)
    _check_trackable(name, status, any_face, min_tracked_fraction=min_tracked_fraction,
                     min_kept_fraction=min_kept_fraction, min_kept_frames=min_kept_frames)
    detected = status == TRACKED
    filled = _missing_runs(~(status == FILLED))
    landmarks = fill_gaps(np.stack(landmarks), detected, filled)
    boxes = fill_gaps(np.stack(boxes), detected, filled)
    kept = detected | (status == FILLED)
    landmarks[~kept], boxes[~kept] = np.nan, np.nan
    for first, last in _segments(kept, cut_frames):
        landmarks[first:last + 1] = smooth_track(landmarks[first:last + 1], smoothing_sigma)
        boxes[first:last + 1] = smooth_track(boxes[first:last + 1], smoothing_sigma)
    return FaceTrack(landmarks=landmarks, boxes=boxes, detected=detected, gaps=filled,
                     frame_size=frame_size, status=status, cuts=cut_frames)
