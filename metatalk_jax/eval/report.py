"""The evaluation report: per-clip scores -> report.json and report.md in the layout of the paper's
Table 2 (one row per method: mean LSE-D, LSE-C, FID, SSIM over its clips), plus every clip's row.

A clip's method is the name of the folder its video is in (results/wav2lip/A.mp4 -> method
"wav2lip", clip "A"), so `--videos results/*/*.mp4` compares every method on every test audio at
once. A metric that could not be computed for a clip (no --reference, no checkpoint for it) is
None in the JSON and "-" in the table; a method's mean is over the clips that have the metric.
"""

from __future__ import annotations

import dataclasses
import math
import os

from metatalk_jax.atomic_files import atomic_path, write_json

METRICS = ("lse_d", "lse_c", "fid", "ssim")
HEADERS = {"lse_d": "LSE-D (lower better)", "lse_c": "LSE-C (higher)", "fid": "FID (lower)",
           "ssim": "SSIM (higher)"}
DIGITS = {"lse_d": 3, "lse_c": 3, "fid": 2, "ssim": 3}   # the paper's precision (Table 3)
REPORT_JSON, REPORT_MD = "report.json", "report.md"


@dataclasses.dataclass
class ClipScores:
    """One video's scores. offset: SyncNet's AV offset in frames (None without SyncNet);
    frames: frames scored; reference: the ground-truth video FID/SSIM used (None without)."""
    video: str
    method: str
    clip: str
    lse_d: float | None = None
    lse_c: float | None = None
    offset: int | None = None
    fid: float | None = None
    ssim: float | None = None
    frames: int = 0
    reference: str | None = None


def clip_identity(video_path: str) -> tuple[str, str]:
    """(method, clip) of a video: its folder's name and its file name without extension."""
    path = os.path.abspath(video_path)
    method = os.path.basename(os.path.dirname(path)) or "."
    return method, os.path.splitext(os.path.basename(path))[0]


def method_means(clips: list[ClipScores]) -> dict[str, dict[str, float | None]]:
    """{method: {metric: mean over the method's clips that have it (None if none), "clips": n}},
    methods in first-appearance order."""
    out: dict[str, dict] = {}
    for clip in clips:
        out.setdefault(clip.method, {"clips": 0, **{m: [] for m in METRICS}})
        row = out[clip.method]
        row["clips"] += 1
        for m in METRICS:
            value = getattr(clip, m)
            if value is not None and math.isfinite(value):
                row[m].append(float(value))
    return {method: {"clips": row["clips"],
                     **{m: (sum(row[m]) / len(row[m]) if row[m] else None) for m in METRICS}}
            for method, row in out.items()}


def _cell(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


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


def write_report(out_dir: str, clips: list[ClipScores], settings: dict,
                 notes: list[str]) -> tuple[str, str]:
    """Writes OUT/report.json and OUT/report.md atomically; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    data = {"format": "metatalk_jax.evaluation", "version": 1, "settings": settings,
            "methods": method_means(clips), "clips": [dataclasses.asdict(c) for c in clips],
            "notes": notes}
    json_path = write_json(os.path.join(out_dir, REPORT_JSON), data)
    md_path = os.path.join(out_dir, REPORT_MD)
    with atomic_path(md_path, ".md") as tmp:
        with open(tmp, "w") as f:
            f.write(markdown_report(clips, notes))
    return json_path, md_path
