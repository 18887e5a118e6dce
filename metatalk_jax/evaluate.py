"""Score talking-face videos with the paper's metrics: LSE-D, LSE-C (SyncNet), FID, SSIM.

    python -m metatalk_jax.evaluate --videos results/*/*.mp4 --syncnet syncnet_v2.model \\
        --inception pt_inception-2015-12-05-6726825d.pth --reference ground_truth/ --out report/

Any mp4s (ours, Wav2Lip's, AudioDVP's, ATVG's, MakeItTalk's): a video's method is its folder's
name, its clip the file name. LSE-D/LSE-C/AV offset are syncnet_python's, on the whole frame
resized to 224 (Wav2Lip's protocol for generated videos; --real: face-track crops, as
syncnet_python's pipeline for real videos). FID and SSIM need --reference: a folder with the
ground-truth video of each clip under the same name (self-reenactment: the generated frames
against the held-out frames, aligned by time: both videos are resampled to one rate, --fps or
the generated video's own, and frame i of each is the picture at i / fps, so a 25 fps output
and its 23.976 fps reference are compared at the same moments); FID is pytorch-fid's between
the clip's generated and ground-truth frames. Checkpoints may be the original files or converted
folders (`python -m metatalk_jax.convert syncnet|inception IN OUT`); a metric whose checkpoint is
not given is left out. Videos written by `python -m metatalk_jax.infer` have a drive sidecar
(X.drive.json): their mouth is also measured on the pixels, with no weights (r_drive,
r_background, the sharpness against the real frames, the opening in pauses against speech:
eval/pixel_lip_sync.py); infer's previews (X.preview.mp4) and sidecars are never
taken for clips. Long steps (SyncNet windows, SSIM, Inception features) print progress lines
with an ETA within each clip. Writes OUT/report.json and OUT/report.md (eval/report.py;
the scoring itself: eval/evaluate_videos.py). Exit status
0, or 2 with one `error:` line for bad input (missing file, unreadable video, a clip too short for
SyncNet's +-15-frame offsets, a missing reference, a checkpoint of the wrong model); any other
failure exits 1 with its traceback.
"""

from __future__ import annotations

import argparse
import glob
import sys

from metatalk_jax import runtime
from metatalk_jax.cli_errors import report_bad_input
from metatalk_jax.errors import InputError
from metatalk_jax.eval.evaluate_videos import FID_METHODS


def main(argv=None) -> int:
    runtime.start()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", nargs="+", required=True,
                        help="videos to score (globs are expanded)")
    parser.add_argument("--reference", default=None,
                        help="folder of ground-truth videos named like the clips (FID, SSIM)")
    parser.add_argument("--syncnet", default=None, help="syncnet_v2.model or a converted folder")
    parser.add_argument("--inception", default=None,
                        help="pt_inception-2015-12-05 .pth or a converted folder")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--real", action="store_true",
                        help="score LSE on face-track crops (real videos) instead of whole frames")
    parser.add_argument("--lip-sync-frames", type=int, default=250,
                        help="frames per video (spread evenly) of the pixel lip sync of videos "
                             "with a drive sidecar; 0 = all")
    parser.add_argument("--fps", type=float, default=None,
                        help="the rate FID/SSIM compare frames at: both videos are resampled to "
                             "it and compared at the same timestamps (default: the generated "
                             "video's own rate)")
    parser.add_argument("--fid-method", choices=FID_METHODS, default="auto",
                        help="auto: exact SVD form for clips under 2048 frames, else sqrtm")
    args = parser.parse_args(argv)
    videos = []
    for pattern in args.videos:
        matches = sorted(glob.glob(pattern))
        videos.extend(matches if matches else [pattern])   # a missing file is reported below
    from metatalk_jax.eval import evaluate_videos as library
    try:
        library.evaluate_videos(videos, out_dir=args.out, syncnet=args.syncnet,
                        inception=args.inception, reference_dir=args.reference, real=args.real,
                        fid_method=args.fid_method, lip_sync_frames=args.lip_sync_frames,
                        fps=args.fps,
                        log=lambda text: print(text, flush=True))
    except InputError as err:
        return report_bad_input(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
