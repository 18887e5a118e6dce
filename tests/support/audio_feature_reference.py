"""Independent, deliberately slow derivations of the audio features for
tests/test_audio_features.py.

Nothing here shares code with metatalk_jax/media/audio_features.py: the mel scale and filter
bank are written from Slaney's Auditory Toolbox formulas, the STFT is a direct DFT matrix over
explicitly indexed frames, pre-emphasis goes through scipy.signal.lfilter, and the Hann window
comes from scipy.signal.get_window.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.signal


def slaney_hz_to_mel(hz: float) -> float:
    """Slaney's mel scale: linear 3 mel / 200 Hz below 1 kHz, logarithmic (27 mels per
    factor 6.4) above."""
    if hz < 1000.0:
        return 3.0 * hz / 200.0
    return 15.0 + 27.0 * math.log(hz / 1000.0) / math.log(6.4)


def slaney_mel_to_hz(mel: float) -> float:
    if mel < 15.0:
        return 200.0 * mel / 3.0
    return 1000.0 * math.exp((mel - 15.0) * math.log(6.4) / 27.0)


def slaney_filter_bank(sample_rate: int, n_fft: int, n_mels: int, fmin: float,
                       fmax: float) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1]: triangles between n_mels + 2 mel-spaced corner frequencies,
    evaluated at the bin frequencies k sr / n_fft, each scaled to unit area 2 / (upper - lower)."""
    low, high = slaney_hz_to_mel(fmin), slaney_hz_to_mel(fmax)
    corners = [slaney_mel_to_hz(low + (high - low) * m / (n_mels + 1)) for m in range(n_mels + 2)]
    bank = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        lower, centre, upper = corners[m], corners[m + 1], corners[m + 2]
        for k in range(n_fft // 2 + 1):
            f = k * sample_rate / n_fft
            if lower < f <= centre:
                weight = (f - lower) / (centre - lower)
            elif centre < f < upper:
                weight = (upper - f) / (upper - centre)
            else:
                weight = 0.0
            bank[m, k] = weight * 2.0 / (upper - lower)
    return bank


def dft_magnitude(frames: np.ndarray) -> np.ndarray:
    """|X_k| for k = 0..n/2 of each row of frames [F, n] by the DFT sum (a complex matrix)."""
    n = frames.shape[1]
    k = np.arange(n // 2 + 1)[:, None]
    t = np.arange(n)[None, :]
    kernel = np.exp(-2j * np.pi * k * t / n)  # [n/2+1, n]
    return np.abs(frames @ kernel.T)


def reference_wav2lip_mel(wav: np.ndarray, pad_mode: str = "reflect") -> np.ndarray:
    """float64 [80, 1 + N // 200] following Wav2Lip's audio.melspectrogram step by step
    (pad_mode "constant" gives what librosa >= 0.10's default zero padding would)."""
    n_fft, hop = 800, 200
    emphasised = scipy.signal.lfilter([1.0, -0.97], [1.0], np.asarray(wav, np.float64))
    padded = np.pad(emphasised, (n_fft // 2, n_fft // 2), mode=pad_mode)
    num_frames = 1 + (len(padded) - n_fft) // hop
    frames = np.stack([padded[i * hop: i * hop + n_fft] for i in range(num_frames)])
    window = scipy.signal.get_window("hann", n_fft, fftbins=True)
    magnitude = dft_magnitude(frames * window)  # [F, 401]
    mel = slaney_filter_bank(16000, n_fft, 80, 55.0, 7600.0) @ magnitude.T
    level = 20.0 * np.log10(np.maximum(1e-5, mel)) - 20.0
    return np.clip(8.0 * (level + 100.0) / 100.0 - 4.0, -4.0, 4.0)


def wav2lip_inference_chunk_starts(num_columns: int, fps: float) -> list[int]:
    """Start columns of the chunks Wav2Lip's inference loop emits (mel_step_size 16): it walks
    i = 0, 1, ... and stops after the first chunk that would overrun, which it replaces by the
    last 16 columns."""
    starts, i = [], 0
    while True:
        start = int(i * (80.0 / fps))
        if start + 16 > num_columns:
            starts.append(num_columns - 16)
            return starts
        starts.append(start)
        i += 1


def chirp_with_noise(num_samples: int, seed: int, level: float = 0.3) -> np.ndarray:
    """float32 [N] at 16 kHz: a 100 Hz -> 6 kHz linear chirp plus white noise, in [-1, 1]."""
    t = np.arange(num_samples) / 16000.0
    duration = max(num_samples / 16000.0, 1e-3)
    sweep = scipy.signal.chirp(t, f0=100.0, t1=duration, f1=6000.0)
    noise = np.random.default_rng(seed).standard_normal(num_samples)
    return (level * sweep + 0.05 * noise).clip(-1.0, 1.0).astype(np.float32)
