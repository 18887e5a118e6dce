"""Writing frames to files atomically: PNG images (OpenCV) and H.264 mp4 videos with optional
AAC audio (an ffmpeg pipe).

Outputs go to a temporary name in the destination folder and are renamed when complete, so an
interrupted run never leaves a file that looks finished.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import warnings
from fractions import Fraction

import cv2
import numpy as np

from metatalk_jax.media.audio_files import write_wav
from metatalk_jax.atomic_files import publish, temp_path_beside
from metatalk_jax.media.ffmpeg_tools import (MediaError, ffmpeg_exe, file_arg, has_encoder,
                                             last_error_line, snap_ntsc)


def _to_rgb_u8(frame) -> np.ndarray:
    """[H, W, 3] RGB float in [0, 1] or uint8 -> uint8 RGB (floats clipped and rounded)."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an [H, W, 3] RGB frame, got shape {frame.shape}")
    if frame.dtype != np.uint8:
        frame = np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)
    return frame


def _to_bgr_u8(frame) -> np.ndarray:
    """[H, W, 3] RGB float in [0, 1] or uint8 -> contiguous BGR uint8 (OpenCV's order)."""
    return np.ascontiguousarray(_to_rgb_u8(frame)[..., ::-1])


def _remove(path: str | None) -> None:
    if path and os.path.exists(path):
        os.remove(path)


def write_png(path: str, frame) -> str:
    """Writes an RGB frame ([H, W, 3] float in [0,1] or uint8) as PNG, atomically."""
    tmp = temp_path_beside(path, ".png")
    try:
        if not cv2.imwrite(tmp, _to_bgr_u8(frame)):
            raise OSError(f"{path}: OpenCV could not encode the PNG")
        publish(tmp, path)
    finally:
        _remove(tmp)
    return path


# Above this many pixels per frame x264's rate-control lookahead is cut to LARGE_FRAME_LOOKAHEAD
# frames (the presets use 10-60) and its thread-sync lookahead to 0: every 4K frame x264 holds
# costs ~40 MB (the picture and its half-pel planes), so with medium's 40 a 4K encoder used
# 1.79 GB, with these settings 0.96 GB (measured). With CRF the lookahead only steers the
# bit distribution (mb-tree), not the quality target.
LARGE_FRAME_PIXELS = 1920 * 1088
LARGE_FRAME_LOOKAHEAD = 10


def _video_codec_args(crf: int, preset: str, pixels: int = 0) -> list[str]:
    """libx264 when this ffmpeg has it, else MPEG-4 Part 2 (plays everywhere, larger files)."""
    if has_encoder("libx264"):
        args = ["-c:v", "libx264", "-preset", preset, "-crf", str(int(crf))]
        if pixels > LARGE_FRAME_PIXELS:
            args += ["-x264-params", f"rc-lookahead={LARGE_FRAME_LOOKAHEAD}:sync-lookahead=0"]
        return args
    warnings.warn("ffmpeg has no libx264 encoder; writing MPEG-4 Part 2 video instead",
                  RuntimeWarning, stacklevel=3)
    return ["-c:v", "mpeg4", "-q:v", "2"]


