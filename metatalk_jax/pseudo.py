"""Generate pseudo videos of a prepared subject: Wav2Lip driven by many audio clips, refitted.

    python -m metatalk_jax.pseudo --subject subjects/me --audio-dir lrs2/main --wav2lip wav2lip.pth
                                  --out pseudo/me [--batch-size 128] [--clips-per-part 16]
                                  [--max-clips N] [--fit-steps 12] [--config.key=value ...]

The corpus format: data_pipelines/pseudo_video.py; settings: configs/pseudo.py
(`--config FILE[:variant]`, and any key as --config.key=value).
Rerunning continues after the last finished part. Exit status 0 on success, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from metatalk_jax.cli_errors import report_bad_input
from metatalk_jax.config_loading import config_overrides, load_config

CONFIG_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs", "pseudo.py")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subject", required=True, help="prepared subject directory")
    parser.add_argument("--audio-dir", required=True,
                        help="LRS2-style folder: DIR/<id>/<utterance>.wav|.mp4 or DIR/*.wav")
    parser.add_argument("--wav2lip", required=True,
                        help="Wav2Lip checkpoint (.pth or a converted directory)")
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
    for flag, key in ((args.batch_size, "batch_size"), (args.clips_per_part, "clips_per_part"),
                      (args.max_clips, "max_clips"), (args.fit_steps, "fit.steps")):
        if flag is not None:
            if flag < (0 if key == "max_clips" else 1):
                print(f"error: --{key.replace('_', '-').replace('fit.', 'fit-')} must be "
                      f"positive, got {flag}", file=sys.stderr)
                return 2
            overrides.append(f"{key}={flag}")
    from metatalk_jax.xla_cpu_flags import use_xla_convolutions_on_cpu
    use_xla_convolutions_on_cpu()        # before JAX starts: Wav2Lip's convs on XLA:CPU
    from metatalk_jax.prepare import enable_compilation_cache
    from metatalk_jax.pseudo_video.generate import generate_pseudo_videos
    enable_compilation_cache()
    try:
        config = load_config(args.config, overrides)
        summary = generate_pseudo_videos(args.subject, args.audio_dir, args.wav2lip, args.out,
                                         config)
    except (ValueError, OSError, KeyError) as err:
        return report_bad_input(err)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
