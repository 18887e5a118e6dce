"""Lip sync measured on the output pixels, with no learnt weights of the project's own.

For a generated video, every (or every n-th) output frame's mouth opening is measured on its
pixels by the landmark detector (eval.mouth_opening.MouthMeter) and compared with

  drive:       the mouth opening of the 3DMM expression that drove the frame (the lip landmarks
               of the rendered geometry), which `infer` writes per frame into a sidecar;
  background:  the same pixel measure on the subject's frame the output was drawn on.

A renderer that follows its input has a high r_drive; one that reproduces the mouth it saw on
that background frame during training has a high r_background instead. Both are Pearson r over
the frames where the detector found a face.

The sidecar, `<video stem>.drive.json` beside the video (`drive_sidecar_path`):
  {"format": "metatalk_jax.drive", "version": 1, "fps": output fps,
   "source_video": the subject's video, "source_fps": the rate its frames were read at,
   "source_frame": [N] background frame of each output frame,
   "drive_opening": [N] 3DMM mouth opening of each output frame}
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np

from metatalk_jax.errors import InputError
from metatalk_jax.eval.mouth_opening import MouthMeter

SIDECAR_SUFFIX = ".drive.json"
SIDECAR_FORMAT = "metatalk_jax.drive"


def drive_sidecar_path(video_path: str) -> str:
    """The drive sidecar of `video_path`: out/speech.mp4 -> out/speech.drive.json."""
    return os.path.splitext(video_path)[0] + SIDECAR_SUFFIX


@dataclasses.dataclass
class DriveRecord:
    """What drove each frame of a generated video (the sidecar's contents)."""
    fps: float
    source_video: str
    source_fps: float
    source_frame: np.ndarray      # [N] int
    drive_opening: np.ndarray     # [N] float

    def write(self, path: str) -> str:
        from metatalk_jax.atomic_files import write_json
        return write_json(path, {
            "format": SIDECAR_FORMAT, "version": 1, "fps": self.fps,
            "source_video": self.source_video, "source_fps": self.source_fps,
            "source_frame": [int(v) for v in self.source_frame],
            "drive_opening": [round(float(v), 5) for v in self.drive_opening]})

    @classmethod
    def read(cls, path: str) -> "DriveRecord":
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: unreadable drive sidecar ({err})") from None
        if data.get("format") != SIDECAR_FORMAT:
            raise InputError(f"{path}: not a drive sidecar (format {data.get('format')!r})")
        frames, opening = data["source_frame"], data["drive_opening"]
        if len(frames) != len(opening):
            raise InputError(f"{path}: {len(frames)} source frames but {len(opening)} openings")
        return cls(float(data["fps"]), data["source_video"], float(data["source_fps"]),
                   np.asarray(frames, np.int64), np.asarray(opening, np.float64))


def pearson(a, b) -> float:
    """Pearson r over the positions where both are finite; NaN with < 3 such or no spread."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.std(a[keep]) == 0 or np.std(b[keep]) == 0:
        return float("nan")
    return float(np.corrcoef(a[keep], b[keep])[0, 1])


@dataclasses.dataclass
class PixelLipSync:
    """Pixel lip-sync of one video. frames: output frames measured; detection_rate: the
    fraction with a face found; r_drive / r_background: Pearson r of the output's opening with
    the drive's / the background frame's; r_drive_background: of the drive with the background
    (when high, the two cannot be told apart); mean_abs_error: mean |output - drive| opening."""
    frames: int
    detection_rate: float
    r_drive: float
    r_background: float
    r_drive_background: float
    mean_abs_error: float

    def to_json(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else
                    round(v, 4) if isinstance(v, float) else v)
                for k, v in dataclasses.asdict(self).items()}


def score_openings(output, drive, background) -> PixelLipSync:
    """[N] openings (NaN where no face was found) -> PixelLipSync."""
    output, drive, background = (np.asarray(x, np.float64) for x in (output, drive, background))
    found = np.isfinite(output)
    error = np.abs(output - drive)[found & np.isfinite(drive)]
    return PixelLipSync(
        frames=int(len(output)), detection_rate=float(found.mean()) if len(output) else 0.0,
        r_drive=pearson(output, drive), r_background=pearson(output, background),
        r_drive_background=pearson(drive, background),
        mean_abs_error=float(error.mean()) if len(error) else float("nan"))


def measured_frames(count: int, max_frames: int | None) -> np.ndarray:
    """Output frames to measure: all, or `max_frames` spread evenly over the video."""
    if max_frames is None or count <= max_frames:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, int(max_frames)).round().astype(np.int64))


def _openings_of(video: str, wanted: np.ndarray, meter, fps: float | None, progress) -> dict:
    """{frame index: opening} of the frames `wanted` of `video` (read at `fps`)."""
    from metatalk_jax.media.video_read import read_frames
    wanted_set, out = set(int(i) for i in wanted), {}
    last = int(max(wanted_set)) if wanted_set else -1
    for i, frame in enumerate(read_frames(video, fps=fps, max_frames=last + 1)):
        if i in wanted_set:
            out[i] = meter(frame)
            progress.update()
    return out


def pixel_lip_sync(video: str, record: DriveRecord | None = None, *,
                   max_frames: int | None = None, meter=None,
                   show_progress: bool = True) -> PixelLipSync:
    """Measures `video` against its drive record (default: its sidecar).

    The background frames are read from record.source_video at record.source_fps, as the
    inference read them; when that video is missing, r_background is NaN. max_frames: measure
    at most this many output frames, spread evenly (the correlation does not need neighbours).
    """
    from metatalk_jax.progress import Progress
    if record is None:
        sidecar = drive_sidecar_path(video)
        if not os.path.isfile(sidecar):
            raise InputError(f"{video}: no drive sidecar {os.path.basename(sidecar)} (written "
                             "by `python -m metatalk_jax.infer` beside its video)")
        record = DriveRecord.read(sidecar)
    meter = meter or MouthMeter()
    frames = measured_frames(len(record.source_frame), max_frames)
    sources = np.unique(record.source_frame[frames])
    have_source = os.path.isfile(record.source_video)
    progress = Progress("pixel lip sync", len(frames) + (len(sources) if have_source else 0),
                        enabled=show_progress)
    output = _openings_of(video, frames, meter, None, progress)
    if len(output) != len(frames):
        raise InputError(f"{video}: {len(output)} frames, its sidecar describes "
                         f"{len(record.source_frame)}")
    background = (_openings_of(record.source_video, sources, meter, record.source_fps, progress)
                  if have_source else {})
    progress.close()
    return score_openings([output[int(i)] for i in frames], record.drive_opening[frames],
                          [background.get(int(j), float("nan"))
                           for j in record.source_frame[frames]])
