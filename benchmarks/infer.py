"""Inference speed and memory: seconds of compute per second of output video, and peak RSS.

For each resolution (default 256, 512, 1024) a child process loads a Talker (the code behind
`python -m metatalk_jax.infer`) on the carphone subject with random-initialised checkpoints of
the real architectures: AudioDVP's unet_256 at 256 (configs/renderer.py), the HD coarse-to-fine
generator at 512 and 1024 (configs/renderer.py:gpu, float32 on CPU), the default Meta Talk A2E
(configs/a2e.py). It says a short clip (compiles everything), then --seconds of audio on the
same talker --repeats times (nothing compiles), each run followed in the same process by the
reference: the generator alone on the same number of frames in the same batches.
`pipeline_over_generator` (the median of the per-run ratios, so a change of the machine's load
moves both sides) says what the rest of the pipeline (audio features, A2E, 3DMM renders, mask
blending, paste-back, decoding the background and encoding H.264) adds to the network's own
cost. --split adds one run that waits for every render batch and generator call and times them
apart (`split_s`: total, renders, generator, rest).

--background-4k S additionally runs S seconds of audio on the subject moved onto a synthetic
3840x2160 background (tests/support/scaled_subject.py) at --resolution-4k (default 256) and reports
that run's peak RSS (target: < 4 GiB for 60 s on a 2-core CPU).

Output: a table, then as the last line one JSON object
  {"bench": "infer", "machine": ..., "runs": [{"resolution", "frames", "output_s",
   "compute_s", "compute_s_per_output_s", "generator_s", "pipeline_over_generator",
   "peak_rss_gib" (this process), "peak_tree_pss_gib" (with its ffmpeg children, summed PSS
   sampled every 0.2 s), ...}, ...]}

Run from the repository root:  python benchmarks/infer.py [--seconds 2] [--background-4k 60]
GPU:  python benchmarks/infer.py --resolutions 1024 --seconds 10    (frames/s at 1024)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from statistics import median

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):
    sys.path.insert(0, REPO)

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "metatalk_jax", "bench_infer")


def _speech_like(path: str, seconds: float) -> str:
    import numpy as np

    from metatalk_jax.media.audio_files import write_wav
    t = np.arange(int(round(seconds * 16000))) / 16000
    audio = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return write_wav(path, audio.astype(np.float32), 16000)


def bench_subject() -> str:
    """The carphone clip prepared with configs/prepare.py:tiny (cached; ~1 min once)."""
    from metatalk_jax.demo_assets import carphone_path
    subject = os.path.join(CACHE, "carphone_subject")
    if not os.path.isdir(subject):
        cmd = [sys.executable, "-m", "metatalk_jax.prepare", "--video", carphone_path(),
               "--out", subject, "--config", "prepare:tiny",
               "--config.audio_required=False"]
        subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)
    return subject


def checkpoints(subject: str, resolution: int) -> tuple[str, str]:
    """(a2e work dir, renderer work dir) of random-initialised default models (cached)."""
    from tests.support.infer_fixtures import random_a2e, random_renderer
    a2e = os.path.join(CACHE, "a2e_default")
    if not os.path.isdir(a2e):
        random_a2e(a2e, subject, 10, variant="")
    renderer = os.path.join(CACHE, f"renderer_{resolution}")
    if not os.path.isdir(renderer):
        variant = "" if resolution == 256 else "gpu"
        overrides = ["model.dtype=float32"]
        if resolution < 1024 and variant == "gpu":
            # The HD generator's U-Net runs at resolution / 4; unet_256 needs 256 there.
            downs = (resolution // 4).bit_length() - 1
            overrides.append(f"model.num_downs={downs}")
        random_renderer(renderer, subject, resolution=resolution, variant=variant,
                        overrides=overrides)
    return a2e, renderer


class TreeRssSampler:
    """Samples, every `interval_s`, the summed memory of this process and its child processes
    (the ffmpeg decoder and encoder) from /proc, keeping the maximum: the job's real peak, which
    neither this process's ru_maxrss nor RUSAGE_CHILDREN (a maximum over children) gives. It
    sums PSS (shared pages divided among the processes sharing them), not RSS: between fork and
    exec a new ffmpeg child maps all of Python's pages, and summed RSS would count them twice."""

    def __init__(self, interval_s: float = 0.2):
        import threading
        self.peak, self.interval_s = 0, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _pss(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _children(self, pid: int) -> list[int]:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                return [int(c) for c in f.read().split()]
        except OSError:
            return []

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            pids, total = [me], 0
            while pids:
                pid = pids.pop()
                total += self._pss(pid)
                pids += self._children(pid)
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


def generator_seconds(model, summary: dict) -> float:
    """The reference: the generator alone on as many batches of the same size as the pipeline
    run of `summary` made (random uint8 renders, full masks), warm."""
    import numpy as np
    r, b, w = summary["resolution"], summary["batch_size"], model.window
    renders = np.random.default_rng(0).integers(0, 256, (b, w, r, r, 3), dtype=np.uint8)
    masks = np.full((b, w, r, r), 255, np.uint8)
    valid = np.ones((b, w), bool)
    references = renders[:, 0] if model.mouth_reference else None
    model.faces(renders, masks, valid, references).block_until_ready()
    start = time.perf_counter()
    for _ in range(-(-summary["frames"] // b)):
        model.faces(renders, masks, valid, references).block_until_ready()
    return time.perf_counter() - start


def split_run(talker, audio: str, out: str) -> dict:
    """One more run with every 3DMM render batch and generator call waited for as it is made,
    timed apart: where the pipeline's time goes, measured inside one run (the waits take away
    what asynchronous dispatch overlaps, so its total is a little above the others)."""
    import jax

    from metatalk_jax.inference.pipeline import FaceRenders
    spent = {"renders": 0.0, "generator": 0.0}

    def waited(function, key):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            result = jax.block_until_ready(function(*args, **kwargs))
            spent[key] += time.perf_counter() - start
            return result
        return wrapper

    draw = FaceRenders.__call__          # called through the class: patch it there
    FaceRenders.__call__ = waited(draw, "renders")
    talker.renderer.faces = waited(talker.renderer.faces, "generator")
    try:
        summary = talker.say(audio, out)
    finally:
        FaceRenders.__call__ = draw
        del talker.renderer.faces            # the class's method again
    total = summary["total_s"] - summary["setup_s"]
    rest = total - spent["renders"] - spent["generator"]
    return {"total": round(total, 2), **{k: round(v, 2) for k, v in spent.items()},
            "rest": round(rest, 2)}


def child(args) -> dict:
    """One measured run (in its own process, so its peak RSS is its own)."""
    from metatalk_jax.runtime import use_xla_convolutions_on_cpu
    use_xla_convolutions_on_cpu()

    from metatalk_jax.inference.pipeline import InferenceSettings
    from metatalk_jax.inference.talker import Talker
    from metatalk_jax.inference.trained_models import load_renderer
    subject = bench_subject()
    r = args.resolution
    a2e, renderer = checkpoints(subject, r)
    work = os.path.join(CACHE, "work")
    os.makedirs(work, exist_ok=True)
    if args.background_4k:
        from tests.support.scaled_subject import scaled_subject, synthetic_video
        video = os.path.join(CACHE, "background_4k.mp4")
        if not os.path.exists(video):
            synthetic_video(video, 4.2, 2160, 3840)
        big = os.path.join(CACHE, "carphone_subject_4k")
        if not os.path.isdir(big):
            scaled_subject(subject, big, video, (2160, 3840))
        subject = big
    settings = InferenceSettings(batch_size=args.batch_size, show_progress=True,
                                 max_seconds=3600, lip_sync_frames=0)
    warm = _speech_like(os.path.join(work, "warm.wav"), 0.6)
    # One loaded talker (what infer --jobs and the Python API keep): the warm-up compiles,
    # the measured run compiles nothing.
    talker = Talker.load(subject=subject, a2e=a2e, renderer=renderer, settings=settings)
    talker.say(warm, os.path.join(work, "warm.mp4"))
    audio = _speech_like(os.path.join(work, f"speech_{args.seconds}.wav"), args.seconds)
    out = os.path.join(work, f"out_{r}.mp4")
    model = load_renderer(renderer)
    # Memory first, in a run of its own: the sampler reads /proc every 0.2 s, which costs CPU
    # that the timed runs must not pay.
    with TreeRssSampler() as sampler:
        talker.say(audio, out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # before the reference
    tree_peak = sampler.peak
    pipeline_times, generator_times = [], []
    for _ in range(args.repeats):
        # Pipeline and reference alternate, so a change of the machine's load between them
        # moves both; the ratio is the median of the per-repeat ratios.
        summary = talker.say(audio, out)
        pipeline_times.append(summary["total_s"] - summary["setup_s"])
        generator_times.append(generator_seconds(model, summary))
    ratios = [p / g for p, g in zip(pipeline_times, generator_times)]
    compute_s, generator_s = median(pipeline_times), median(generator_times)
    split = split_run(talker, audio, out) if args.split else None
    return {"resolution": r, "background": "3840x2160" if args.background_4k else "176x144",
            "frames": summary["frames"], "output_s": summary["seconds"],
            "batch_size": summary["batch_size"], "compute_s": round(compute_s, 2),
            "compute_s_per_output_s": round(compute_s / summary["seconds"], 3),
            "frames_per_s": round(summary["frames"] / compute_s, 2),
            "generator_s": round(generator_s, 2),
            "pipeline_over_generator": round(median(ratios), 3),
            "ratios": [round(x, 3) for x in ratios], "split_s": split,
            "peak_rss_gib": round(peak / 2 ** 30, 3),
            "peak_tree_pss_gib": round(tree_peak / 2 ** 30, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", default="256,512,1024")
    parser.add_argument("--seconds", type=float, default=2.0, help="audio per measured run")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--split", action="store_true",
                        help="one more run, timing the 3DMM renders and the generator apart")
    parser.add_argument("--repeats", type=int, default=3,
                        help="pipeline runs, each followed by its generator reference")
    parser.add_argument("--background-4k", type=float, default=0.0,
                        help="also run this many seconds on a 4K background (0: skip)")
    parser.add_argument("--resolution-4k", type=int, default=256)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--resolution", type=int, default=256, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0

    runs = []
    plan = [(int(r), args.seconds, False) for r in args.resolutions.split(",") if r]
    if args.background_4k:
        plan.append((args.resolution_4k, args.background_4k, True))
    for resolution, seconds, big in plan:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--resolution",
               str(resolution), "--seconds", str(seconds), "--repeats", str(args.repeats)]
        if args.split:
            cmd.append("--split")
        if big:
            cmd += ["--background-4k", str(seconds)]
        if args.batch_size:
            cmd += ["--batch-size", str(args.batch_size)]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return done.returncode
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        row = runs[-1]
        print(f"{row['resolution']:>5} px  {row['background']:>9}  {row['frames']:>5} frames  "
              f"{row['compute_s_per_output_s']:>7.2f} s/s  {row['frames_per_s']:>6.2f} fps  "
              f"generator {row['generator_s']:>7.2f} s  x{row['pipeline_over_generator']:.2f}  "
              f"peak RSS {row['peak_rss_gib']:.2f} GiB (with ffmpeg "
              f"{row['peak_tree_pss_gib']:.2f} GiB)", flush=True)
    from benchmarks.machine_info import machine_description
    import jax
    print(json.dumps({"bench": "infer", "machine": machine_description({}),
                      "jax": jax.__version__, "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
