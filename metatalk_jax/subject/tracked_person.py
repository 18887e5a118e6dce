"""`prepare`'s tracking stage: one person, chosen at the start and held through cuts and crowds.

    check_first_seconds(video, backend, config)           # seconds, not a whole pass, on no face
    tracking = TargetTracking(video, info, backend, config, video_sha)
    track, target = tracking.run(reuse=[folder, ...])      # whole-video FaceTrack with statuses
    tracking.table, tracking.decision                      # face tracks and who is the target
    kept = track.kept_only()                               # the subject's frames
    write_kept_frames(video, kept.source_frames, path, fps)    # only when frames were excluded

The target is the largest, most central face of the first frame with a face, or the face at
the user's point (config.target_face "X,Y" in video pixels, at frame config.target_frame of the
video resampled to config.fps). Every face becomes a short track with descriptors
(tracking/face_tracks.py), and each track is kept, excluded or ambiguous from the whole video's
descriptors (tracking/identity_decision.py), corrected by config.keep_shots / drop_shots.
The face tracks are saved (layout.FACES_NPZ) and reused when only the target or the shots'
corrections change. Frames where the target is absent or where only other people (or
ambiguous faces) are found are excluded. A subject with excluded frames
gets its own frames video (`frames.mp4`, only the kept frames, at config.fps) and the audio of
those frames, so every later stage (fit, shards, pseudo videos, inference backgrounds) sees only
the target's frames without knowing about the exclusion.
"""

from __future__ import annotations

import hashlib
import json
import os

import cv2
import numpy as np

from metatalk_jax.atomic_files import write_json
from metatalk_jax.errors import InputError
from metatalk_jax.media.video_read import read_frames
from metatalk_jax.media.video_write import Mp4Writer
from metatalk_jax.progress import Progress
from metatalk_jax.subject import layout
from metatalk_jax.tracking.backends import make_backend
from metatalk_jax.tracking.face_tracks import FaceTable, FaceTracks, descriptor_budget
from metatalk_jax.tracking.identity import TRACKED, DlibDescriber, ShotCuts, chosen_box
from metatalk_jax.tracking.identity_decision import decide_identity, default_seed, seed_track
from metatalk_jax.tracking.track import FaceTrack, TrackingError, track_from_faces, track_video

FACES_VERSION = 1              # of the saved face tracks (layout.FACES_NPZ)

FRAMES_VIDEO_CRF = 12          # the kept frames are re-encoded near-losslessly (18 looks clean)
# The no-face hint tries a larger upsampling only where dlib's pyramid stays affordable.
HINT_MAX_PIXELS = 40e6


def parse_point(text: str, name: str = "--face") -> tuple[float, float] | None:
    """"X,Y" (or an (x, y) pair, as a --config override parses it) -> (x, y) pixels;
    "" -> None; anything else a one-line ValueError."""
    if isinstance(text, (tuple, list)):
        text = ",".join(str(v) for v in text)
    text = str(text or "").strip()
    if not text:
        return None
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{name} {text!r}: expected X,Y in video pixels, e.g. 640,360") from None
    return x, y


def no_face_hint(backend, config):
    """A function frame -> hint text for the 'no face' error: it tries the frame turned by 90,
    180 and 270 degrees, then (small frames) dlib with more upsampling, and says what helped."""
    turns = ((cv2.ROTATE_90_CLOCKWISE, "90 degrees clockwise", "transpose=1"),
             (cv2.ROTATE_90_COUNTERCLOCKWISE, "90 degrees anticlockwise", "transpose=2"),
             (cv2.ROTATE_180, "180 degrees", "hflip,vflip"))

    def hint(frame) -> str:
        for code, words, vf in turns:
            if len(backend.detect(np.ascontiguousarray(cv2.rotate(frame, code)))):
                return (f"; a face appears when the frames are turned {words}: the video is "
                        f"stored sideways (re-encode it upright: ffmpeg -i IN -vf {vf} OUT)")
        more = int(config.upsample) + 2
        if frame.shape[0] * frame.shape[1] * 4 ** more <= HINT_MAX_PIXELS:
            bigger = make_backend(config.backend, upsample=more, max_upsample=more)
            if len(bigger.detect(frame)):
                return (f"; the face is too small for the detector at this size: pass "
                        f"--config.upsample={more}, or crop the video around the person")
        return ("; is the face turned away, smaller than ~80 px (raise --config.upsample, or "
                "crop the video around the person) or the video rotated? If the person appears "
                "later, cut the start off (ffmpeg -ss SECONDS -i IN OUT)")
    return hint


