"""The pieces identity is built from: face descriptors, boxes, shot cuts, the user's pick.

    describe = DlibDescriber()                        # dlib's ResNet face descriptor, 128-d
    cuts = ShotCuts()                                 # cuts(frame) -> True at a hard cut
    box = chosen_box(frame, backend, (x, y), where=...)     # the user's --face

Every face of the video becomes a short track (tracking/face_tracks.py); who the target is is
decided per track from all descriptors of the video (tracking/identity_decision.py).

Distances are Euclidean between dlib descriptors; dlib's threshold for "same person" is 0.6
(99.38% on LFW). A descriptor costs ~0.08 s on a CPU core whatever the frame size (about ten
times a HOG detection of a 176x144 frame). On the 176x144 carphone clip (face ~45 px wide) the
man's own descriptors lie 0.26 from his first one on average (0.51 at most); scikit-image's
astronaut photo lies 0.69-0.81 from him at face sizes of 23-91 px.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from metatalk_jax.errors import InputError
from metatalk_jax.tracking.backends import check_frame, default_dlib_model_path

SAME_PERSON_DISTANCE = 0.6
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"

# Per-frame status codes, shared with track.py and identity_decision.py. AMBIGUOUS: only faces
# that may or may not be the target; DROPPED: only faces of shots the user dropped.
TRACKED, FILLED, NO_FACE, OTHER_PERSON, AMBIGUOUS, DROPPED = 0, 1, 2, 3, 4, 5
STATUS_NAMES = {TRACKED: "tracked", FILLED: "filled", NO_FACE: "no_face",
                OTHER_PERSON: "other_person", AMBIGUOUS: "ambiguous", DROPPED: "dropped"}
EXCLUDED_STATUSES = (NO_FACE, OTHER_PERSON, AMBIGUOUS, DROPPED)


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


def chosen_box(frame, backend, point: tuple[float, float], *, where: str) -> np.ndarray:
    """Box [4] (x0, y0, x1, y1) of the face containing `point` in `frame` (the user's choice of
    target). Raises InputError naming `where` and the faces found when none contains it."""
    faces = np.asarray(backend.detect(frame), np.float32).reshape(-1, 5)
    if len(faces) == 0:
        raise InputError(f"{where}: no face found there to choose with --face")
    i = face_at_point(faces, point)
    if i is None:
        found = "; ".join(f"({b[0]:.0f},{b[1]:.0f})-({b[2]:.0f},{b[3]:.0f})" for b in faces)
        raise InputError(f"{where}: no face contains --face {point[0]:g},{point[1]:g}; the faces "
                         f"found there are {found} (x0,y0)-(x1,y1) px")
    return faces[i, :4]
