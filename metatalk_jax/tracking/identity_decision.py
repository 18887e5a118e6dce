"""Who is the target, decided once for the whole video from every face track's descriptors.

    decision = decide_identity(table, seed=3)            # table: face_tracks.FaceTable
    decision = decide_identity(table, seed=3, keep=[7], drop=[5])    # the user's corrections
    decision.of(7).decision                               # "kept" / "excluded" / "ambiguous"
    status, chosen = frame_statuses(table, decision)      # per video frame

The target is grown from one seed track (the user's --face, else the largest, most central
face of the first frame with a face). Its descriptors give a centre (their mean) and the
target's own spread: how far each of its descriptors lies from the centre of the target's
*other* tracks (leave-one-track-out, so a new shot's lighting counts), or, while the target is
one track, from the mean of its other descriptors. A track is scored by the median distance of
its descriptors to the centre. It is
  * kept when that is within the target's own spread: at most `keep_limit`, the spread's 90th
    percentile plus a margin (KEEP_MARGIN), never more than KEEP_CEILING;
  * ambiguous (left out, and reported) between keep_limit and exclude_limit = keep_limit +
    AMBIGUOUS_BAND, and when it has no descriptor at all (the unseen frames of a swap);
  * excluded beyond exclude_limit, or when it is on screen in the same frames as a kept track
    (one person is not two faces at once).
Kept tracks join the target and the limits are measured again, until nothing changes: a long
video's many shots of the target widen its spread from the data, not from a fixed threshold.

dlib's descriptors, for scale: one person's frames of one shot lie 0.2-0.35 from their centre;
another shot of them (lighting, a year later) moves the centre by 0.25-0.45; different people
lie 0.5-0.9 apart, look-alikes and relatives down to 0.5 (dlib's "same person" threshold is 0.6
between two single photos).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from metatalk_jax.errors import InputError
from metatalk_jax.tracking.face_tracks import FaceTable
from metatalk_jax.tracking.identity import (AMBIGUOUS, DROPPED, NO_FACE, OTHER_PERSON, TRACKED,
                                            box_iou, most_prominent)

KEPT, EXCLUDED, UNSURE = "kept", "excluded", "ambiguous"
KEEP_MARGIN = 0.05
# The keep limit's bounds, from dlib's scale: another photo of one person lies 0.35-0.41 from
# the first (three photos of Obama: face-recognition's test images), so a target seen in one
# shot must still take in its other shots at ~0.38; and nothing farther than 0.47 from the
# centre is kept (look-alike pairs of different people lie 0.62-0.65 apart as photos, ~0.55
# from a centre).
KEEP_FLOOR = 0.38
KEEP_CEILING = 0.47
AMBIGUOUS_BAND = 0.10
PRIOR_SPREAD = 0.35          # the 90th percentile used while the target has < 3 descriptors


@dataclasses.dataclass
class ShotDecision:
    """One face track's decision ("shot" to the user: one person between two cuts): number
    (from 1), segment (the stretch between cuts it is in: cuts before it), first/last video
    frame, frames (observations), distance (median descriptor distance to the target's centre;
    NaN without a descriptor), decision (KEPT / EXCLUDED / UNSURE) and why (words)."""

    number: int
    segment: int
    first: int
    last: int
    frames: int
    distance: float
    decision: str
    why: str
    dropped: bool = False          # excluded by the user's --drop-shots

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["distance"] = None if not np.isfinite(self.distance) else round(self.distance, 3)
        return out


@dataclasses.dataclass
class IdentityDecision:
    """The decision for every track, the target's seed track and its limits."""

    shots: list[ShotDecision]
    seed: int
    keep_limit: float
    exclude_limit: float
    spread_q90: float
    target_descriptors: int

    def of(self, number: int) -> ShotDecision:
        return self.shots[number - 1]

    def numbers(self, decision: str) -> list[int]:
        return [s.number for s in self.shots if s.decision == decision]

    def summary(self) -> dict:
        return {"seed_track": self.seed, "keep_limit": round(self.keep_limit, 3),
                "exclude_limit": round(self.exclude_limit, 3),
                "target_spread_q90": round(self.spread_q90, 3),
                "target_descriptors": self.target_descriptors,
                "kept": self.numbers(KEPT), "ambiguous": self.numbers(UNSURE),
                "excluded": self.numbers(EXCLUDED),
                "shots": [s.to_dict() for s in self.shots]}


