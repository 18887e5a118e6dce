"""Reading videos: stream facts (`probe_video`) and decoded RGB frames, one at a time.

Frames come from an `ffmpeg ... -f rawvideo -pix_fmt rgb24 -` pipe, so a long video never sits
in memory: only the frame being handed out does. The ffmpeg process is killed and reaped as
soon as the consumer stops iterating (generator close), so abandoned readers leave no process.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from metatalk_jax.media.ffmpeg_tools import (MediaError, ffmpeg_exe, file_arg, last_error_line,
                                             probe_streams)


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video file.

    width/height: displayed frame size in pixels (what `read_frames` yields, [height, width, 3]).
    fps: native frame rate in Hz (29.97 is reported as 30000/1001). duration_s: container
    duration in seconds, None if unknown. num_frames: round(duration_s * fps), an estimate (use
    `count_frames` for the exact count). codec: ffmpeg's name for the video codec ("h264").
    """
    path: str
    width: int
    height: int
    fps: float | None
    duration_s: float | None
    num_frames: int | None
    codec: str
    has_audio: bool
    start_s: float = 0.0


def probe_video(path) -> VideoInfo:
    """Reads the header facts of a video file without decoding it.

    Raises MediaError for a missing file, a file ffmpeg cannot open ("not a video (ffmpeg: ...)"),
    or a media file without a video stream (audio only, or only cover art).
    """
    report = probe_streams(path, expect="a video")
    path = os.fspath(path)
    if not report.has_video:
        raise MediaError(path, "has no video stream")
    if not report.width or not report.height:
        raise MediaError(path, "ffmpeg did not report the video frame size")
    num_frames = None
    if report.duration_s is not None and report.fps:
        num_frames = int(round(report.duration_s * report.fps))
    return VideoInfo(path=path, width=report.width, height=report.height, fps=report.fps,
                     duration_s=report.duration_s, num_frames=num_frames,
                     codec=report.video_codec or "unknown", has_audio=report.has_audio,
                     start_s=report.start_s)


def _decode_args(path: str, fps: float | None, start_frame: int = 0,
                 start_s: float = 0.0) -> list[str]:
    """ffmpeg input + filter arguments shared by read_frames and count_frames.

    start_frame > 0 (with fps, in a file whose timestamps start at 0, as camera and encoder
    output does) seeks: the input is entered about a second before the frame's time (-ss before
    -i: a keyframe seek, then ffmpeg decodes up to that point) with the original timestamps kept
    (-copyts), so the fps filter lays the same grid of output times over the same input frames
    as a whole-file decode; trim then drops the grid points before start_frame. The frames equal
    those of the whole-file decode (checked for 24-50 fps sources with B-frames) at the cost of
    decoding about a second. Files starting at another time, and native-rate reads, count
    frames from the start instead (exact, but the cost grows with start_frame).
    """
    filters = []
    pre: list[str] = []
    if fps is not None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        seek = start_frame > 0 and abs(start_s) < 1e-6
        if seek:
            pre = ["-ss", f"{max(0.0, (start_frame - 2) / fps - 1.0):.6f}", "-copyts"]
        # The fps filter resamples to a constant rate: output frame i shows time i / fps.
        filters.append(f"fps={float(fps)!r}")
        if seek:
            filters.append(f"trim=start={(start_frame - 0.5) / fps:.6f}")
    if start_frame > 0 and not pre:
        filters.append(f"trim=start_frame={int(start_frame)}")
    args = [*pre, "-i", file_arg(path), "-map", "0:v:0", "-an", "-sn", "-dn"]
    if filters:
        args += ["-vf", ",".join(filters)]
    # Emit each (filtered) decoded frame exactly once: with rawvideo's default "cfr" mode ffmpeg
    # would duplicate or drop frames of variable-rate inputs to fit the nominal rate.
    args += ["-fps_mode", "passthrough"]
    return args