def check_first_seconds(video: str, backend, config, *, samples: int = 5) -> None:
    """Raises TrackingError (one line, with a hint) when none of `samples` frames spread over
    the first config.first_face_s seconds has a face: a video without a face fails in seconds."""
    fps = float(config.fps)
    frames = max(1, int(round(float(config.first_face_s) * fps)))
    every = max(1, frames // samples)
    last = None
    for i, frame in enumerate(read_frames(video, fps=fps, max_frames=frames)):
        if i % every:
            continue
        if len(backend.detect(frame)):
            return
        last = frame
    if last is None:
        raise TrackingError(f"{os.path.basename(video)}: no frames")
    seconds = min(float(config.first_face_s), (i + 1) / fps)
    raise TrackingError(f"{os.path.basename(video)}: no face found in the first {seconds:.1f} s"
                        f"{no_face_hint(backend, config)(last)}")


def parse_shots(text, flag: str = "--keep-shots") -> list[int]:
    """"3,7" (or a list/tuple, or an int) -> [3, 7]; "" -> []; else a one-line InputError."""
    if isinstance(text, (list, tuple)):
        text = ",".join(str(v) for v in text)
    text = str(text if text is not None else "").strip()
    if not text:
        return []
    try:
        numbers = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{flag} {text!r}: expected shot numbers, e.g. 3,7 (the numbers of "
                         "previews/identity.png)") from None
    if any(n < 1 for n in numbers):
        raise InputError(f"{flag} {text!r}: shot numbers start at 1")
    return numbers


def tracks_key(video_sha: str, info, config) -> str:
    """What the face tracks depend on: the video's bytes and the tracking settings (not the
    choice of target, nor the shots kept or dropped, which are decided afresh)."""
    settings = {k: config.get(k) for k in ("fps", "backend", "upsample", "max_gap",
                                            "identity_overhead", "max_faces")}
    text = json.dumps({"video": video_sha, "settings": settings, "size": [info.height,
                                                                            info.width],
                       "version": FACES_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def saved_tracks(folders, key: str) -> tuple[FaceTable, str] | None:
    """(FaceTable, folder) of the first folder holding face tracks made with `key`."""
    for folder in folders:
        meta = os.path.join(folder, layout.FACES_JSON)
        try:
            with open(meta) as f:
                if json.load(f).get("key") != key:
                    continue
            return FaceTable.from_npz(os.path.join(folder, layout.FACES_NPZ)), folder
        except (OSError, ValueError, KeyError):
            continue
    return None


def save_tracks(table: FaceTable, folder: str, key: str) -> None:
    os.makedirs(folder, exist_ok=True)
    table.to_npz(os.path.join(folder, layout.FACES_NPZ))
    write_json(os.path.join(folder, layout.FACES_JSON), {"key": key, "version": FACES_VERSION})


def users_pick(video: str, backend, config):
    """(frame index, box, report dict) of --face, or None without it."""
    point = parse_point(config.target_face)
    if point is None:
        return None
    frame_index = int(config.target_frame)
    where = f"{os.path.basename(video)} frame {frame_index}"
    frame = next(iter(read_frames(video, fps=float(config.fps), max_frames=1,
                                  start_frame=frame_index)), None)
    if frame is None:
        raise InputError(f"{where}: the video has no such frame (--face-frame counts frames at "
                         f"{float(config.fps):g} fps from 0)")
    if not (0 <= point[0] < frame.shape[1] and 0 <= point[1] < frame.shape[0]):
        raise InputError(f"--face {point[0]:g},{point[1]:g}: outside the {frame.shape[1]}x"
                         f"{frame.shape[0]} frame of {os.path.basename(video)}")
    box = chosen_box(frame, backend, point, where=where)
    return frame_index, box, {"chosen_by": f"--face {point[0]:g},{point[1]:g} at frame "
                                           f"{frame_index}",
                              "frame": frame_index, "box": [round(float(v), 1) for v in box]}


class TargetTracking:
    """`prepare`'s tracking: the face tracks (scanned, or reused from `reuse` folders), the
    identity decision, then the whole-video FaceTrack. After run(), `table` and `decision`
    are set even when run() raised a TrackingError (so the contact sheet can still be drawn)."""

    def __init__(self, video: str, info, backend, config, video_sha: str):
        self.video, self.info, self.backend, self.config = video, info, backend, config
        self.key = tracks_key(video_sha, info, config)
        self.table: FaceTable | None = None
        self.decision = None
        self.reused_from: str | None = None
        self.descriptors_computed = 0

    def _decide(self, table: FaceTable, pick):
        self.table = table
        if pick is None:
            seed = default_seed(table)
        else:
            seed = seed_track(table, pick[0], pick[1])
            if seed is None:
                raise TrackingError(f"{os.path.basename(self.video)}: the face at --face was "
                                    f"not followed in frame {pick[0]} (is it among the "
                                    f"{int(self.config.max_faces)} largest faces?)")
        self.decision = decide_identity(table, seed,
                                        keep=parse_shots(self.config.keep_shots, "--keep-shots"),
                                        drop=parse_shots(self.config.drop_shots, "--drop-shots"))
        return self.decision

    def run(self, reuse=()) -> tuple[FaceTrack, dict]:
        """(whole-video FaceTrack with per-frame statuses, target dict for report.json)."""
        config, video = self.config, self.video
        fps = float(config.fps)
        pick = users_pick(video, self.backend, config)
        target = dict(pick[2]) if pick else {
            "chosen_by": "the largest, most central face of the first frame with a face"}
        checks = dict(max_gap=int(config.max_gap),
                      min_tracked_fraction=float(config.min_tracked_fraction),
                      smoothing_sigma=float(config.landmark_sigma), exclude_runs=True,
                      min_kept_fraction=float(config.min_kept_fraction),
                      min_kept_frames=int(config.min_kept_frames))
        found = saved_tracks(reuse, self.key)
        if found is not None:
            table, self.reused_from = found
            track = track_from_faces(table, self._decide(table, pick),
                                     source=os.path.basename(video), **checks)
        else:
            describe = DlibDescriber()
            budget = descriptor_budget((self.info.height, self.info.width),
                                       int(config.upsample), float(config.identity_overhead))
            faces = FaceTracks(describe, budget=budget, max_gap=int(config.max_gap),
                               max_faces=int(config.max_faces))
            estimate = None if not self.info.duration_s else int(round(self.info.duration_s
                                                                        * fps))
            bar = Progress("track", estimate)
            try:
                track = track_video(
                    read_frames(video, fps=fps), self.backend, source=os.path.basename(video),
                    progress=bar, faces=faces, decide=lambda table: self._decide(table, pick),
                    cuts=ShotCuts(),
                    first_face_frames=max(1, int(round(float(config.first_face_s) * fps))),
                    no_face_hint=no_face_hint(self.backend, config), **checks)
            finally:
                bar.close()
                self.descriptors_computed = describe.calls
            target["descriptors_per_frame"] = round(budget, 4)
        first = int(np.flatnonzero(track.status == TRACKED)[0])
        target.setdefault("frame", first)
        target.setdefault("box", [round(float(v), 1) for v in track.boxes[first]])
        target["descriptors_computed"] = int(self.descriptors_computed)
        target["face_tracks_reused"] = self.reused_from is not None
        return track, target


def write_kept_frames(video: str, source_frames: np.ndarray, path: str, fps: float) -> tuple:
    """Writes the video frames `source_frames` ([T] increasing indices at `fps`) to `path`
    as an H.264 mp4 at `fps` (crf FRAMES_VIDEO_CRF); returns its (height, width), which is the
    video's rounded up to even sizes."""
    wanted = np.asarray(source_frames, np.int64)
    bar = Progress("write the kept frames", len(wanted))
    last = int(wanted[-1])
    keep = np.zeros(last + 1, bool)
    keep[wanted] = True
    size = (0, 0)
    with Mp4Writer(path, fps, crf=FRAMES_VIDEO_CRF, preset="fast") as writer:
        for i, frame in enumerate(read_frames(video, fps=fps, max_frames=last + 1)):
            if keep[i]:
                writer.write(frame)
                size = frame.shape[:2]
                bar.update()
    bar.close()
    if writer.frames != len(wanted):
        raise ValueError(f"{video}: {writer.frames} frames re-read, {len(wanted)} expected")
    return size[0] + size[0] % 2, size[1] + size[1] % 2


def kept_audio(audio: np.ndarray, source_frames: np.ndarray, fps: float,
               sample_rate: int) -> np.ndarray:
    """The samples of the kept frames, in order: frame i covers samples
    [round(i sr / fps), round((i + 1) sr / fps)), so frame t of the result lines up with
    sample t sr / fps of the output as it did in the video (to within a sample per splice)."""
    frames = np.asarray(source_frames, np.int64)
    starts = np.round(frames * sample_rate / fps).astype(np.int64)
    stops = np.round((frames + 1) * sample_rate / fps).astype(np.int64)
    # A track that ends before the video is padded with silence, frame by frame.
    pieces = [np.pad(audio[a:b], (0, (b - a) - len(audio[a:b]))) for a, b in zip(starts, stops)]
    return (np.concatenate(pieces) if pieces else np.zeros(0)).astype(np.float32)


def tracking_message(summary: dict, target: dict) -> str:
    """One line for the CLI: how many frames show the target, what was excluded and why."""
    frames, kept = summary["frames"], summary["kept"]
    parts = [f"the target ({target['chosen_by']}) is in {kept} of {frames} frames"]
    if summary["interpolated"]:
        parts.append(f"{summary['interpolated']} filled in")
    for reason, words in (("other_person", "another person"),
                          ("ambiguous", "a face that may or may not be the target"),
                          ("dropped", "shots you dropped"), ("no_face", "no target face")):
        item = summary["excluded"][reason]
        if item["frames"]:
            ranges = ", ".join(f"{a}-{b}" for a, b in item["ranges"][:4])
            more = f" and {len(item['ranges']) - 4} more" if len(item["ranges"]) > 4 else ""
            parts.append(f"excluded {item['frames']} with {words} (frames {ranges}{more})")
    if summary["cuts"]:
        cuts = ", ".join(str(c) for c in summary["cuts"][:6])
        parts.append(f"{len(summary['cuts'])} shot cut(s) at frame {cuts}")
    return "; ".join(parts)
