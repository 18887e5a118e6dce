"""Many sentences from one process: `infer --jobs` against one `infer` run per sentence.

    python benchmarks/infer_jobs.py [--sentences 10] [--resolution 256]
    python benchmarks/infer_jobs.py --talker demo.talker     # a trained talker's bundle

With --talker, both sides run that bundle (e.g. the demo's, exported with
`python -m metatalk_jax.export`). Without it, on the carphone subject (benchmarks/infer.py's,
prepared once and cached) with random-initialised checkpoints of the real architectures (the default
A2E; unet_256 at 256), N short sentences (1.2-2.1 s of speech-like audio each) are made twice: as N
separate `python -m metatalk_jax.infer --audio` processes, one after another (each loads the subject
and both checkpoints and compiles; JAX's persistent compilation cache is on, as for any user), and
as one `infer --jobs` process (one load, one compile). Wall time of each, and their ratio
(jobs / separate; target <= 0.4 on 2 cores). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):
    sys.path.insert(0, REPO)

from benchmarks.infer import _speech_like, bench_subject, checkpoints  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--talker", default=None, help="a talker bundle to run instead")
    args = parser.parse_args(argv)
    from metatalk_jax.runtime import skip_absent_tpu
    skip_absent_tpu()
    if args.talker:
        models = ["--talker", args.talker]
    else:
        subject = bench_subject()
        a2e, renderer = checkpoints(subject, args.resolution)
        models = ["--subject", subject, "--a2e", a2e, "--renderer", renderer]
    tmp = tempfile.mkdtemp(prefix="infer_jobs_")
    audios = [_speech_like(os.path.join(tmp, f"s{k}.wav"), 1.2 + 0.1 * k)
              for k in range(args.sentences)]
    base = [sys.executable, "-m", "metatalk_jax.infer", *models, "--lip-sync-frames", "0"]
    # One warm-up run fills the persistent compilation cache for both sides alike.
    subprocess.run(base + ["--audio", audios[0], "--out", os.path.join(tmp, "warm.mp4")],
                   check=True, cwd=REPO, capture_output=True)
    start = time.perf_counter()
    for k, audio in enumerate(audios):
        subprocess.run(base + ["--audio", audio, "--out", os.path.join(tmp, f"one{k}.mp4")],
                       check=True, cwd=REPO, capture_output=True)
    separate = time.perf_counter() - start
    jobs = os.path.join(tmp, "jobs.jsonl")
    with open(jobs, "w") as f:
        for k, audio in enumerate(audios):
            f.write(json.dumps({"audio": audio, "out": f"job{k}.mp4"}) + "\n")
    start = time.perf_counter()
    done = subprocess.run(base + ["--jobs", jobs], cwd=REPO, capture_output=True, text=True)
    together = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    row = {"sentences": args.sentences, "talker": args.talker or f"random {args.resolution}",
           "separate_s": round(separate, 2), "jobs_s": round(together, 2),
           "ratio": round(together / separate, 3)}
    print(f"{args.sentences} sentences ({row['talker']}): {row['separate_s']:.1f} s as "
          f"separate infer runs, {row['jobs_s']:.1f} s as one --jobs run: ratio "
          f"{row['ratio']:.2f}")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
