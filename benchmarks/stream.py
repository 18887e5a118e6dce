"""A live stream's latency and real-time factor: `Talker.stream` on CPU at 64 and 256 px.

    python benchmarks/stream.py [--resolutions 64,256] [--seconds 6]

On the carphone subject (benchmarks/infer.py's) with random-initialised checkpoints of the real
architectures: the default A2E; at 64 px configs/renderer.py:cpu's generator, at 256 AudioDVP's
unet_256. After a warm-up stream (compiles), two runs of --seconds of speech-like audio:

  real-time factor   the audio fed as fast as the stream takes it: compute seconds per second
                     of audio (< 1: keeps up with live audio);
  latency            the audio fed at its real pace, in 40 ms chunks: for every frame, the wall
                     time from the moment its own audio (time k / fps) has arrived to the moment
                     the frame is yielded; median and 95th percentile. Its floor is the look-
                     ahead (inference/live_stream.py, printed), plus the batching.

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):
    sys.path.insert(0, REPO)

CHUNK_S = 0.04


def renderer_for(subject: str, resolution: int) -> tuple[str, str]:
    from benchmarks.infer import CACHE, checkpoints
    from tests.support.infer_fixtures import random_renderer
    if resolution != 64:
        return checkpoints(subject, resolution)
    a2e, _ = checkpoints(subject, 256)
    path = os.path.join(CACHE, "renderer_cpu_64")
    if not os.path.isdir(path):
        random_renderer(path, subject, resolution=64, variant="cpu",
                        overrides=["data.mouth_reference=False"])
    return a2e, path


def paced(audio, rate: int, start: float | None):
    """40 ms chunks of `audio`; with `start`, each released at its real time after start."""
    step = int(round(CHUNK_S * rate))
    for k, first in enumerate(range(0, len(audio), step)):
        if start is not None:
            wait = start + (first + step) / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        yield audio[first:first + step]


def main(argv=None) -> int:
    import numpy as np
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", default="64,256")
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args(argv)
    from metatalk_jax.runtime import skip_absent_tpu, use_xla_convolutions_on_cpu
    skip_absent_tpu()
    use_xla_convolutions_on_cpu()
    from benchmarks.infer import bench_subject
    from benchmarks.machine_info import machine_description
    from metatalk_jax.inference.live_stream import lookahead_frames
    from metatalk_jax.inference.pipeline import InferenceSettings
    from metatalk_jax.inference.talker import Talker
    rate, fps = 16000, 25.0
    t = np.arange(int(args.seconds * rate)) / rate
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)))
    audio = audio.astype(np.float32)
    subject = bench_subject()
    rows = []
    for resolution in (int(r) for r in args.resolutions.split(",") if r):
        a2e, renderer = renderer_for(subject, resolution)
        talker = Talker.load(subject=subject, a2e=a2e, renderer=renderer,
                             settings=InferenceSettings(lip_sync_frames=0, show_progress=False))
        for _ in talker.stream(paced(audio[:rate * 3], rate, None)):    # compile
            pass
        start = time.perf_counter()
        count = sum(1 for _ in talker.stream(paced(audio, rate, None)))
        rtf = (time.perf_counter() - start) / args.seconds
        start = time.perf_counter()
        latency = []
        for k, _ in enumerate(talker.stream(paced(audio, rate, start))):
            latency.append(time.perf_counter() - (start + k / fps))
        ahead = lookahead_frames(talker.a2e.window, int(talker.subject.meta["audio_samples"]),
                                 talker.renderer.window, fps, rate) / fps
        row = {"resolution": resolution, "frames": count, "real_time_factor": round(rtf, 3),
               "latency_median_s": round(float(np.median(latency)), 3),
               "latency_p95_s": round(float(np.percentile(latency, 95)), 3),
               "lookahead_s": round(ahead, 3)}
        rows.append(row)
        print(f"{resolution:5d} px: real-time factor {row['real_time_factor']:.2f}, latency "
              f"median {row['latency_median_s']:.2f} s, p95 {row['latency_p95_s']:.2f} s "
              f"(look-ahead {ahead:.2f} s)", flush=True)
    print(json.dumps({"bench": "stream", "machine": machine_description({}), "runs": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
