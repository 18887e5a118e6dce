"""Holding one person through a video: face descriptors, shot cuts and the per-frame choice.

    describe = DlibDescriber()                       # dlib's ResNet face descriptor, 128-d
    follower = IdentityFollower(describe)            # the largest, most central face at the start
    follower = IdentityFollower(describe, reference=descriptor_at_point(...))   # the user's pick
    track_video(frames, backend, follower=follower, cuts=ShotCuts(), ...)

A descriptor costs ~0.2 s on a CPU core (about ten times a HOG detection of a 176x144 frame),
so the follower does not describe every face of every frame. Inside one shot the target is
followed by box continuity (the one face overlapping its last box); its identity is confirmed
on the first frame, every `check_every` frames, whenever continuity is lost or ambiguous (no
overlapping face, two overlapping faces, a cut, a gap) and at the end of a shot. When a
confirmation fails, every frame accepted by continuity since the last confirmed one is
reclassified as "another person" (the switch happened somewhere in that window and nothing of
it may reach training). Faces already found not to be the target are remembered by box
continuity too and re-described only every `check_every` frames.

Distances are Euclidean between dlib descriptors; dlib's threshold for "same person" is 0.6
(99.38% on LFW). On the 176x144 carphone clip (face ~45 px wide) the man's own descriptors lie
0.26 from his first one on average (0.51 at most); scikit-image's astronaut photo lies 0.69-0.81
from him at face sizes of 23-91 px.
"""

from __future__ import annotations

import os
from typing import Callable

import cv2
import numpy as np

from metatalk_jax.errors import InputError
from metatalk_jax.tracking.backends import check_frame, default_dlib_model_path

SAME_PERSON_DISTANCE = 0.6
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"

# Per-frame status codes, shared with track.py.
TRACKED, FILLED, NO_FACE, OTHER_PERSON = 0, 1, 2, 3
STATUS_NAMES = {TRACKED: "tracked", FILLED: "filled", NO_FACE: "no_face",
                OTHER_PERSON: "other_person"}


def default_descriptor_model_path() -> str:
    """dlib's face descriptor model, shipped beside the 68-point model (face-recognition-models)."""
    path = os.path.join(os.path.dirname(default_dlib_model_path()), DESCRIPTOR_FILE)
    if not os.path.isfile(path):
        raise ImportError(f"the identity check needs {DESCRIPTOR_FILE} from the "
                          "face-recognition-models package (pip install face-recognition-models)")
    return path


