"""Export a trained talker as one portable bundle: `python -m metatalk_jax.export`.

    python -m metatalk_jax.export --subject subjects/me --a2e runs/me_a2e --renderer runs/me_hd \
        --out me.talker [--model bfm.npz] [--video talk.mp4]
    python -m metatalk_jax.infer --talker me.talker --audio speech.wav --out out.mp4

The bundle (inference/talker_bundle.py) holds exactly what inference needs -- the subject's
background video and per-frame data, the A2E's and the generator's weights with their configs,
the face model -- and a manifest of checksums; --out may be a bucket URL (gs://...). The three
inputs are checked against each other as `infer` checks them. Prints the manifest's summary as
JSON. Exit status 0, 2 on bad input (one `error:` line), 1 with a traceback otherwise.
"""

from __future__ import annotations

import argparse
import sys

from metatalk_jax import runtime
from metatalk_jax.cli_errors import run_stage


def main(argv=None) -> int:
    runtime.start()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subject", required=True, help="prepared subject directory")
    parser.add_argument("--a2e", required=True, help="A2E work dir or checkpoint step dir")
    parser.add_argument("--renderer", required=True,
                        help="renderer work dir or checkpoint step dir")
    parser.add_argument("--out", required=True, help="bundle directory to write (or gs://...)")
    parser.add_argument("--model", default=None, help="morphable model .npz prepare used")
    parser.add_argument("--video", default=None, help="the subject's source video, if moved")
    args = parser.parse_args(argv)

    def export() -> dict:
        from metatalk_jax.inference.talker_bundle import export_talker
        manifest = export_talker(args.subject, args.a2e, args.renderer, args.out,
                                 model_path=args.model, video=args.video)
        files = manifest["files"]
        return {"out": args.out, "files": len(files),
                "bytes": sum(int(f["bytes"]) for f in files.values()),
                "resolution": manifest["resolution"], "steps": manifest["steps"]}
    return run_stage(export)


if __name__ == "__main__":
    sys.exit(main())