class Mp4Writer:
    """Streams RGB frames into an H.264 (yuv420p) mp4, optionally with an AAC audio track.

    Usage: `with Mp4Writer(path, fps, audio=samples) as w: w.write(frame)`.

    frame: [H, W, 3] RGB, float in [0, 1] or uint8; every frame must have the first one's size.
    yuv420p stores colour at half resolution, so it needs even sizes: an odd height or width is
    padded by one row/column that repeats the last one (the output is then H+1 or W+1; nothing
    is cropped). fps in Hz (29.97 is written as 30000/1001). audio: float32 [N] mono samples in
    [-1, 1] at `sample_rate` Hz, muxed as AAC; the file lasts as long as the longer of the two
    tracks. crf/preset: libx264 quality (0 lossless .. 51, 18 looks transparent) and speed.
    Without libx264 in the ffmpeg build, MPEG-4 Part 2 is written with a RuntimeWarning.

    The file appears at `path` only when the block ends without an exception; on an exception
    (or an ffmpeg failure) the partial file is deleted. If no frame was written, no file is made.
    """

    def __init__(self, path: str, fps: float, audio: np.ndarray | None = None,
                 sample_rate: int = 16000, crf: int = 18, preset: str = "medium"):
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path, self.fps = os.fspath(path), float(fps)
        self.audio = None
        if audio is not None:
            self.audio = np.asarray(audio, dtype=np.float32)
            if self.audio.ndim != 1:
                raise ValueError(f"audio must be mono [N] samples, got shape {self.audio.shape}")
        self.sample_rate, self.crf, self.preset = int(sample_rate), int(crf), preset
        self.frames = 0
        self._size = None  # (H, W) of the input frames
        self._proc = None
        self._tmp = self._tmp_wav = None
        self._err = None

    # -- process --------------------------------------------------------------------------------

    def _start(self, height: int, width: int) -> None:
        ext = os.path.splitext(self.path)[1].lower() or ".mp4"
        self._tmp = temp_path_beside(self.path, ext)
        rate = Fraction(snap_ntsc(self.fps)).limit_denominator(1001)
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
               "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "pipe:0"]
        if self.audio is not None:
            # A temp WAV next to the output is simpler than a second pipe (one stdin only).
            self._tmp_wav = temp_path_beside(self.path, ".wav")
            write_wav(self._tmp_wav, self.audio, self.sample_rate)
            cmd += ["-i", file_arg(self._tmp_wav)]
        cmd += ["-map", "0:v:0"] + _video_codec_args(self.crf, self.preset, height * width)
        cmd += ["-pix_fmt", "yuv420p"]
        if self.audio is not None:
            cmd += ["-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"]
        # moov atom up front: players can start before the whole file is read.
        cmd += ["-movflags", "+faststart", file_arg(self._tmp)]
        # stderr to a file: nobody reads a pipe while we write frames, so it could fill up.
        self._err = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=self._err)

    def _ffmpeg_error(self, what: str) -> MediaError:
        self._err.seek(0)
        text = self._err.read().decode("utf-8", errors="replace")
        detail = last_error_line(text) if text.strip() else f"exit status {self._proc.returncode}"
        return MediaError(self.path, f"{what} (ffmpeg: {detail})")

    # -- public API -----------------------------------------------------------------------------

    def write(self, frame) -> None:
        """Appends one [H, W, 3] RGB frame (float in [0, 1] or uint8)."""
        rgb = _to_rgb_u8(frame)
        h, w = rgb.shape[:2]
        if self._size is None:
            self._size = (h, w)
            self._start(h + h % 2, w + w % 2)
        elif (h, w) != self._size:
            raise ValueError(f"{self.path}: frame {self.frames} is {h}x{w}, "
                             f"the first was {self._size[0]}x{self._size[1]}")
        if h % 2 or w % 2:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        try:
            self._proc.stdin.write(np.ascontiguousarray(rgb).tobytes())
        except BrokenPipeError:
            self._proc.wait()
            raise self._ffmpeg_error(f"encoder stopped at frame {self.frames}") from None
        self.frames += 1

    def close(self) -> None:
        """Finishes encoding and renames the file into place (no-op without frames)."""
        try:
            if self._proc is None:
                return
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass  # ffmpeg already gone; its exit status says why
            if self._proc.wait() != 0:
                raise self._ffmpeg_error("could not encode the video")
            publish(self._tmp, self.path)
        finally:
            self._cleanup()

    def abort(self) -> None:
        """Stops ffmpeg and deletes everything written so far."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
            self._proc.wait()
            self._proc = None
        if self._err is not None:
            self._err.close()
            self._err = None
        _remove(self._tmp)  # only still there when something failed
        _remove(self._tmp_wav)
        self._tmp = self._tmp_wav = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False
