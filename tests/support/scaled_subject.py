"""A prepared subject moved onto a large synthetic background (e.g. 4K), for the memory tests
and the inference benchmark: the frames are an ffmpeg test pattern, the crop boxes and the 3D
camera are scaled and shifted with them, so the face renders exactly as before, only into
bigger frames."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np

from metatalk_jax.media.ffmpeg_tools import ffmpeg_exe
from metatalk_jax.subject import layout
from metatalk_jax.tracking.crop import crop_matrices


def synthetic_video(path: str, seconds: float, height: int, width: int, fps: float = 25.0) -> str:
    """An H.264 test-pattern video (ultrafast, so a 4K one is quick to make)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
           f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", path]
    subprocess.run(cmd, check=True)
    return path


def scaled_subject(src: str, dst: str, video: str, frame_size: tuple[int, int]) -> str:
    """A copy of subject `src` at `dst` whose frames are `video` of frame_size (H, W): the
    original frame scaled by H / its height and centred horizontally."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(layout.TFDS_DIR, layout.PREVIEWS))
    crops = dict(np.load(os.path.join(src, layout.CROPS)))
    h0, w0 = (int(v) for v in crops["frame_size"])
    h, w = frame_size
    scale = h / h0
    shift = (w - w0 * scale) / 2.0
    centers = crops["centers"].astype(np.float64) * scale + np.array([shift, 0.0])
    sizes = crops["sizes"].astype(np.float64) * scale
    fx, fy, cx, cy, distance = crops["camera"]
    crops.update(centers=centers.astype(np.float32), sizes=sizes.astype(np.float32),
                 frame_size=np.array([h, w]),
                 camera=np.array([fx * scale, fy * scale, cx * scale + shift, cy * scale,
                                  distance]),
                 matrices=crop_matrices(centers, sizes, int(crops["renderer_resolution"]))
                 .astype(np.float32))
    np.savez(os.path.join(dst, layout.CROPS), **crops)
    meta_path = os.path.join(dst, layout.SUBJECT_JSON)
    with open(meta_path) as f:
        meta = json.load(f)
    meta["frame_size"] = [h, w]
    meta["source"] = dict(meta["source"], path=os.path.abspath(video), height=h, width=w)
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    return dst
