"""The ffmpeg binary from the imageio-ffmpeg wheel: locating it, running it, probing files, and
the write-to-a-temp-name-then-rename convention used for everything the media layer writes.

The wheel ships ffmpeg but not ffprobe, so stream facts (size, frame rate, duration, codecs,
audio layout) are read from the human-readable report that `ffmpeg -i FILE` prints on stderr.
That text is not a stable interface, so the parser below looks for a few well-known fields and
leaves anything it cannot read as None instead of guessing.

Every failure a user can cause (missing file, not a media file, no audio, ffmpeg error) is a
`MediaError` whose message is one line: "<path>: <problem>".
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Sequence

from metatalk_jax.errors import InputError


class MediaError(InputError):
    """A media file that cannot be used; str() is one line "<path>: <problem>"."""

    def __init__(self, path, problem: str):
        self.path = os.fspath(path)
        # One line, always: log lines and CLI error reports rely on it.
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg executable bundled with imageio-ffmpeg (imported on first use, so that
    importing the media modules stays cheap)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


# Lines ffmpeg prints after the real error that only restate that something failed.
_NOISE = (
    "conversion failed",
    "at least one output file must be specified",
    "exiting normally",
    "error opening input file ",
    "error opening output file ",
)
# "[in#0 @ 0x55d0c3a0] " and similar component prefixes.
_COMPONENT_PREFIX = re.compile(r"^\[[^\]]*@ 0x[0-9a-fA-F]+\]\s*")


def last_error_line(stderr: str | bytes) -> str:
    """The last stderr line that says what went wrong, without ffmpeg's component prefixes.

    "Error opening input files: Invalid data found when processing input" becomes the part after
    the colon, since the file name is already in the MediaError.
    """
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", errors="replace")
    lines = [_COMPONENT_PREFIX.sub("", ln).strip() for ln in stderr.splitlines()]
    lines = [ln for ln in lines if ln and not ln.lower().startswith(_NOISE)]
    if not lines:
        return "unknown ffmpeg error"
    line = lines[-1]
    if line.lower().startswith(("error opening input", "error opening output")) and ": " in line:
        line = line.split(": ", 1)[1]
    return line


def check_input_file(path) -> str:
    """Raises MediaError unless `path` names an existing regular file; returns it as str."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MediaError(path, "no such file")
    if os.path.isdir(path):
        raise MediaError(path, "is a directory, not a file")
    return path


def file_arg(path) -> str:
    """`path` as an ffmpeg input/output argument: the explicit "file:" protocol stops names such
    as "-x.mp4" reading as options and "a:b.mp4" reading as a protocol called "a"."""
    return "file:" + os.fspath(path)


def run_ffmpeg(args: Sequence[str], path, what: str = "ffmpeg failed",
               input_bytes: bytes | None = None) -> subprocess.CompletedProcess:
    """Runs `ffmpeg -hide_banner -loglevel error [-nostdin] ARGS` to completion (stdin gets
    `input_bytes` if given).

    stdout is returned as bytes (decoded samples, for instance). A non-zero exit becomes
    MediaError(path, "<what> (ffmpeg: <last error line>)").
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error"]
    if input_bytes is None:
        cmd.append("-nostdin")  # otherwise ffmpeg reads keystrokes from our terminal
    cmd += list(args)
    proc = subprocess.run(cmd, input=input_bytes, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=None if input_bytes is not None else subprocess.DEVNULL)
    if proc.returncode != 0:
        raise MediaError(path, f"{what} (ffmpeg: {last_error_line(proc.stderr)})")
    return proc


@functools.lru_cache(maxsize=None)
def has_encoder(name: str) -> bool:
    """Whether this ffmpeg build lists encoder `name` (e.g. "libx264") in `ffmpeg -encoders`."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-encoders"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    # Rows look like " V....D libx264   libx264 H.264 / AVC ..."; the name is the 2nd column.
    return any(len(row.split()) > 1 and row.split()[1] == name for row in out.splitlines())


# ----------------------------------------------------------------------------------------------
# Probing


@dataclass(frozen=True)
class StreamReport:
    """What `ffmpeg -i` says about a file. Sizes in pixels, rates in Hz, times in seconds.

    width/height are the displayed size (swapped for 90/270 degree rotation metadata, because
    ffmpeg rotates decoded frames by default). Fields ffmpeg did not report are None.
    """
    duration_s: float | None
    has_video: bool
    video_codec: str | None
    width: int | None
    height: int | None
    fps: float | None
    rotation_deg: int
    has_audio: bool
    audio_codec: str | None
    sample_rate: int | None
    channels: int | None
    start_s: float = 0.0      # the container's first timestamp (ffmpeg's "start:")


