"""Audio in, lip-synced HD video of the subject out: `python -m metatalk_jax.infer`.

    python -m metatalk_jax.infer (--talker me.talker |
                                  --subject subjects/me --a2e runs/me_a2e --renderer runs/me_hd)
        (--audio speech.wav | --text "Hello." | --jobs jobs.jsonl) --out out.mp4
        [--resolution 256|512|1024] [--preview]
        [--batch-size N] [--max-seconds 600] [--crf 18] [--preset medium]
        [--lip-sync-frames 250] [--model bfm.npz] [--video talk.mp4] [--allow-other-subject]
        [--no-rest-in-pauses]

--a2e / --renderer: a training work dir (its newest checkpoint) or one step directory
(WORKDIR/checkpoints/<step>). --resolution must match the renderer's training resolution (it is
checked; default: the renderer's). --preview also writes OUT.preview.mp4 (3DMM render | output |
background frame, labelled face crops, then the mouth of output and background frame enlarged).
The driving audio is brought to the front end's loudness first (any recording level drives the
same mouth), and in its pauses (>= 0.4 s) the drive settles on the subject's own closed mouth
(--no-rest-in-pauses keeps the A2E's expressions there). Beside the video, OUT.drive.json
records each frame's background frame, the 3DMM mouth opening that drove it and whether the
audio speaks there; the summary's `lip_sync` is measured on the written pixels against them
(metatalk_jax/eval/pixel_lip_sync.py: r_drive, r_background, the mouth's sharpness against the
real frames, its opening in pauses against speech). --model: the morphable model .npz `prepare` used
(default: the offline model); --video: the subject's source video if it moved since `prepare`.
Each training run records the subject it was trained on (WORKDIR/trained_on.json); an A2E or
renderer of another subject is refused unless --allow-other-subject is given.

--text speaks the sentence with espeak-ng. --jobs runs many videos with one load and one compile
(inference/jobs.py: JSON lines {"audio" | "text", "out"}; --out is not used); the same is
available from Python (inference/talker.py: Talker.load(...).say(...)).

Prints a JSON summary on stdout (one per job with --jobs). Exit status 0 on success, 2 on bad
input (one `error:` line on stderr, nothing written; an --out that cannot be written is refused
before anything is loaded), 1 with a traceback on any other failure; with --jobs, the number of
jobs that failed (each reported on its own line; the others are written).
"""

from __future__ import annotations

import argparse
import signal
import sys

from metatalk_jax import runtime
from metatalk_jax.cli_errors import report_bad_input, run_stage
from metatalk_jax.errors import InputError


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    runtime.start()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--talker", help="a talker bundle (python -m metatalk_jax.export), "
                                         "instead of the next three")
    parser.add_argument("--subject", help="prepared subject directory")
    parser.add_argument("--a2e", help="A2E work dir or checkpoint step dir")
    parser.add_argument("--renderer", help="renderer work dir or checkpoint step dir")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--audio", help="driving audio (any file ffmpeg reads)")
    what.add_argument("--text", help="a sentence to say (spoken by espeak-ng)")
    what.add_argument("--jobs", help="a jobs file: JSON lines of {\"audio\" | \"text\", "
                                     "\"out\"} (inference/jobs.py)")
    parser.add_argument("--out", help="output .mp4 (not with --jobs)")
    parser.add_argument("--resolution", type=int, choices=(256, 512, 1024), default=None,
                        help="renderer crop side (default: the renderer checkpoint's)")
    parser.add_argument("--preview", action="store_true",
                        help="also write OUT.preview.mp4: render | output | original")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="frames per render/generator call (default 8/4/2 at "
                             "256/512/1024, at most 4 for 4K frames)")
    parser.add_argument("--max-seconds", type=float, default=600.0,
                        help="longest audio accepted, seconds (default 600)")
    parser.add_argument("--crf", type=int, default=18,
                        help="H.264 quality, 0 (lossless) .. 51 (default 18)")
    parser.add_argument("--preset", default="medium",
                        help="libx264 speed preset, ultrafast .. veryslow (default medium)")
    parser.add_argument("--lip-sync-frames", type=int, default=250,
                        help="output frames (spread evenly) whose lip sync is measured on the "
                             "pixels after writing, for the summary; 0 = skip (default 250)")
    parser.add_argument("--model", default=None, help="morphable model .npz prepare used")
    parser.add_argument("--video", default=None, help="the subject's source video, if moved")
    parser.add_argument("--no-rest-in-pauses", action="store_true",
                        help="keep the A2E's expressions in the audio's pauses (default: the "
                             "mouth settles on the subject's closed mouth there)")
    parser.add_argument("--allow-other-subject", action="store_true",
                        help="use an A2E / renderer trained on another subject (refused "
                             "otherwise: each run records its subject)")
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        return report_bad_input(InputError(f"--batch-size must be positive, got "
                                           f"{args.batch_size}"))
    if (args.out is None) == (args.jobs is None):
        parser.error("--out is needed with --audio / --text, and not with --jobs")
    trio = (args.subject, args.a2e, args.renderer)
    if (args.talker is None) != all(v is not None for v in trio) or (
            args.talker is not None and any(v is not None for v in trio)):
        parser.error("pass --talker, or all of --subject, --a2e and --renderer")
    from metatalk_jax.inference.talker import check_output
    try:
        if args.jobs is None:
            check_output(args.out)         # refused before anything is loaded
        else:
            from metatalk_jax.inference.jobs import read_jobs
            jobs = read_jobs(args.jobs)
    except InputError as err:
        return report_bad_input(err)

    # A SIGTERM (a job scheduler, `kill`) unwinds like Ctrl-C, so the writers delete their
    # temporary files instead of leaving them behind.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    from metatalk_jax.inference.pipeline import InferenceSettings
    from metatalk_jax.inference.talker import Talker
    settings = InferenceSettings(resolution=args.resolution, batch_size=args.batch_size,
                                 max_seconds=args.max_seconds, model_path=args.model,
                                 video=args.video, preview=args.preview, crf=args.crf,
                                 preset=args.preset, lip_sync_frames=max(0, args.lip_sync_frames),
                                 allow_other_subject=args.allow_other_subject,
                                 rest_in_pauses=not args.no_rest_in_pauses)
    if args.audio is not None and args.talker is None:
        from metatalk_jax.inference.pipeline import run_inference
        return run_stage(lambda: run_inference(args.subject, args.a2e, args.renderer,
                                               args.audio, args.out, settings))

    def load():
        return Talker.load(args.talker, subject=args.subject, a2e=args.a2e,
                           renderer=args.renderer, settings=settings)
    if args.audio is not None:
        return run_stage(lambda: Talker.load(args.talker, settings=settings,
                                             first_audio=args.audio).say(args.audio, args.out))
    if args.text is not None:
        return run_stage(lambda: load().say(args.text, args.out))
    try:
        talker = load()
    except InputError as err:
        return report_bad_input(err)
    from metatalk_jax.inference.jobs import run_jobs
    results = run_jobs(talker, jobs)
    return min(125, sum(not r["ok"] for r in results))


if __name__ == "__main__":
    sys.exit(main())
