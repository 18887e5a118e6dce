"""The mouth a viewer sees, measured on the output pixels with no learnt weights of the project's.

For a generated video, every (or every n-th) output frame's mouth is measured on its pixels by
the landmark detector (eval.mouth_opening.MouthMeter) and compared with

  drive:       the mouth opening of the 3DMM expression that drove the frame (the lip landmarks
               of the rendered geometry), which `infer` writes per frame into a sidecar;
  background:  the same pixel measure on the subject's frame the output was drawn on.

Measures (PixelLipSync):
  r_drive / r_background  Pearson r of the output's opening with the drive's / the background
               frame's: a renderer that follows its input has a high r_drive, one that
               reproduces the mouth it saw on that frame in training a high r_background;
  mouth_sharpness  the detail inside the mouth's box, output / background frame, median over
               frames (eval/mouth_detail.py): ~1 as crisp as the footage, ~0.2 a smudge;
  silence_ratio    the output's median opening in the driving audio's silences (runs of at
               least 0.4 s, the sidecar's `voiced`) over its median opening in speech, and
               drive_silence_ratio, the same of the drive: a mouth that closes in pauses scores
               near 0, one that stays half open near 1;
  articulation     how far it moves (eval/articulation.py): the output's 5th/95th percentile
               opening against the real background frames' (opening_p95_ratio ~1 opens as
               wide as the person), and with known phoneme times the share of /p b m/ whose
               lips close on the pixels (bilabial_closure) and in the drive.

The sidecar, `<video stem>.drive.json` beside the video (`drive_sidecar_path`):
  {"format": "metatalk_jax.drive", "version": 2, "fps": output fps,
   "source_video": the subject's video, "source_fps": the rate its frames were read at,
   "source_frame": [N] background frame of each output frame,
   "drive_opening": [N] 3DMM mouth opening of each output frame,
   "voiced": [N] 1 where the driving audio has speech, 0 in its pauses (version 2; absent in
   version 1 sidecars, whose silence ratios are then None),
   "phonemes": [[start_s, end_s, symbol], ...] when the speech's phoneme times are known
   (text spoken by espeak-ng; absent otherwise: the bilabial closures are not measured)}
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections import defaultdict

import numpy as np

from metatalk_jax.errors import InputError
from metatalk_jax.eval.articulation import bilabial_closure, opening_range
from metatalk_jax.eval.mouth_detail import box_patch, median_ratio, mouth_box, sharpness_ratio
from metatalk_jax.eval.mouth_opening import MouthMeter, mouth_opening

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
    voiced: np.ndarray | None = None   # [N] bool: speech in the driving audio (None: unknown)
    # [(start_s, end_s, espeak symbol)] of the driving speech when known (text spoken by
    # espeak-ng), for the bilabial closures (eval/articulation.py); None: unknown
    phonemes: list | None = None

    def write(self, path: str) -> str:
        from metatalk_jax.atomic_files import write_json
        data = {"format": SIDECAR_FORMAT, "version": 2, "fps": self.fps,
                "source_video": self.source_video, "source_fps": self.source_fps,
                "source_frame": [int(v) for v in self.source_frame],
                "drive_opening": [round(float(v), 5) for v in self.drive_opening]}
        if self.voiced is not None:
            data["voiced"] = [int(bool(v)) for v in self.voiced]
        if self.phonemes is not None:
            data["phonemes"] = [[round(float(a), 4), round(float(b), 4), str(sym)]
                                for a, b, sym in self.phonemes]
        return write_json(path, data)

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
        voiced = data.get("voiced")
        if len(frames) != len(opening) or (voiced is not None and len(voiced) != len(frames)):
            raise InputError(f"{path}: {len(frames)} source frames but {len(opening)} openings"
                             + ("" if voiced is None else f" and {len(voiced)} voiced flags"))
        phonemes = data.get("phonemes")
        return cls(float(data["fps"]), data["source_video"], float(data["source_fps"]),
                   np.asarray(frames, np.int64), np.asarray(opening, np.float64),
                   None if voiced is None else np.asarray(voiced, bool),
                   None if phonemes is None else [(float(a), float(b), str(sym))
                                                  for a, b, sym in phonemes])


def pearson(a, b) -> float:
    """Pearson r over the positions where both are finite; NaN with < 3 such or no spread."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.std(a[keep]) == 0 or np.std(b[keep]) == 0:
        return float("nan")
    return float(np.corrcoef(a[keep], b[keep])[0, 1])