_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_START = re.compile(r"Duration:.*?\bstart:\s*(-?\d+(?:\.\d+)?)")
_STREAM = re.compile(r"^\s*Stream #\d+:\d+\S*:\s*(Video|Audio|Subtitle|Data|Attachment):\s*(.*)$")
_SIZE = re.compile(r"^([1-9]\d*)x([1-9]\d*)\b")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(k?)\s+(fps|tbr)$")
_ROTATION = re.compile(r"rotation of\s+(-?\d+(?:\.\d+)?)\s+degrees")
_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "quad": 4, "hexagonal": 6, "octagonal": 8,
                    "downmix": 2, "2.1": 3, "3.0": 3, "3.1": 4, "4.0": 4, "4.1": 5, "5.0": 5,
                    "5.1": 6, "6.0": 6, "6.1": 7, "7.0": 7, "7.1": 8}


def _split_fields(text: str) -> list[str]:
    """Splits a stream description on commas outside parentheses/brackets, so that
    "yuv420p(tv, progressive)" stays one field."""
    fields, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            fields.append(text[start:i].strip())
            start = i + 1
    fields.append(text[start:].strip())
    return [f for f in fields if f]


def snap_ntsc(fps: float) -> float:
    """ffmpeg prints rates with 2 decimals; 29.97 really is 30000/1001 (also 23.976, 59.94).
    Snapping keeps frame-time arithmetic from drifting over long clips."""
    whole = round(fps * 1.001)
    if whole > 0 and abs(fps - whole) > 0.005 and abs(fps * 1.001 - whole) < 0.006:
        return whole * 1000.0 / 1001.0
    return fps


def _parse_rate(fields: list[str]) -> float | None:
    """Frame rate in Hz from the "N fps" field, else "N tbr" (the guessed real base rate)."""
    rates = {}
    for field in fields:
        m = _RATE.match(field.split(" (")[0])
        if m:
            rates[m.group(3)] = float(m.group(1)) * (1000.0 if m.group(2) else 1.0)
    fps = rates.get("fps") or rates.get("tbr")
    return snap_ntsc(fps) if fps else None


def _parse_channels(fields: list[str]) -> int | None:
    for field in fields[1:]:
        name = field.split("(")[0].strip().lower()
        if name in _LAYOUT_CHANNELS:
            return _LAYOUT_CHANNELS[name]
        m = re.match(r"^(\d+) channels", name)
        if m:
            return int(m.group(1))
    return None


def parse_ffmpeg_report(stderr: str) -> StreamReport:
    """Parses the stderr of `ffmpeg -i FILE` (first video and first audio stream only)."""
    duration = None
    m = _DURATION.search(stderr)
    if m:
        duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    start = _START.search(stderr)
    video = audio = None
    rotation = 0
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        s = _STREAM.match(line)
        if not s:
            continue
        kind, desc = s.groups()
        if kind == "Video" and video is None and "(attached pic)" not in desc:
            # Cover art in mp3/m4a shows up as a one-frame "attached pic" video: not a video.
            video = _split_fields(desc)
            # Rotation sits in the stream's indented side-data lines, before the next stream.
            for follow in lines[i + 1:]:
                if _STREAM.match(follow) or not follow.startswith("    "):
                    break
                r = _ROTATION.search(follow)
                if r:
                    rotation = int(round(float(r.group(1)))) % 360
        elif kind == "Audio" and audio is None:
            audio = _split_fields(desc)

    width = height = fps = codec = None
    if video:
        codec = video[0].split()[0]
        for field in video[1:]:
            size = _SIZE.match(field)
            if size:
                width, height = int(size.group(1)), int(size.group(2))
                break
        if width and rotation in (90, 270):
            width, height = height, width
        fps = _parse_rate(video)

    audio_codec = sample_rate = channels = None
    if audio:
        audio_codec = audio[0].split()[0]
        for field in audio[1:]:
            hz = re.match(r"^(\d+) Hz$", field)
            if hz:
                sample_rate = int(hz.group(1))
        channels = _parse_channels(audio)

    return StreamReport(duration_s=duration, has_video=video is not None, video_codec=codec,
                        width=width, height=height, fps=fps, rotation_deg=rotation,
                        has_audio=audio is not None, audio_codec=audio_codec,
                        sample_rate=sample_rate, channels=channels,
                        start_s=float(start.group(1)) if start else 0.0)


def probe_streams(path, expect: str = "a media file") -> StreamReport:
    """Runs `ffmpeg -i path` and parses its report.

    Raises MediaError "<path>: no such file" or "<path>: not <expect> (ffmpeg: <reason>)" when
    ffmpeg cannot open the file at all. `expect` is the noun phrase for that message ("a video").
    """
    path = check_input_file(path)
    # Without an output ffmpeg exits 1 after printing the input report; that is the normal case.
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", file_arg(path)],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    text = proc.stderr.decode("utf-8", errors="replace")
    if "Input #0" not in text:
        raise MediaError(path, f"not {expect} (ffmpeg: {last_error_line(text)})")
    return parse_ffmpeg_report(text)