def _read_exact(stream, buf: bytearray) -> int:
    """Fills `buf` from `stream`; returns the byte count (less than len(buf) only at EOF)."""
    view, got = memoryview(buf), 0
    while got < len(buf):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def read_frames(path, fps: float | None = None, max_frames: int | None = None, *,
                start_frame: int = 0, threads: int | None = None) -> Iterator[np.ndarray]:
    """Yields the frames of a video as [H, W, 3] uint8 RGB arrays (fresh, writable), in order.

    fps: None keeps the native frames; a rate in Hz resamples with ffmpeg's fps filter (frame i
    is the picture shown at time i / fps, e.g. a 2.0 s clip gives 50 frames at fps=25).
    max_frames: stop after this many frames.
    start_frame: skip to this frame first (with fps: by seeking, so reading a block from the
    middle of a long video costs about a second of decoding; the frames are identical to those
    of a read from the start).
    threads: decoder threads (None: ffmpeg's choice). Each frame thread holds frames: a 4K
    H.264 decoder used 530 MB with ffmpeg's choice on 2 cores and 380 MB with 1, at the same
    speed here.

    The file is probed now (MediaError for missing/unreadable/no video); decoding starts on the
    first `next()`. Frames are read at the exact probed size, so odd widths/heights work. If
    ffmpeg fails mid-way, iteration raises MediaError. Stopping early (break, `close()`, or the
    generator being dropped) kills and reaps the ffmpeg process.
    """
    info = probe_video(path)
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be >= 0, got {max_frames}")
    if start_frame < 0:
        raise ValueError(f"start_frame must be >= 0, got {start_frame}")
    args = _decode_args(info.path, fps, int(start_frame), info.start_s)
    if threads is not None:
        args = ["-threads", str(int(threads))] + args
    if max_frames is not None:
        args += ["-frames:v", str(int(max_frames))]
    args += ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    return _frame_generator(info, args, max_frames)


def _frame_generator(info: VideoInfo, args: list[str],
                     max_frames: int | None) -> Iterator[np.ndarray]:
    if max_frames == 0:
        return
    h, w = info.height, info.width
    frame_bytes = h * w * 3
    # stderr goes to a temp file, not a pipe: nobody drains a pipe while we read stdout, and a
    # chatty decoder (corrupt input) could fill it and deadlock ffmpeg.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
                                 *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err, bufsize=max(frame_bytes, 1 << 16))
        finished = False
        try:
            count = 0
            while max_frames is None or count < max_frames:
                buf = bytearray(frame_bytes)
                got = _read_exact(proc.stdout, buf)
                if got == 0:
                    break
                if got < frame_bytes:
                    proc.wait()
                    raise MediaError(info.path, _failure(err, proc.returncode,
                                                         f"stream ended inside frame {count}"))
                count += 1
                yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
            proc.stdout.close()
            if proc.wait() != 0:
                raise MediaError(info.path, _failure(err, proc.returncode,
                                                     f"decoding stopped after {count} frames"))
            finished = True
        finally:
            if not finished and proc.poll() is None:
                proc.kill()  # consumer stopped early (or we are raising): no orphan ffmpeg
            proc.stdout.close()
            proc.wait()  # reap it, so no zombie is left behind


def _failure(err_file, returncode: int, what: str) -> str:
    err_file.seek(0)
    text = err_file.read().decode("utf-8", errors="replace")
    detail = last_error_line(text) if text.strip() else f"exit status {returncode}"
    return f"{what} (ffmpeg: {detail})"


def count_frames(path, fps: float | None = None) -> int:
    """Exact number of frames `read_frames(path, fps)` would yield.

    Decodes the whole video into ffmpeg's null muxer (no RGB conversion, no pipe copy), so it
    costs a fraction of reading the frames but is not free for long videos.
    """
    info = probe_video(path)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats",
           *_decode_args(info.path, fps), "-f", "null", "-progress", "pipe:1", "-"]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, errors="replace")
    if proc.returncode != 0:
        raise MediaError(info.path, f"could not decode (ffmpeg: {last_error_line(proc.stderr)})")
    # -progress writes "frame=N" blocks; the last one holds the final count.
    counts = re.findall(r"^frame=\s*(\d+)\s*$", proc.stdout, flags=re.M)
    if not counts:
        raise MediaError(info.path, "ffmpeg reported no frame count")
    return int(counts[-1])


def pingpong_indices(count: int, num_source: int) -> np.ndarray:
    """[count] int64 source frame of each of `count` output frames when a video of `num_source`
    frames is played forward, then backward, and so on: 0, 1, ..., N-1, N-2, ..., 1, 0, 1, ...
    (no jump from the last frame to the first). Pseudo videos and inference both lay new audio
    over the subject's frames in this order."""
    if num_source <= 0:
        raise ValueError(f"pingpong_indices: the source has {num_source} frames")
    k = np.arange(count, dtype=np.int64)
    if num_source == 1:
        return np.zeros(count, np.int64)
    period = 2 * num_source - 2
    phase = k % period
    return np.where(phase < num_source, phase, period - phase)
