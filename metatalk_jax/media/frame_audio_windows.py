"""The audio of one video frame, as every stage sees it: the window centred on the frame's time
(`audio_window`, what the target and pseudo shards store) and its Wav2Lip mel columns
(`frame_mel`, what the A2E reads in training and inference alike, so both see bit-identical
features)."""

from __future__ import annotations

import numpy as np

from metatalk_jax.media.audio_features import WAV2LIP_HOP, WAV2LIP_N_FFT, wav2lip_mel


def audio_window(audio: np.ndarray | None, centre_s: float, samples: int,
                 sample_rate: int) -> np.ndarray:
    """[samples] float32 audio centred on `centre_s` (seconds), zero-padded past either end of
    `audio` (float [N] at sample_rate Hz; None gives silence)."""
    out = np.zeros(samples, np.float32)
    if audio is None:
        return out
    start = int(round(centre_s * sample_rate)) - samples // 2
    lo, hi = max(start, 0), min(start + samples, len(audio))
    if hi > lo:
        out[lo - start:hi - start] = audio[lo:hi]
    return out


def mel_column_start(audio_samples: int, mel_columns: int) -> int:
    """First of the M mel columns (of the whole window's mel) centred on the window's centre
    sample N // 2; a ValueError when the window is too short for M whole STFT frames."""
    start = int(round((audio_samples // 2) / WAV2LIP_HOP - (mel_columns - 1) / 2))
    half = WAV2LIP_N_FFT // 2
    if mel_columns < 1 or start * WAV2LIP_HOP < half or \
            (start + mel_columns - 1) * WAV2LIP_HOP + half > audio_samples:
        raise ValueError(f"an audio window of {audio_samples} samples cannot hold {mel_columns} "
                         f"mel columns ({WAV2LIP_N_FFT}-sample frames, hop {WAV2LIP_HOP})")
    return start


def frame_mel(audio_window: np.ndarray, mel_columns: int) -> np.ndarray:
    """float32 [80, M]: columns j0 .. j0+M-1 (`mel_column_start`) of wav2lip_mel(audio_window),
    Wav2Lip's log-mel in [-4, 4], columns 12.5 ms apart.

    Computed from the slice [200 j0 - 400, 200 (j0+M-1) + 400) only, whose mel columns 2..M+1
    use no padding. They equal the whole window's columns exactly: the slice restarts the
    pre-emphasis filter at its first sample, which column 2's periodic Hann window weights by 0.
    """
    audio = np.asarray(audio_window, np.float32)
    start = mel_column_start(audio.shape[-1], mel_columns)
    half = WAV2LIP_N_FFT // 2
    piece = audio[start * WAV2LIP_HOP - half:(start + mel_columns - 1) * WAV2LIP_HOP + half]
    return wav2lip_mel(piece)[:, 2:2 + mel_columns]
