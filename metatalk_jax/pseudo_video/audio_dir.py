"""The audio clips that drive pseudo videos: an LRS2-style folder scanned into clip ids.

Layouts accepted (any depth, mixed):  DIR/<speaker or video id>/<utterance>.wav|.mp4 (LRS2's
main/pretrain folders) and flat DIR/*.wav. A clip's id is its path relative to DIR without the
extension, with "/" separators (e.g. "6330311066473698535/00011"), so ids are stable across
machines and runs; clips are returned sorted by id, which makes generation deterministic and
lets a resumed run skip exactly the clips already written.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from metatalk_jax.errors import InputError
from metatalk_jax.media.audio_files import check_speech_audio, load_audio
from metatalk_jax.media.ffmpeg_tools import MediaError

AUDIO_EXTENSIONS = (".wav", ".mp4", ".flac", ".mp3", ".m4a")


@dataclasses.dataclass(frozen=True)
class AudioClip:
    """One driving clip: `clip_id` (relative path without extension) and its file `path`."""

    clip_id: str
    path: str


def scan_audio_dir(root: str) -> list[AudioClip]:
    """All audio/video files under `root` whose extension is in AUDIO_EXTENSIONS, sorted by id.

    Hidden files and folders are ignored. Two files with the same id (e.g. a.wav and a.mp4) keep
    the first by extension order (.wav before .mp4): LRS2 ships video, people often add wavs.
    Raises ValueError naming `root` when it is not a directory.
    """
    if not os.path.isdir(root):
        raise InputError(f"{root}: audio directory not found")
    by_id: dict[str, tuple[int, str]] = {}
    for folder, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in files:
            stem, ext = os.path.splitext(name)
            ext = ext.lower()
            if name.startswith(".") or ext not in AUDIO_EXTENSIONS:
                continue
            path = os.path.join(folder, name)
            clip_id = os.path.relpath(os.path.join(folder, stem), root).replace(os.sep, "/")
            rank = AUDIO_EXTENSIONS.index(ext)
            if clip_id not in by_id or rank < by_id[clip_id][0]:
                by_id[clip_id] = (rank, path)
    return [AudioClip(clip_id, by_id[clip_id][1]) for clip_id in sorted(by_id)]


def load_clip_audio(clip: AudioClip, sample_rate: int, *, min_seconds: float,
                    silence_dbfs: float) -> np.ndarray:
    """float32 [N] mono samples of the clip at `sample_rate` Hz.

    Raises MediaError (naming the file) when it cannot be decoded, has no audio, is shorter than
    `min_seconds` or quieter than `silence_dbfs` dBFS RMS; the driver reports and skips those.
    """
    try:
        audio = load_audio(clip.path, sample_rate)
    except MediaError:
        raise
    except (OSError, ValueError) as err:
        raise MediaError(clip.path, str(err).splitlines()[0] if str(err) else "unreadable")
    check_speech_audio(audio, sample_rate, clip.path, min_seconds=min_seconds,
                       silence_dbfs=silence_dbfs)
    return audio
