"""Prepare a subject: a target video of one person -> a subject directory for training.

    python -m metatalk_jax.prepare --video talk.mp4 --out subjects/me
                                   [--model bfm.npz] [--config configs/prepare.py:tiny]
                                   [--face X,Y [--face-frame N]] [--overwrite]
                                   [--keep-shots N,M] [--drop-shots N,M]
                                   [--config.key=value ...]

The subject is one person: the largest, most central face of the first frame with a face, or
the face at --face X,Y (video pixels) in frame --face-frame (at the config's fps, default 25).
Every face of the video is followed in short tracks (one per person per shot) and each track is
kept, left out as another person, or left out as ambiguous, from its faces' descriptors against
the target's own spread over the whole video. The shots are listed on the terminal, in
report.json and on a contact sheet (previews/identity.png; `<out>.tracking/identity.png` when
too little of the target is left): run again with --keep-shots / --drop-shots and the numbers
there to correct it, reusing the face tracks already computed (no frame is read again; the
subject is replaced without --overwrite). A subject of another video, model or config at --out
is only replaced with --overwrite.

Without --model the offline BFM-derived model is used (built once from a registry wheel; see
`python -m metatalk_jax.face3d.assets`). What the directory holds: metatalk_jax/subject/layout.py.
Exit status 0 on success (or when the subject is already up to date), 2 on bad input (one
`error:` line), 1 with a traceback on any other failure.
"""

from __future__ import annotations

import argparse
import sys

from metatalk_jax import runtime
from metatalk_jax.cli_errors import report_bad_input
from metatalk_jax.config_loading import OVERRIDE_HELP, config_overrides, load_config
from metatalk_jax.errors import InputError

DEFAULT_CONFIG = "prepare"


def main(argv=None) -> int:
    runtime.start()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog=OVERRIDE_HELP)
    parser.add_argument("--video", required=True, help="target video (any container ffmpeg reads)")
    parser.add_argument("--out", required=True, help="subject directory to write")
    parser.add_argument("--model", default=None, help="morphable model .npz (default: offline)")
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="config file[:variant], default configs/prepare.py")
    parser.add_argument("--face", default=None, metavar="X,Y",
                        help="the target person: the face at this point (video pixels)")
    parser.add_argument("--face-frame", type=int, default=None, metavar="N",
                        help="the frame --face refers to (at the config's fps; default 0)")
    parser.add_argument("--keep-shots", default=None, metavar="N,M",
                        help="after looking at previews/identity.png: these shots are the "
                             "target too (the face tracks of the last run are reused)")
    parser.add_argument("--drop-shots", default=None, metavar="N,M",
                        help="... and these are not (numbers of previews/identity.png)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a subject prepared from another video, model or config")
    args, rest = parser.parse_known_args(argv)
    overrides = config_overrides(parser, rest)
    if args.face_frame is not None and args.face is None:
        parser.error("--face-frame needs --face X,Y")
    from metatalk_jax.subject.prepare_subject import prepare_subject
    try:
        config = load_config(args.config, overrides)
        if args.face is not None:       # part of the config, so of the subject's fingerprint
            from metatalk_jax.subject.tracked_person import parse_point
            parse_point(args.face)
            config.target_face = args.face
            config.target_frame = int(args.face_frame or 0)
        from metatalk_jax.subject.tracked_person import parse_shots
        for flag, key in (("--keep-shots", "keep_shots"), ("--drop-shots", "drop_shots")):
            value = getattr(args, key)
            if value is not None:
                config[key] = ",".join(str(n) for n in parse_shots(value, flag))
        from metatalk_jax.media.ffmpeg_tools import check_input_file
        check_input_file(args.video)
        from metatalk_jax.subject.face_model import load_morphable
        model, sha, name = load_morphable(args.model)
        prepare_subject(args.video, args.out, model, sha, config, model_name=name,
                        overwrite=args.overwrite)
    except InputError as err:   # MediaError and TrackingError are InputErrors too
        return report_bad_input(err)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
