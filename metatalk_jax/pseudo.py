"""Generate pseudo videos of a prepared subject: the A2E network's extra training data.

Two teachers write the same corpus format (data_pipelines/pseudo_corpus.py):

  wav2lip (default): Wav2Lip driven by many audio clips re-voices the subject, each pseudo frame
    is refitted to a 3DMM expression (metatalk_jax/pseudo_video/generate.py):

    python -m metatalk_jax.pseudo --subject subjects/me --audio-dir lrs2/main --wav2lip wav2lip.pth
                                  --out pseudo/me [--batch-size 128] [--clips-per-part 16]
                                  [--max-clips N] [--fit-steps 12] [--config.key=value ...]

  visemes: a stand-in needing no Wav2Lip weights and no audio corpus: espeak-ng speaks ~40
    built-in sentences (or --text FILE, one per line) and its phoneme timings become mouth shapes
    in the subject's expression space (metatalk_jax/pseudo_video/viseme_teacher.py). Rule-based
    mouths and synthetic voices: use it to try the pipeline, Wav2Lip for quality.

    python -m metatalk_jax.pseudo --teacher visemes --subject subjects/me --out pseudo/me_visemes
                                  [--text sentences.txt] [--max-clips N] [--clips-per-part 16]

Settings: configs/pseudo.py (`--config FILE[:variant]`, and any key as --config.key=value; the
viseme teacher's are under config.visemes). Rerunning continues after the last finished part.
Exit status 0 on success, 2 on bad input (one `error:` line), 1 with a traceback on any other
failure.
"""

from __future__ import annotations

import argparse
import sys

from metatalk_jax import runtime
from metatalk_jax.cli_errors import report_bad_input, run_stage
from metatalk_jax.errors import InputError
from metatalk_jax.config_loading import OVERRIDE_HELP, config_overrides, load_config

TEACHERS = ("wav2lip", "visemes")
CONFIG_FILE = "pseudo"


def main(argv=None) -> int:
    runtime.start()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog=OVERRIDE_HELP)
    parser.add_argument("--teacher", choices=TEACHERS, default="wav2lip",
                        help="wav2lip (default): Wav2Lip pseudo videos; visemes: espeak-ng "
                             "speech with rule-based mouth shapes (no weights, no audio)")
    parser.add_argument("--subject", required=True, help="prepared subject directory")
    parser.add_argument("--audio-dir", default=None,
                        help="wav2lip: LRS2-style folder DIR/<id>/<utterance>.wav|.mp4 or "
                             "DIR/*.wav")
    parser.add_argument("--wav2lip", default=None,
                        help="wav2lip: Wav2Lip checkpoint (.pth or a converted directory)")
    parser.add_argument("--text", default=None,
                        help="visemes: UTF-8 file of sentences, one per line (default: built-in)")
    parser.add_argument("--out", required=True, help="pseudo-video corpus directory")
    parser.add_argument("--config", default=CONFIG_FILE,
                        help="config file[:variant], default configs/pseudo.py")
    parser.add_argument("--batch-size", type=int, default=None, help="Wav2Lip frames per call")
    parser.add_argument("--clips-per-part", type=int, default=None)
    parser.add_argument("--max-clips", type=int, default=None,
                        help="only the first N clips (sorted by id)")
    parser.add_argument("--fit-steps", type=int, default=None, help="expression fit Adam steps")
    args, rest = parser.parse_known_args(argv)
    overrides = config_overrides(parser, rest)
    problem = _teacher_problem(args)
    if problem:
        return report_bad_input(InputError(problem))
    max_clips_key = "visemes.max_clips" if args.teacher == "visemes" else "max_clips"
    for flag, key in ((args.batch_size, "batch_size"), (args.clips_per_part, "clips_per_part"),
                      (args.max_clips, max_clips_key), (args.fit_steps, "fit.steps")):
        if flag is not None:
            if flag < (0 if key.endswith("max_clips") else 1):
                name = key.split(".")[-1].replace("_", "-")
                name = "fit-steps" if key == "fit.steps" else name
                return report_bad_input(InputError(f"--{name} must be positive, got {flag}"))
            overrides.append(f"{key}={flag}")
    if args.text is not None:
        overrides.append(f"visemes.sentences_file={args.text}")
    if args.teacher == "visemes":
        return _run_visemes(args, overrides)
    from metatalk_jax.pseudo_video.generate import generate_pseudo_videos
    return run_stage(lambda: generate_pseudo_videos(
        args.subject, args.audio_dir, args.wav2lip, args.out, load_config(args.config, overrides)))


def _teacher_problem(args) -> str | None:
    """Why the flags do not fit the chosen teacher (None when they do)."""
    if args.teacher == "wav2lip":
        missing = [flag for flag, value in (("--audio-dir", args.audio_dir),
                                            ("--wav2lip", args.wav2lip)) if not value]
        if missing:
            return (f"--teacher wav2lip needs {' and '.join(missing)} (or use --teacher "
                    "visemes, which needs neither)")
        if args.text is not None:
            return "--text is for --teacher visemes (wav2lip reads --audio-dir)"
        return None
    given = [flag for flag, value in (("--audio-dir", args.audio_dir), ("--wav2lip", args.wav2lip),
                                      ("--batch-size", args.batch_size),
                                      ("--fit-steps", args.fit_steps)) if value is not None]
    if given:
        return f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} for --teacher wav2lip"
    return None


def _run_visemes(args, overrides) -> int:
    from metatalk_jax.pseudo_video.viseme_teacher import generate_viseme_corpus
    return run_stage(lambda: generate_viseme_corpus(args.subject, args.out,
                                                    load_config(args.config, overrides)))


if __name__ == "__main__":
    sys.exit(main())