class DlibDescriber:
    """describe(frame, box, points) -> [128] float32: dlib's ResNet descriptor of one face.

    frame RGB uint8 [H,W,3]; box (x0, y0, x1, y1[, score]) in pixels (edges); points [68,2] the
    face's iBUG-68 landmarks in continuous pixels (centres at +0.5), which align the 150 px chip.
    """

    def __init__(self, model_path: str | None = None):
        import dlib
        self._dlib = dlib
        self.model_path = model_path or default_descriptor_model_path()
        self._model = dlib.face_recognition_model_v1(self.model_path)
        self.calls = 0

    def __call__(self, frame, box, points) -> np.ndarray:
        dlib = self._dlib
        frame = check_frame(frame)
        x0, y0, x1, y1 = (int(round(float(v))) for v in np.asarray(box)[:4])
        parts = [dlib.point(int(np.floor(x)), int(np.floor(y))) for x, y in np.asarray(points)]
        shape = dlib.full_object_detection(dlib.rectangle(x0, y0, x1 - 1, y1 - 1), parts)
        self.calls += 1
        return np.asarray(self._model.compute_face_descriptor(frame, shape), np.float32)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """[..., 4+] (x0, y0, x1, y1) -> [...] area in square pixels (0 for an inverted box)."""
    return (np.clip(boxes[..., 2] - boxes[..., 0], 0, None)
            * np.clip(boxes[..., 3] - boxes[..., 1], 0, None))


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one (x0, y0, x1, y1) box with [N,4+] boxes -> [N]."""
    box, boxes = np.asarray(box, np.float64)[:4], np.asarray(boxes, np.float64)[:, :4]
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    union = box_area(box) + box_area(boxes) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def most_prominent(boxes: np.ndarray, frame_size: tuple[int, int]) -> int:
    """Index of the largest, most central of [N,4+] boxes in a frame of (H, W) pixels.

    Score: area x (1 - 0.5 d), d = distance of the box centre from the frame centre over half
    the frame diagonal (0 at the centre, 1 in a corner), so a face in a corner must be twice
    the area of a central one to be chosen.
    """
    boxes = np.asarray(boxes, np.float64)[:, :4]
    h, w = frame_size
    area = box_area(boxes)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    d = np.linalg.norm(centre - [w / 2, h / 2], axis=1) / max(np.hypot(w, h) / 2, 1e-9)
    return int(np.argmax(area * (1 - 0.5 * np.minimum(d, 1.0))))


def face_at_point(boxes: np.ndarray, point: tuple[float, float]) -> int | None:
    """Index of the face whose box contains `point` (x, y pixels): the one whose centre is
    nearest when boxes overlap; None when no box contains it."""
    boxes = np.asarray(boxes, np.float64)[:, :4]
    x, y = point
    inside = (boxes[:, 0] <= x) & (x < boxes[:, 2]) & (boxes[:, 1] <= y) & (y < boxes[:, 3])
    if not inside.any():
        return None
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    d = np.where(inside, np.linalg.norm(centre - [x, y], axis=1), np.inf)
    return int(np.argmin(d))


class ShotCuts:
    """cut(frame) -> True when `frame` starts a new shot (a hard cut from the previous frame).

    The signal is the mean absolute difference of 32x32 grey thumbnails (0..1). A cut is a
    difference of at least `absolute` (a different picture), or of at least `minimum` and
    `ratio` times the mean of the last `history` differences (a jump against the shot's own
    motion). On the carphone clip consecutive frames differ by at most 0.031 (the car moves);
    a cut from its frame 10 to its frame 80 (same man, same car) differs by 0.079 and one to
    another picture by ~0.3.
    """

    def __init__(self, absolute: float = 0.15, minimum: float = 0.04, ratio: float = 4.0,
                 history: int = 12):
        self.absolute, self.minimum, self.ratio, self.history = absolute, minimum, ratio, history
        self._previous = None
        self._recent: list[float] = []

    def __call__(self, frame) -> bool:
        small = cv2.resize(np.asarray(frame), (32, 32), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        previous, self._previous = self._previous, grey
        if previous is None:
            return False
        change = float(np.abs(grey - previous).mean())
        typical = float(np.mean(self._recent)) if self._recent else 0.0
        cut = change >= self.absolute or (change >= self.minimum
                                          and change >= self.ratio * max(typical, 1e-3))
        if cut:
            self._recent = []          # the new shot's motion is measured afresh
        else:
            self._recent = (self._recent + [change])[-self.history:]
        return cut


class IdentityFollower:
    """Chooses, frame by frame, the face of the target person (module docstring).

    describe(frame, box, points) -> descriptor; reference: the target's descriptor when the user
    chose the target (None: the most prominent face of the first frame with a face becomes the
    target). threshold: the largest descriptor distance of the same person. check_every: frames
    between identity confirmations inside a shot. min_iou: the overlap with the last box that
    continues a track. max_faces: the largest this many faces of a frame are candidates.

    After the stream: `status` [T] (TRACKED / NO_FACE / OTHER_PERSON per frame, final) and
    `distances` {frame: descriptor distance of the confirmed target}.
    """

    def __init__(self, describe: Callable, *, reference: np.ndarray | None = None,
                 threshold: float = SAME_PERSON_DISTANCE, check_every: int = 12,
                 min_iou: float = 0.3, max_faces: int = 6, reference_frames: int = 8,
                 max_gap: int = 12):
        self.describe, self.threshold, self.check_every = describe, threshold, int(check_every)
        self.min_iou, self.max_faces, self.max_gap = min_iou, int(max_faces), int(max_gap)
        self.reference_frames = int(reference_frames)
        self._sum = None if reference is None else np.asarray(reference, np.float64)
        self._count = 0 if reference is None else 1
        self.user_reference = reference is not None
        self.status: list[int] = []
        self.distances: dict[int, float] = {}
        self._box = None            # the target's last box (x0, y0, x1, y1) in this shot
        self._box_t = -1
        self._checked_t = -1        # last frame whose identity was confirmed
        self._pending: list[int] = []          # frames accepted by continuity since then
        self._last = None           # (t, frame, box, points) of the last continuity frame
        self._others: list[list] = []          # [box, last seen t, last described t]

    @property
    def reference(self) -> np.ndarray | None:
        return None if self._sum is None else (self._sum / self._count).astype(np.float32)

    def distance(self, descriptor) -> float:
        return float(np.linalg.norm(np.asarray(descriptor, np.float64) - self.reference))

    def _confirm(self, t: int, descriptor, distance: float) -> None:
        self.distances[t] = distance
        if self._count < self.reference_frames:   # the mean of the first confirmations
            self._sum = descriptor.astype(np.float64) if self._sum is None \
                else self._sum + descriptor
            self._count += 1
        self._checked_t, self._pending, self._last = t, [], None

    def _reject_pending(self) -> None:
        for p in self._pending:
            self.status[p] = OTHER_PERSON
        self._pending, self._last, self._box = [], None, None

    def settle(self) -> None:
        """Confirms (or rejects) the frames accepted by continuity since the last confirmation,
        on the last of them; called at a cut and at the end of the stream."""
        if not self._pending or self._last is None:
            return
        t, frame, box, points = self._last
        descriptor = self.describe(frame, box, points)
        distance = self.distance(descriptor)
        if distance < self.threshold:
            self._confirm(t, descriptor, distance)
        else:
            self._reject_pending()

    def step(self, t: int, frame, faces: np.ndarray, landmarks_of: Callable[[int], np.ndarray],
             cut: bool = False) -> int | None:
        """Frame t: faces [N,4+] boxes; landmarks_of(i) -> [68,2] of face i. Returns the index
        of the target's face, or None (no face / not the target)."""
        if cut:
            self.settle()
            self._box, self._others = None, []
        self.status.append(NO_FACE)
        if len(faces) == 0:
            return None
        faces = np.asarray(faces, np.float64).reshape(len(faces), -1)
        if self._sum is None:      # the start: the most prominent face is the target
            i = most_prominent(faces, np.shape(frame)[:2])
            self._confirm(t, self.describe(frame, faces[i], landmarks_of(i)), 0.0)
            return self._accept(t, faces, i)
        candidate = self._continuing(t, faces)
        if candidate is not None and t - self._checked_t < self.check_every:
            self._pending.append(t)
            self._last = (t, frame, faces[candidate], landmarks_of(candidate))
            return self._accept(t, faces, candidate)
        described: dict[int, tuple[float, np.ndarray]] = {}
        if candidate is not None:
            descriptor = self.describe(frame, faces[candidate], landmarks_of(candidate))
            described[candidate] = (self.distance(descriptor), descriptor)
            if described[candidate][0] < self.threshold:
                self._confirm(t, descriptor, described[candidate][0])
                return self._accept(t, faces, candidate)
            self._reject_pending()
        order = np.argsort(-(faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1]))
        for i in order[:self.max_faces]:
            if int(i) not in described and not self._known_other(t, faces[i]):
                descriptor = self.describe(frame, faces[i], landmarks_of(int(i)))
                described[int(i)] = (self.distance(descriptor), descriptor)
        matches = [i for i, (d, _) in described.items() if d < self.threshold]
        best = min(matches, key=lambda i: described[i][0]) if matches else None
        for i in described:
            if i != best:
                self._remember_other(t, faces[i])
        if best is None:
            self.status[t] = OTHER_PERSON
            self._box = None
            return None
        self._confirm(t, described[best][1], described[best][0])
        return self._accept(t, faces, best)

    def _accept(self, t: int, faces: np.ndarray, i: int) -> int:
        self.status[t] = TRACKED
        self._box, self._box_t = faces[i, :4].copy(), t
        return int(i)

    def _continuing(self, t: int, faces: np.ndarray) -> int | None:
        """The one face that continues the target's box in this shot, else None (none, two
        candidates, or the box is older than max_gap frames)."""
        if self._box is None or t - self._box_t > self.max_gap + 1:
            return None
        overlap = box_iou(self._box, faces)
        hits = np.flatnonzero(overlap >= self.min_iou)
        return int(hits[0]) if len(hits) == 1 else None

    def _known_other(self, t: int, box) -> bool:
        """True when `box` continues a face found not to be the target less than check_every
        frames ago (then it is not described again); its box is updated."""
        for other in self._others:
            if box_iou(other[0], box[None])[0] >= self.min_iou and t - other[1] <= self.max_gap + 1:
                other[0], other[1] = box[:4].copy(), t
                return t - other[2] < self.check_every
        return False

    def _remember_other(self, t: int, box) -> None:
        """Records a face described at frame t that is not the target."""
        self._others = [o for o in self._others if t - o[1] <= self.max_gap + 1
                        and box_iou(o[0], box[None])[0] < self.min_iou]
        self._others.append([box[:4].copy(), t, t])


def descriptor_at_point(frame, backend, describe, point: tuple[float, float], *,
                        where: str) -> tuple[np.ndarray, np.ndarray]:
    """(descriptor [128], box [4]) of the face containing `point` in `frame` (the user's choice
    of target). Raises ValueError naming `where` and the faces found when none contains it."""
    faces = np.asarray(backend.detect(frame), np.float32).reshape(-1, 5)
    if len(faces) == 0:
        raise InputError(f"{where}: no face found there to choose with --face")
    i = face_at_point(faces, point)
    if i is None:
        found = "; ".join(f"({b[0]:.0f},{b[1]:.0f})-({b[2]:.0f},{b[3]:.0f})" for b in faces)
        raise InputError(f"{where}: no face contains --face {point[0]:g},{point[1]:g}; the faces "
                         f"found there are {found} (x0,y0)-(x1,y1) px")
    points = np.asarray(backend.landmarks(frame, faces[i]), np.float32)
    return describe(frame, faces[i], points), faces[i, :4]