@dataclasses.dataclass
class PixelLipSync:
    """The pixel measures of one video (module docstring). frames: output frames measured;
    detection_rate: the fraction with a face found; r_drive / r_background: Pearson r of the
    output's opening with the drive's / the background frame's; r_drive_background: of the
    drive with the background (when high, the two cannot be told apart); mean_abs_error: mean
    |output - drive| opening; mouth_sharpness: median output/background detail ratio in the
    mouth box; r_background_given_drive: the partial correlation of the output with the
    background frame once the drive is accounted for (what leaks from the background when
    drive and background happen to correlate); silence_ratio / drive_silence_ratio: median
    opening in pauses over median
    opening in speech, of the output's pixels / of the drive (NaN without pauses or without
    voice activity); silent_frames: measured frames in pauses. Articulation
    (eval/articulation.py): opening_p5/p95 of the output and real_opening_p5/p95 of its real
    background frames, opening_p95_ratio and opening_range_ratio; bilabials, bilabial_closure
    (share closed on the pixels) and drive_bilabial_closure (in the 3DMM drive), None when
    the speech's phoneme times are unknown."""
    frames: int
    detection_rate: float
    r_drive: float
    r_background: float
    r_drive_background: float
    mean_abs_error: float
    r_background_given_drive: float = float("nan")
    mouth_sharpness: float = float("nan")
    silence_ratio: float = float("nan")
    drive_silence_ratio: float = float("nan")
    silent_frames: int = 0
    opening_p5: float = float("nan")
    opening_p95: float = float("nan")
    real_opening_p5: float = float("nan")
    real_opening_p95: float = float("nan")
    opening_p95_ratio: float = float("nan")
    opening_range_ratio: float = float("nan")
    bilabials: int = 0
    bilabial_closure: float | None = None
    drive_bilabial_closure: float | None = None

    def to_json(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else
                    round(v, 4) if isinstance(v, float) else v)
                for k, v in dataclasses.asdict(self).items()}


def silence_ratio(openings, voiced) -> float:
    """Median of `openings` [N] where `voiced` [N] is False over their median where it is True
    (NaN-free frames only); NaN when either side has fewer than 3 frames or speech never opens
    the mouth."""
    openings, voiced = np.asarray(openings, np.float64), np.asarray(voiced, bool)
    found = np.isfinite(openings)
    silent, speech = openings[found & ~voiced], openings[found & voiced]
    if len(silent) < 3 or len(speech) < 3 or np.median(speech) <= 0:
        return float("nan")
    return float(np.median(silent) / np.median(speech))


def articulation(output, drive, real, *, fps: float, phonemes=None) -> dict:
    """The articulation fields of PixelLipSync: output / drive openings [N] per output frame
    (NaN: not measured), real openings [M] of the real frames (eval/articulation.py)."""
    span = opening_range(output, real)
    closure = bilabial_closure(output, fps, phonemes, closed=span.real_p5)
    drive_closure = bilabial_closure(drive, fps, phonemes, closed=span.real_p5)
    return dict(opening_p5=span.output_p5, opening_p95=span.output_p95,
                real_opening_p5=span.real_p5, real_opening_p95=span.real_p95,
                opening_p95_ratio=span.p95_ratio, opening_range_ratio=span.range_ratio,
                bilabials=closure.bilabials, bilabial_closure=closure.fraction,
                drive_bilabial_closure=drive_closure.fraction)