def _spread(groups: list[np.ndarray]) -> np.ndarray:
    """The target's own distances (module docstring): per descriptor of each group, to the
    mean of the other groups; one group: to the mean of its other descriptors."""
    if len(groups) >= 2:
        out = []
        for k, x in enumerate(groups):
            rest = np.concatenate([g for j, g in enumerate(groups) if j != k])
            out.append(np.linalg.norm(x - rest.mean(0), axis=1))
        return np.concatenate(out)
    x = groups[0]
    if len(x) < 2:
        return np.zeros(0)
    total = x.sum(0)
    others = (total[None] - x) / (len(x) - 1)
    return np.linalg.norm(x - others, axis=1)


def limits(own: np.ndarray) -> tuple[float, float, float]:
    """(keep_limit, exclude_limit, 90th percentile of `own`) from the target's own distances."""
    q90 = float(np.quantile(own, 0.9)) if len(own) >= 3 else PRIOR_SPREAD
    keep = float(np.clip(q90 + KEEP_MARGIN, KEEP_FLOOR, KEEP_CEILING))
    return keep, keep + AMBIGUOUS_BAND, q90


def _overlapping(table: FaceTable) -> dict[int, set[int]]:
    """{track: tracks seen in at least one of its frames}."""
    by_frame: dict[int, set[int]] = {}
    for k, f in zip(table.obs_track.tolist(), table.obs_frame.tolist()):
        by_frame.setdefault(f, set()).add(k)
    out: dict[int, set[int]] = {k: set() for k in range(1, table.num_tracks + 1)}
    for tracks in by_frame.values():
        for k in tracks:
            out[k] |= tracks - {k}
    return out


def _check_numbers(table: FaceTable, numbers, flag: str) -> list[int]:
    numbers = [int(n) for n in numbers]
    bad = [n for n in numbers if not 1 <= n <= table.num_tracks]
    if bad:
        raise InputError(f"{flag} {bad[0]}: no such shot; the contact sheet numbers them "
                         f"1-{table.num_tracks}")
    return numbers


