"""Many videos from one loaded talker: `python -m metatalk_jax.infer --jobs jobs.jsonl`.

    {"audio": "hello.wav", "out": "hello.mp4"}               # one JSON object per line, or
    {"text": "Good morning, everyone.", "out": "morning.mp4"}
    [{"audio": ...}, ...]                                   # one JSON list (.json), or YAML

Relative paths are taken from the jobs file's folder. Every job's output is checked before
anything is loaded; a job that fails (bad audio, an unwritable --out) is reported on its own
line and the others still run. Per job: a progress line, then its summary (the JSON printed by
infer, plus "job", "ok" and "error"); overall: a last line with how many failed.
"""

from __future__ import annotations

import json
import os
import sys
import time

from metatalk_jax.errors import InputError
from metatalk_jax.inference.talker import check_output

KEYS = {"audio", "text", "out"}


def _job_list(data, path: str) -> list:
    if isinstance(data, dict) and "jobs" in data:
        data = data["jobs"]
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of jobs ({{audio | text, out}} each)")
    return data


def read_jobs(path: str) -> list[dict]:
    """The jobs of `path` (module docstring) with paths made absolute. Raises InputError (one
    line naming the file and the job) for a malformed file or entry."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as err:
        raise InputError(f"{path}: cannot read the jobs file ({err.strerror})") from None
    try:
        if path.lower().endswith((".yaml", ".yml")):
            import yaml
            data = _job_list(yaml.safe_load(text), path)
        elif text.lstrip().startswith("["):
            data = _job_list(json.loads(text), path)
        else:
            data = [json.loads(line) for line in text.splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    except ValueError as err:
        raise InputError(f"{path}: not JSON lines, a JSON list or YAML ({err})") from None
    folder = os.path.dirname(os.path.abspath(path))
    jobs = []
    for k, job in enumerate(data, start=1):
        if not isinstance(job, dict) or set(job) - KEYS or "out" not in job or (
                ("audio" in job) == ("text" in job)):
            raise InputError(f"{path}: job {k} must have \"out\" and one of \"audio\" or "
                             f"\"text\", got {job!r}")
        job = dict(job)
        job["out"] = os.path.join(folder, job["out"])
        if "audio" in job:
            job["audio"] = os.path.join(folder, job["audio"])
        jobs.append(job)
    if not jobs:
        raise InputError(f"{path}: no jobs")
    return jobs


def _say(message: str) -> None:
    print(f"[infer] {message}", file=sys.stderr, flush=True)


def run_jobs(talker, jobs: list[dict], emit=print) -> list[dict]:
    """Runs every job with `talker`; returns one summary per job ("ok": False and "error"
    for a failed one). emit(json text) gets each summary as it is done."""
    results, started = [], time.perf_counter()
    checked = {}
    for k, job in enumerate(jobs):
        try:
            check_output(job["out"])
        except InputError as err:
            checked[k] = str(err)
    for k, job in enumerate(jobs, start=1):
        what = job.get("audio") or f"text {job['text'][:40]!r}"
        _say(f"job {k}/{len(jobs)}: {what} -> {job['out']}")
        t0 = time.perf_counter()
        try:
            if k - 1 in checked:
                raise InputError(checked[k - 1])
            summary = talker.say(job.get("audio", job.get("text")), job["out"])
            summary.update(job=k, ok=True, error=None)
        except InputError as err:           # bad input of this job: the others still run
            summary = {"job": k, "ok": False, "error": str(err), "out": job["out"]}
            _say(f"job {k} failed: {err}")
        summary["job_s"] = round(time.perf_counter() - t0, 2)
        results.append(summary)
        emit(json.dumps(summary))
        done = sum(r["ok"] for r in results)
        _say(f"{k}/{len(jobs)} jobs done ({done} written, {k - done} failed) in "
             f"{time.perf_counter() - started:.1f} s")
    return results
