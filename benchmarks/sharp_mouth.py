"""A sharp mouth at the same budget: the renderer settings against each other, on the pixels.

    python benchmarks/sharp_mouth.py [--steps 1200] [--settings baseline,reference64,...]
    python benchmarks/sharp_mouth.py --ceiling [--resolutions 64,96,128] [--crfs 0,12,18]

For each setting, configs/renderer.py:cpu with the setting's overrides trains --steps steps on the
carphone subject (90 training frames, prepared once with configs/prepare.py:tiny and cached),
then two videos are made with `render_video` (the code behind `infer`) and measured on their
decoded pixels against the real footage, with no weights of the project's own:

  held-out reconstruction  every frame driven by its own fitted expression and drawn on itself,
      scored on the 10 held-out frames (the renderer never trained on them; the mouth references
      come from the training frames only): inside each real frame's mouth box (dlib lips,
      widened by half the mouth width), L1 (levels / 255) and SSIM (dm-pix, 11x11 Gaussian) of
      output against the real frame, and the detail ratio (eval/mouth_detail.py);
  reversed drive           the expressions in reverse order on the frames in order: pixel
      r_drive / r_background (eval/pixel_lip_sync.py) and the detail ratio over all frames.

plus the training wall time, as a ratio to the first setting's (same process, same machine).

--ceiling: what no renderer can beat on this footage. The real frames themselves are cropped by
the crop module at each resolution, pasted back onto themselves and encoded at each CRF; their
mouth sharpness against the source frames is the most a perfect renderer at that resolution and
encoder setting could score. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):
    sys.path.insert(0, REPO)

from metatalk_jax.runtime import use_xla_convolutions_on_cpu  # noqa: E402

use_xla_convolutions_on_cpu()

SETTINGS = {   # name -> config overrides of renderer:cpu
    "baseline": ["data.mouth_reference=False", "data.resolution=64",
                 "model.correction_factor=1"],
    "reference64": ["data.mouth_reference=True", "data.resolution=64",
                    "model.correction_factor=1"],
    "reference128": ["data.mouth_reference=True", "data.resolution=128",
                     "model.correction_factor=2"],
}
BOX_MARGIN = 0.5


def _config(subject: str, name: str, steps: int):
    from metatalk_jax.config_loading import load_config
    return load_config("renderer:cpu", [f"data.subject={subject}", *SETTINGS[name],
                                        f"total_steps={steps}",
                                        f"checkpoint_every_steps={steps}",
                                        f"eval_every_steps={steps}"])


def held_out_scores(video_out: str, subject, fps: float, frames) -> dict:
    """Mouth-box L1, SSIM and detail ratio of output frames `frames` against the real ones."""
    import dm_pix
    import numpy as np

    from metatalk_jax.eval.mouth_detail import box_patch, mouth_box, sharpness_ratio
    from metatalk_jax.eval.mouth_opening import MouthMeter
    from metatalk_jax.media.video_read import read_frames
    wanted = set(int(i) for i in frames)
    real = {i: f for i, f in enumerate(read_frames(subject.meta["source"]["path"], fps=fps))
            if i in wanted}
    made = {i: f for i, f in enumerate(read_frames(video_out)) if i in wanted}
    meter, l1, ssim, detail = MouthMeter(), [], [], []
    for i in sorted(wanted):
        points = meter.landmarks(real[i])
        box = None if points is None else mouth_box(points, real[i].shape, BOX_MARGIN)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        a = made[i][y0:y1, x0:x1].astype(np.float32) / 255.0
        b = real[i][y0:y1, x0:x1].astype(np.float32) / 255.0
        l1.append(float(np.mean(np.abs(a - b))))
        if min(a.shape[:2]) >= 11:
            ssim.append(float(dm_pix.ssim(a[None], b[None], max_val=1.0)[0]))
        detail.append(sharpness_ratio(box_patch(made[i], box), box_patch(real[i], box)))
    return {"frames": len(l1), "mouth_l1": round(float(np.mean(l1)), 4),
            "mouth_ssim": round(float(np.mean(ssim)), 4),
            "mouth_sharpness": round(float(np.nanmedian(detail)), 3)}


def ceiling(subject_dir: str, resolutions, crfs, tmp: str) -> dict:
    """{"R@crf": sharpness} of the real frames cropped at R, pasted back and encoded at crf."""
    import numpy as np

    from metatalk_jax.eval.pixel_lip_sync import DriveRecord, pixel_lip_sync
    from metatalk_jax.media.video_read import read_frames
    from metatalk_jax.media.video_write import Mp4Writer
    from metatalk_jax.subject.layout import load_subject
    from metatalk_jax.tracking.crop import crop_frame, paste_back
    subject = load_subject(subject_dir)
    video, fps = subject.meta["source"]["path"], float(subject.meta["fps"])
    frames = list(read_frames(video, fps=fps))[:subject.num_frames]
    record = DriveRecord(fps, video, fps, np.arange(len(frames)), np.zeros(len(frames)))
    out = {}
    for r in resolutions:
        matrices = subject.crop_boxes().matrices(r)
        pasted = [paste_back(f, crop_frame(f, matrices[j], r), matrices[j])
                  for j, f in enumerate(frames)]
        for crf in crfs:
            path = os.path.join(tmp, f"ceiling_{r}_{crf}.mp4")
            with Mp4Writer(path, fps, crf=crf, preset="medium") as writer:
                for frame in pasted:
                    writer.write(frame)
            scores = pixel_lip_sync(path, record, show_progress=False)
            out[f"{r}@crf{crf}"] = round(scores.mouth_sharpness, 3)
            print(r, crf, out[f"{r}@crf{crf}"], flush=True)
    return out


def run_setting(subject_dir: str, name: str, steps: int, tmp: str) -> dict:
    import numpy as np

    from metatalk_jax.data_pipelines.subject_frames import open_target_source
    from metatalk_jax.inference.pipeline import InferenceSettings, prepare_inference, render_video
    from metatalk_jax.train.loop import train_and_evaluate
    workdir = os.path.join(tmp, name)
    start = time.perf_counter()
    train_and_evaluate(_config(subject_dir, name, steps), workdir, log=lambda *_: None)
    train_s = time.perf_counter() - start
    settings = InferenceSettings(show_progress=False, lip_sync_frames=250, preset="veryfast")
    subject, renderer, video = prepare_inference(subject_dir, workdir, settings)
    own = np.asarray(subject.coefficients["expression"])
    fps = float(subject.meta["fps"])
    train = len(open_target_source(subject.tfds_dir, "train"))
    quiet = InferenceSettings(show_progress=False, lip_sync_frames=0, preset="veryfast")
    path = os.path.join(tmp, f"{name}_own.mp4")
    render_video(subject, renderer, video, own, path, quiet)
    row = {"train_s": round(train_s, 1),
           "held_out": held_out_scores(path, subject, fps, range(train, len(own)))}
    reversed_drive = render_video(subject, renderer, video, own[::-1],
                                  os.path.join(tmp, f"{name}_reversed.mp4"), settings)
    pixels = reversed_drive["lip_sync"]
    row["reversed"] = {k: pixels[k] for k in ("r_drive", "r_background", "mouth_sharpness")}
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--subject", default=None,
                        help="a prepared carphone subject (default: prepared once and cached)")
    parser.add_argument("--ceiling", action="store_true",
                        help="only the footage's own crop-paste-encode ceiling (module docstring)")
    parser.add_argument("--resolutions", default="64,96,128")
    parser.add_argument("--crfs", default="0,12,18")
    args = parser.parse_args(argv)
    from benchmarks.infer import bench_subject
    from benchmarks.machine_info import machine_description
    from metatalk_jax.runtime import enable_compilation_cache
    enable_compilation_cache()
    subject = args.subject or bench_subject()
    if args.ceiling:
        with tempfile.TemporaryDirectory() as tmp:
            values = ceiling(subject, [int(r) for r in args.resolutions.split(",")],
                             [int(c) for c in args.crfs.split(",")], tmp)
        print(json.dumps({"bench": "sharp_mouth_ceiling", "sharpness": values,
                          "machine": machine_description({})}))
        return 0
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.settings.split(","):
            rows[name] = run_setting(subject, name, args.steps, tmp)
            print(name, json.dumps(rows[name]), flush=True)
    first = next(iter(rows.values()))["train_s"]
    for row in rows.values():
        row["train_time_ratio"] = round(row["train_s"] / first, 2)
    print(json.dumps({"bench": "sharp_mouth", "steps": args.steps, "results": rows,
                      "machine": machine_description({}), "load_avg": list(os.getloadavg())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