def decide_identity(table: FaceTable, seed: int, *, keep=(), drop=()) -> IdentityDecision:
    """Decisions for every track of `table` (module docstring). seed: the target's track number;
    keep / drop: track numbers the user forces in or out (`prepare --keep-shots/--drop-shots`).
    Raises InputError (one line) for unknown numbers, a dropped seed, or two forced tracks that
    share frames."""
    keep = _check_numbers(table, keep, "--keep-shots")
    drop = set(_check_numbers(table, drop, "--drop-shots"))
    if seed in drop:
        raise InputError(f"--drop-shots {seed}: that is the target's own first shot; choose "
                         "another target with --face X,Y --face-frame N")
    together = _overlapping(table)
    forced = [seed] + [k for k in keep if k != seed]
    for i, a in enumerate(forced):
        for b in forced[i + 1:]:
            if b in together[a]:
                raise InputError(f"--keep-shots: shots {a} and {b} are on screen together, so "
                                 "they cannot both be the target")
    descriptors = {k: table.descriptors_of(k).astype(np.float64)
                   for k in range(1, table.num_tracks + 1)}
    members = set(forced)
    while True:
        groups = [descriptors[k] for k in sorted(members) if len(descriptors[k])]
        centre = np.concatenate(groups).mean(0) if groups else None
        keep_limit, exclude_limit, q90 = limits(_spread(groups) if groups else np.zeros(0))
        distance = {k: (float(np.median(np.linalg.norm(x - centre, axis=1)))
                        if len(x) and centre is not None else float("nan"))
                    for k, x in descriptors.items()}
        grown = False
        for k in sorted(distance, key=lambda k: (np.nan_to_num(distance[k], nan=9.0), k)):
            if (k in members or k in drop or not distance[k] <= keep_limit
                    or together[k] & members):
                continue
            members.add(k)
            grown = True
        if not grown:
            break
    target = sorted(members)
    shots = []
    for k in range(1, table.num_tracks + 1):
        first, last = table.span(k)
        d = distance[k]
        if k in drop:
            decision, why = EXCLUDED, "dropped with --drop-shots"
        elif k == seed:
            decision, why = KEPT, "the target's first shot"
        elif k in keep:
            decision, why = KEPT, "kept with --keep-shots"
        elif k in members:
            decision, why = KEPT, "within the target's own spread"
        elif together[k] & members:
            decision, why = EXCLUDED, "on screen together with the target"
        elif not np.isfinite(d):
            decision, why = UNSURE, "no descriptor (the face changed inside a shot)"
        elif d <= exclude_limit:
            decision, why = UNSURE, "beyond the target's spread, not clearly another"
        else:
            decision, why = EXCLUDED, "another person"
        shots.append(ShotDecision(number=k, segment=int(table.track_shot[k - 1]), first=first,
                                  last=last, frames=int(np.count_nonzero(table.obs_track == k)),
                                  distance=d, decision=decision, why=why,
                                  dropped=k in drop))
    return IdentityDecision(shots=shots, seed=seed, keep_limit=keep_limit,
                            exclude_limit=exclude_limit, spread_q90=q90,
                            target_descriptors=int(sum(len(descriptors[k]) for k in target)))


def seed_track(table: FaceTable, frame: int, box) -> int | None:
    """The track number of the face at video frame `frame` overlapping `box` (x0, y0, x1, y1)
    most, None when no track has a face there."""
    rows = np.flatnonzero(table.obs_frame == frame)
    if len(rows) == 0:
        return None
    overlap = box_iou(np.asarray(box, np.float64)[:4], table.obs_box[rows])
    if overlap.max() <= 0:
        return None
    return int(table.obs_track[rows[int(np.argmax(overlap))]])


def frame_statuses(table: FaceTable, decision: IdentityDecision) -> tuple[np.ndarray, np.ndarray]:
    """(status [T] int8, chosen [T] int64): per video frame, TRACKED where a kept track has a
    face (chosen: that observation's row in the table, else -1); otherwise AMBIGUOUS where an
    ambiguous track has one, DROPPED where only dropped tracks do, OTHER_PERSON where another
    face is, NO_FACE where no face was found."""
    t = table.num_frames
    status = np.full(t, NO_FACE, np.int8)
    chosen = np.full(t, -1, np.int64)
    # One frame, several faces: the status says the most that any of them does.
    priority = {NO_FACE: 0, DROPPED: 1, OTHER_PERSON: 2, AMBIGUOUS: 3, TRACKED: 4}
    for row, (k, f) in enumerate(zip(table.obs_track.tolist(), table.obs_frame.tolist())):
        shot = decision.of(k)
        code = (TRACKED if shot.decision == KEPT else AMBIGUOUS if shot.decision == UNSURE
                else DROPPED if shot.dropped else OTHER_PERSON)
        if code == TRACKED:
            chosen[f] = row
        if priority[code] > priority[int(status[f])]:
            status[f] = code
    return status, chosen


def default_seed(table: FaceTable) -> int | None:
    """The track of the largest, most central face of the first frame with a face (None when
    the video has no face)."""
    if len(table.obs_frame) == 0:
        return None
    rows = np.flatnonzero(table.obs_frame == table.obs_frame.min())
    return int(table.obs_track[rows[most_prominent(table.obs_box[rows], table.frame_size)]])
