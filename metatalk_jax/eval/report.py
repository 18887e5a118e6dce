"""The evaluation report: per-clip scores -> report.json and report.md in the layout of the paper's
Table 2 (one row per method: mean LSE-D, LSE-C, FID, SSIM over its clips), plus the pixel lip-sync
columns (eval/pixel_lip_sync.py: r_drive, r_background, the mouth's sharpness against the real
frames, its opening in pauses against speech) and every clip's row.

A clip's method is the name of the folder its video is in (results/wav2lip/A.mp4 -> method
"wav2lip", clip "A"), so `--videos results/*/*.mp4` compares every method on every test audio at
once. A metric that could not be computed for a clip (no --reference, no checkpoint, no drive
sidecar) is None in the JSON and "-" in the table; a method's mean is over the clips whose value
is finite, and the report says which clips a mean leaves out (`excluded_clips`) and why.
"""

from __future__ import annotations

import dataclasses
import math
import os

from metatalk_jax.atomic_files import atomic_path, write_json

METRICS = ("lse_d", "lse_c", "fid", "ssim", "r_drive", "r_background", "mouth_sharpness",
           "silence_ratio", "opening_p95_ratio", "bilabial_closure")
HEADERS = {"lse_d": "LSE-D (lower better)", "lse_c": "LSE-C (higher)", "fid": "FID (lower)",
           "ssim": "SSIM (higher)", "r_drive": "pixel r_drive (higher)",
           "r_background": "pixel r_background (lower)",
           "mouth_sharpness": "mouth sharpness vs real (1 = as crisp)",
           "silence_ratio": "opening in pauses / speech (lower)",
           "opening_p95_ratio": "widest opening vs real (1 = as wide)",
           "bilabial_closure": "/p b m/ closed (higher)"}
# the paper's precision (Table 3); the pixel measures to 3 places
DIGITS = {"lse_d": 3, "lse_c": 3, "fid": 2, "ssim": 3, "r_drive": 3, "r_background": 3,
          "mouth_sharpness": 3, "silence_ratio": 3, "opening_p95_ratio": 3,
          "bilabial_closure": 3}
REPORT_JSON, REPORT_MD = "report.json", "report.md"


@dataclasses.dataclass
class ClipScores:
    """One video's scores. offset: SyncNet's AV offset in frames (None without SyncNet);
    frames: frames scored; reference: the ground-truth video FID/SSIM used (None without);
    r_drive / r_background / lip_detection_rate / mouth_sharpness / silence_ratio: the pixel
    measures (eval/pixel_lip_sync.py; None without a drive sidecar, silence_ratio also None
    without pauses in the driving audio); opening_p95_ratio / bilabial_closure: how far the
    mouth moves (eval/articulation.py; bilabial_closure None without the speech's phoneme
    times)."""
    video: str
    method: str
    clip: str
    lse_d: float | None = None
    lse_c: float | None = None
    offset: int | None = None
    fid: float | None = None
    ssim: float | None = None
    r_drive: float | None = None
    r_background: float | None = None
    lip_detection_rate: float | None = None
    mouth_sharpness: float | None = None
    silence_ratio: float | None = None
    opening_p95_ratio: float | None = None
    bilabial_closure: float | None = None
    frames: int = 0
    reference: str | None = None


def clip_identity(video_path: str) -> tuple[str, str]:
    """(method, clip) of a video: its folder's name and its file name without extension."""
    path = os.path.abspath(video_path)
    method = os.path.basename(os.path.dirname(path)) or "."
    return method, os.path.splitext(os.path.basename(path))[0]


def method_means(clips: list[ClipScores]) -> dict[str, dict]:
    """{method: {metric: mean over the method's clips where it is finite (None if none),
    "clips": n, "excluded_clips": {metric: [clip names whose value is NaN]}}}, methods in
    first-appearance order. A metric not computed at all (None) excludes nobody."""
    out: dict[str, dict] = {}
    for clip in clips:
        row = out.setdefault(clip.method, {"clips": 0, "excluded_clips": {},
                                           **{m: [] for m in METRICS}})
        row["clips"] += 1
        for m in METRICS:
            value = getattr(clip, m)
            if value is None:
                continue
            if math.isfinite(value):
                row[m].append(float(value))
            else:
                row["excluded_clips"].setdefault(m, []).append(clip.clip)
    return {method: {"clips": row["clips"], "excluded_clips": row["excluded_clips"],
                     **{m: (sum(row[m]) / len(row[m]) if row[m] else None) for m in METRICS}}
            for method, row in out.items()}


def exclusion_notes(clips: list[ClipScores]) -> list[str]:
    """One note per (method, metric) whose mean leaves clips out, naming them."""
    notes = []
    for method, row in method_means(clips).items():
        for metric, names in row["excluded_clips"].items():
            notes.append(f"{method}: {HEADERS[metric]} is the mean of {row['clips'] - len(names)}"
                         f" of {row['clips']} clips; not finite for {', '.join(names)}.")
    return notes


def _cell(value, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


def markdown_report(clips: list[ClipScores], notes: list[str]) -> str:
    """report.md: the Table 2 layout (methods x mean metrics), then one row per clip."""
    means = method_means(clips)
    lines = ["# Evaluation report", "",
             "## Methods (means over their clips; the layout of Meta Talk's Table 2)", "",
             "| method | clips | " + " | ".join(HEADERS[m] for m in METRICS) + " |",
             "|:---|---:|" + "---:|" * len(METRICS)]
    for method, row in means.items():
        lines.append(f"| {method} | {row['clips']} | "
                     + " | ".join(_cell(row[m], DIGITS[m]) for m in METRICS) + " |")
    lines += ["", "## Clips", "",
              "| method | clip | frames | AV offset | " + " | ".join(HEADERS[m] for m in METRICS)
              + " |", "|:---|:---|---:|---:|" + "---:|" * len(METRICS)]
    for clip in clips:
        offset = "-" if clip.offset is None else str(clip.offset)
        lines.append(f"| {clip.method} | {clip.clip} | {clip.frames} | {offset} | "
                     + " | ".join(_cell(getattr(clip, m), DIGITS[m]) for m in METRICS) + " |")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _json_row(clip: ClipScores) -> dict:
    """The clip's row with NaN as null (strict JSON; the exclusions are listed per method)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in dataclasses.asdict(clip).items()}


def write_report(out_dir: str, clips: list[ClipScores], settings: dict,
                 notes: list[str]) -> tuple[str, str]:
    """Writes OUT/report.json and OUT/report.md atomically; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    notes = list(notes) + exclusion_notes(clips)
    data = {"format": "metatalk_jax.evaluation", "version": 1, "settings": settings,
            "methods": method_means(clips), "clips": [_json_row(c) for c in clips],
            "notes": notes}
    json_path = write_json(os.path.join(out_dir, REPORT_JSON), data)
    md_path = os.path.join(out_dir, REPORT_MD)
    with atomic_path(md_path, ".md") as tmp:
        with open(tmp, "w") as f:
            f.write(markdown_report(clips, notes))
    return json_path, md_path