def score_openings(output, drive, background, *, voiced=None, sharpness=(),
                   shape: dict | None = None) -> PixelLipSync:
    """[N] openings (NaN where no face was found) -> PixelLipSync. voiced: [N] bool speech
    flags of the same frames (None: no silence ratios); sharpness: per-frame detail ratios;
    shape: the articulation fields (`articulation`)."""
    output, drive, background = (np.asarray(x, np.float64) for x in (output, drive, background))
    found = np.isfinite(output)
    error = np.abs(output - drive)[found & np.isfinite(drive)]
    silences = {}
    if voiced is not None:
        voiced = np.asarray(voiced, bool)
        silences = dict(silence_ratio=silence_ratio(output, voiced),
                        drive_silence_ratio=silence_ratio(drive, voiced),
                        silent_frames=int((~voiced).sum()))
    r_od, r_ob, r_db = (pearson(output, drive), pearson(output, background),
                        pearson(drive, background))
    partial = (r_ob - r_od * r_db) / np.sqrt(max((1 - r_od ** 2) * (1 - r_db ** 2), 1e-12))
    return PixelLipSync(
        frames=int(len(output)), detection_rate=float(found.mean()) if len(output) else 0.0,
        r_drive=r_od, r_background=r_ob, r_drive_background=r_db,
        r_background_given_drive=float(partial),
        mean_abs_error=float(error.mean()) if len(error) else float("nan"),
        mouth_sharpness=median_ratio(sharpness), **silences, **(shape or {}))


def measured_frames(count: int, max_frames: int | None) -> np.ndarray:
    """Output frames to measure: all, or `max_frames` spread evenly over the video."""
    if max_frames is None or count <= max_frames:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, int(max_frames)).round().astype(np.int64))


def _wanted_frames(video: str, wanted, fps: float | None, progress):
    """Yields (index, RGB frame) of the frames `wanted` of `video` (read at `fps`)."""
    from metatalk_jax.media.video_read import read_frames
    wanted_set = set(int(i) for i in wanted)
    last = max(wanted_set) if wanted_set else -1
    for i, frame in enumerate(read_frames(video, fps=fps, max_frames=last + 1)):
        if i in wanted_set:
            yield i, frame
            progress.update()


def _opening(points) -> float:
    return float("nan") if points is None else float(mouth_opening(points))


def pixel_lip_sync(video: str, record: DriveRecord | None = None, *,
                   max_frames: int | None = None, meter=None,
                   show_progress: bool = True) -> PixelLipSync:
    """Measures `video` against its drive record (default: its sidecar).

    The background frames are read from record.source_video at record.source_fps, as the
    inference read them; when that video is missing, r_background and the sharpness are NaN.
    max_frames: measure at most this many output frames, spread evenly (the correlation does
    not need neighbours). The mouth box of each output frame is cut from it as it is read and
    from its background frame in the second pass (mouth_detail.py).
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
    output, boxes, patches = {}, {}, {}
    for i, frame in _wanted_frames(video, frames, None, progress):
        points = meter.landmarks(frame)
        output[i] = _opening(points)
        boxes[i] = None if points is None else mouth_box(points, frame.shape)
        if boxes[i] is not None:
            patches[i] = (frame.shape, box_patch(frame, boxes[i]))
    if len(output) != len(frames):
        raise InputError(f"{video}: {len(output)} frames, its sidecar describes "
                         f"{len(record.source_frame)}")
    by_source = defaultdict(list)
    for i in frames:
        by_source[int(record.source_frame[i])].append(int(i))
    background, sharpness = {}, {}
    for j, frame in (_wanted_frames(record.source_video, sources, record.source_fps, progress)
                     if have_source else ()):
        background[j] = _opening(meter.landmarks(frame))
        for i in by_source[j]:
            if i in patches and patches[i][0] == frame.shape:
                sharpness[i] = sharpness_ratio(patches[i][1], box_patch(frame, boxes[i]))
    progress.close()
    every = np.full(len(record.source_frame), np.nan)       # the output, by frame number
    every[list(output)] = list(output.values())
    shape = articulation(every, record.drive_opening, list(background.values()),
                         fps=record.fps, phonemes=record.phonemes)
    return score_openings([output[int(i)] for i in frames], record.drive_opening[frames],
                          [background.get(int(j), float("nan"))
                           for j in record.source_frame[frames]],
                          voiced=None if record.voiced is None else record.voiced[frames],
                          sharpness=sharpness.values(), shape=shape)
