"""Audio in and out: decoding any audio/video file to mono float samples, sanity checks for
speech input, and writing 16-bit WAV files.

Decoding goes through ffmpeg (`-ac 1 -ar RATE -f f32le`), so wav/mp3/aac/m4a/flac files and the
audio tracks of videos all load the same way.
"""

from __future__ import annotations

import math
import os
import wave

import numpy as np

from metatalk_jax.atomic_files import publish, temp_path_beside
from metatalk_jax.media.ffmpeg_tools import MediaError, file_arg, probe_streams, run_ffmpeg


def load_audio(path, sample_rate: int = 16000) -> np.ndarray:
    """Decodes the first audio track of `path` to float32 [N] mono samples in [-1, 1].

    sample_rate: output rate in Hz (ffmpeg resamples). Multi-channel audio is mixed down to the
    plain average of the channels (a stereo file with identical channels keeps its level;
    ffmpeg's default down-mix would add 3 dB). Raises MediaError for a missing or unreadable
    file and "<path>: has no audio track" for a video without sound.
    """
    if int(sample_rate) <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    report = probe_streams(path, expect="an audio or video file")
    path = os.fspath(path)
    if not report.has_audio:
        raise MediaError(path, "has no audio track")
    args = ["-i", file_arg(path), "-map", "0:a:0", "-vn", "-sn", "-dn",
            # rematrix_maxval=1 normalises the down-mix matrix so the gains sum to 1 (average).
            "-ac", "1", "-rematrix_maxval", "1", "-ar", str(int(sample_rate)),
            "-f", "f32le", "pipe:1"]
    proc = run_ffmpeg(args, path, what="could not decode the audio")
    samples = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
    # Lossy decoders (mp3/aac) can overshoot full scale by a little; keep the documented range.
    return np.clip(samples, -1.0, 1.0)


def rms_dbfs(audio: np.ndarray) -> float:
    """RMS level in dB relative to full scale 1.0 (a full-scale sine is -3 dBFS; silence -inf)."""
    audio = np.asarray(audio, dtype=np.float64)
    rms = math.sqrt(float(np.mean(audio * audio))) if audio.size else 0.0
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def check_speech_audio(audio: np.ndarray, sample_rate: int, path, min_seconds: float = 0.5,
                       silence_dbfs: float = -60.0) -> None:
    """Raises MediaError if `audio` (float [N] in [-1, 1] at `sample_rate` Hz) cannot drive a
    talking face: shorter than `min_seconds` seconds, or RMS level below `silence_dbfs` dBFS.

    `path` is only used to name the source in the message.
    """
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise MediaError(path, f"audio must be mono [N] samples, got shape {audio.shape}")
    seconds = audio.shape[0] / float(sample_rate)
    if seconds < min_seconds:
        raise MediaError(path, f"audio is {seconds:.2f} s long; at least {min_seconds:.2f} s "
                               f"is needed")
    level = rms_dbfs(audio)
    if level < silence_dbfs:
        shown = "-inf" if math.isinf(level) else f"{level:.1f}"
        raise MediaError(path, f"audio is silent (RMS {shown} dBFS, below {silence_dbfs:.1f} "
                               f"dBFS)")


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1] (clipped) or int16 -> int16, same shape."""
    audio = np.asarray(audio)
    if audio.dtype == np.int16:
        return audio
    return np.rint(np.clip(audio.astype(np.float64), -1.0, 1.0) * 32767.0).astype(np.int16)


def write_wav(path, audio: np.ndarray, sample_rate: int) -> str:
    """Writes 16-bit PCM WAV, atomically (temp name in the same folder, then os.replace).

    audio: float [N] mono (or [N, C] channels) in [-1, 1], clipped; int16 is written as is.
    sample_rate in Hz. Returns `path`.
    """
    path = os.fspath(path)
    pcm = to_pcm16(audio)
    if pcm.ndim not in (1, 2):
        raise ValueError(f"audio must be [N] or [N, C], got shape {pcm.shape}")
    channels = 1 if pcm.ndim == 1 else pcm.shape[1]
    tmp = temp_path_beside(path, ".wav")
    try:
        with wave.open(tmp, "wb") as out:
            out.setnchannels(channels)
            out.setsampwidth(2)
            out.setframerate(int(sample_rate))
            # WAV is little-endian whatever the host is.
            out.writeframes(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
