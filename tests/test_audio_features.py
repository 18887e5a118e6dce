"""Audio features against independent derivations: Wav2Lip's mel (direct DFT + hand-written
Slaney filter bank, tests/support/audio_feature_reference.py), SyncNet's MFCC
(python_speech_features itself), and the per-video-frame window rules (hand-computed indices and
a replica of Wav2Lip's inference loop)."""

from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
import python_speech_features

from metatalk_jax.media import audio_features
from metatalk_jax.media.frame_audio_windows import audio_window, frame_mel
from tests.support.audio_feature_reference import (chirp_with_noise, reference_wav2lip_mel,
                                           slaney_filter_bank, wav2lip_inference_chunk_starts)


# ------------------------------------------------------------------------------------- mel basis

def test_slaney_filter_bank_written_here_matches_librosa_and_the_package():
    ours = slaney_filter_bank(16000, 800, 80, 55.0, 7600.0)
    from_librosa = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    # librosa returns float32: agreement to float32 resolution of weights of size ~1e-3.
    np.testing.assert_allclose(from_librosa, ours, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(audio_features.wav2lip_mel_basis(), ours, rtol=1e-5, atol=1e-8)
    assert audio_features.wav2lip_mel_basis().shape == (80, 401)


# ------------------------------------------------------------------------------------ wav2lip mel

@pytest.mark.parametrize("num_samples", [16000, 12345, 3001])
def test_wav2lip_mel_matches_direct_derivation(num_samples):
    wav = chirp_with_noise(num_samples, seed=num_samples)
    mel = audio_features.wav2lip_mel(wav)
    expected = reference_wav2lip_mel(wav)
    assert mel.dtype == np.float32 and mel.shape == expected.shape == (80, 1 + num_samples // 200)
    assert np.max(np.abs(mel - expected)) < 1e-4
    # The signal must exercise the interesting range, not sit at a clip bound.
    assert mel.min() < -1.0 and mel.max() > 1.0


def test_wav2lip_mel_quiet_audio_hits_the_lower_clip_like_the_reference():
    wav = (1e-6 * chirp_with_noise(4000, seed=3)).astype(np.float32)
    mel = audio_features.wav2lip_mel(wav)
    expected = reference_wav2lip_mel(wav)
    assert np.max(np.abs(mel - expected)) < 1e-4
    assert np.mean(mel == -4.0) > 0.5  # below -100 dB re ref -> clipped at -max_abs_value


def test_wav2lip_mel_matches_librosa_stft_with_reflect_padding():
    wav = chirp_with_noise(8000, seed=11)
    emphasised = np.append(wav[0], wav[1:] - 0.97 * wav[:-1].astype(np.float64))
    spectrum = np.abs(librosa.stft(emphasised, n_fft=800, hop_length=200, win_length=800,
                                   center=True, pad_mode="reflect"))
    mel_power = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600) @ spectrum
    level = 20 * np.log10(np.maximum(1e-5, mel_power)) - 20
    expected = np.clip(8 * (level + 100) / 100 - 4, -4, 4)
    assert np.max(np.abs(audio_features.wav2lip_mel(wav) - expected)) < 1e-4


def test_edge_columns_use_reflect_padding_not_zero_padding():
    wav = chirp_with_noise(16000, seed=5)
    mel = audio_features.wav2lip_mel(wav)
    reflect = reference_wav2lip_mel(wav, pad_mode="reflect")
    zeros = reference_wav2lip_mel(wav, pad_mode="constant")
    # Zero padding only changes the columns whose window reaches past the signal (2 per side).
    edge = [0, 1, -2, -1]
    assert np.max(np.abs(reflect[:, 2:-2] - zeros[:, 2:-2])) < 1e-9
    for column in edge:
        assert np.max(np.abs(reflect[:, column] - zeros[:, column])) > 0.05
        assert np.max(np.abs(mel[:, column] - reflect[:, column])) < 1e-4


@pytest.mark.parametrize("num_samples", [401, 599, 600, 16000, 16199, 48123])
def test_wav2lip_mel_length(num_samples):
    wav = chirp_with_noise(num_samples, seed=1)
    assert audio_features.wav2lip_mel(wav).shape == (80, 1 + num_samples // 200)


# ------------------------------------------------------------------------------------------ mfcc

def test_mfcc_matches_python_speech_features_on_int16_samples_like_syncnet():
    pcm = np.round(chirp_with_noise(16000 + 137, seed=2) * 32767).astype(np.int16)
    expected = python_speech_features.mfcc(pcm, 16000)  # what syncnet_python computes
    ours = audio_features.mfcc(pcm.astype(np.float32) / 32768.0)
    assert ours.dtype == np.float32 and ours.shape == expected.shape == (1 + math.ceil(
        (16137 - 400) / 160), 13)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("sample_rate,num_samples,nfft", [
    (16000, 400, 512), (16000, 7777, 512), (8000, 5000, 512),
    # 551-sample windows: PSF 0.6 would truncate them to 512; we enlarge the FFT to 1024, what
    # later PSF versions do (calculate_nfft).
    (22050, 9000, 1024)])
def test_mfcc_matches_python_speech_features_on_float_samples(sample_rate, num_samples, nfft):
    wav = chirp_with_noise(num_samples, seed=num_samples)
    expected = python_speech_features.mfcc(wav.astype(np.float64), sample_rate, nfft=nfft)
    ours = audio_features.mfcc(wav, sample_rate, pcm_scale=1.0)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_mfcc_pcm_scale_only_shifts_the_log_energy_column():
    wav = chirp_with_noise(4000, seed=9)
    scaled, unscaled = audio_features.mfcc(wav), audio_features.mfcc(wav, pcm_scale=1.0)
    np.testing.assert_allclose(scaled[:, 0] - unscaled[:, 0], 2 * math.log(32768.0), rtol=1e-5)
    np.testing.assert_allclose(scaled[:, 1:], unscaled[:, 1:], rtol=1e-4, atol=1e-4)


def test_mfcc_fft_size_rule():
    assert audio_features.mfcc_fft_size(16000) == 512   # 400-sample window
    assert audio_features.mfcc_fft_size(8000) == 512    # PSF 0.6 keeps 512 for shorter windows
    assert audio_features.mfcc_fft_size(20480) == 512   # exactly 512 samples still fit
    assert audio_features.mfcc_fft_size(22050) == 1024  # 551 samples
    assert audio_features.mfcc_fft_size(44100) == 2048  # 1103 samples: 512 would drop samples


def test_mfcc_filter_bank_matches_python_speech_features():
    np.testing.assert_array_equal(audio_features.mfcc_filter_bank(26, 512, 16000),
                                  python_speech_features.get_filterbanks(26, 512, 16000))


# ------------------------------------------------------------------------- per-frame windows

def _column_index_mel(num_columns: int) -> np.ndarray:
    """mel whose entry [r, c] = c + r / 100, so a chunk tells which columns it took."""
    return (np.arange(num_columns)[None, :] + np.arange(80)[:, None] / 100.0).astype(np.float32)


@pytest.mark.parametrize("fps,starts", [
    (25, [0, 3, 6, 9, 12, 16, 19, 22, 25, 28, 32]),   # floor(3.2 i)
    (30, [0, 2, 5, 8, 10, 13, 16, 18, 21, 24, 26]),   # floor(2.666.. i)
    (24, [0, 3, 6, 10, 13, 16, 20, 23, 26, 30, 33]),  # floor(3.333.. i)
    (50, [0, 1, 3, 4, 6, 8, 9, 11, 12, 14, 16]),      # floor(1.6 i)
])
def test_mel_chunk_starts(fps, starts):
    chunks = audio_features.wav2lip_mel_chunks(_column_index_mel(100), len(starts), fps)
    assert chunks.shape == (len(starts), 80, 16) and chunks.dtype == np.float32
    np.testing.assert_array_equal(chunks[:, 0, 0], starts)
    np.testing.assert_array_equal(chunks[:, 0, 15], np.array(starts) + 15)
    np.testing.assert_allclose(chunks[:, 7, 0], np.array(starts) + 0.07, atol=1e-5)


def test_mel_chunk_last_16_columns_rule_matches_wav2lip_inference_loop():
    mel = _column_index_mel(40)
    # 25 fps: frame 7 starts at 22 (ends 37 <= 39); frame 8 would start at 25 -> columns 24..39.
    chunks = audio_features.wav2lip_mel_chunks(mel, 10, 25)
    np.testing.assert_array_equal(chunks[:, 0, 0], [0, 3, 6, 9, 12, 16, 19, 22, 24, 24])
    for num_columns in (16, 17, 40, 123, 801):
        for fps in (25, 30, 29.97, 24, 60, 12.5):
            expected = wav2lip_inference_chunk_starts(num_columns, fps)
            got = audio_features.wav2lip_mel_chunks(_column_index_mel(num_columns), len(expected),
                                                    fps)
            np.testing.assert_array_equal(got[:, 0, 0], expected)


def test_mel_chunks_cover_frames_for_audio_at_any_fps():
    for num_samples in (3200, 16000, 16001, 47999):
        mel = np.zeros((80, 1 + num_samples // 200), np.float32)
        for fps in (25, 30, 29.97, 30000 / 1001, 60):
            frames = audio_features.frames_for_audio(num_samples, 16000, fps)
            assert audio_features.wav2lip_mel_chunks(mel, frames, fps).shape == (frames, 80, 16)


def test_wav2lip_float_start_rule_equals_exact_floor_for_common_rates():
    from fractions import Fraction
    for fps, exact in ((25, Fraction(25)), (30, Fraction(30)), (29.97, Fraction(2997, 100)),
                       (30000 / 1001, Fraction(30000, 1001)), (23.976, Fraction(2997, 125))):
        assert all(audio_features.wav2lip_mel_start_column(i, fps) == math.floor(80 * i / exact)
                   for i in range(0, 20000, 7))


def test_mel_chunks_reject_frames_past_the_audio_and_short_mel():
    with pytest.raises(ValueError, match="video frame 13 .*past the end"):
        audio_features.wav2lip_mel_chunks(_column_index_mel(40), 14, 25)  # frame 13 starts at 41
    with pytest.raises(ValueError, match="one chunk needs 16"):
        audio_features.wav2lip_mel_chunks(_column_index_mel(15), 1, 25)
    with pytest.raises(ValueError, match=r"\[80, T\]"):
        audio_features.wav2lip_mel_chunks(np.zeros((40, 100)), 1, 25)
    assert audio_features.wav2lip_mel_chunks(_column_index_mel(20), 0, 25).shape == (0, 80, 16)


def _row_index_mfcc(num_rows: int) -> np.ndarray:
    return (np.arange(num_rows)[:, None] + np.arange(13)[None, :] / 100.0).astype(np.float32)


def test_mfcc_windows_at_25_fps_equal_syncnet_indexing():
    rows = _row_index_mfcc(120)
    windows = audio_features.mfcc_windows(rows, 20, 25)
    assert windows.shape == (20, 13, 20) and windows.dtype == np.float32
    cct = rows.T  # syncnet_python's cc: [13, T]; frame v takes cc[:, 4v : 4v + 20]
    for v in range(20):
        np.testing.assert_array_equal(windows[v], cct[:, 4 * v: 4 * v + 20])


def test_mfcc_windows_hand_computed_starts_at_other_rates():
    rows = _row_index_mfcc(12000)
    at_30 = audio_features.mfcc_windows(rows, 7, 30)
    np.testing.assert_array_equal(at_30[:, 0, 0], [0, 3, 6, 10, 13, 16, 20])  # floor(100 i / 30)
    at_ntsc = audio_features.mfcc_windows(rows, 2998, 29.97, columns=4)
    # Frame 2997 is at exactly 100 s = row 10000; frame 1 at 33.37 ms = row 3.
    assert at_ntsc[2997, 0, 0] == 10000 and at_ntsc[1, 0, 0] == 3 and at_ntsc[2996, 0, 0] == 9996
    np.testing.assert_allclose(at_ntsc[5, :, 2], 16 + 2 + np.arange(13) / 100.0, atol=1e-4)


def test_mfcc_windows_past_the_end():
    rows = _row_index_mfcc(30)
    # 25 fps: frame 2 needs rows 8..27 (fits), frame 3 needs 12..31 (2 missing).
    assert audio_features.mfcc_windows(rows, 3, 25).shape == (3, 13, 20)
    with pytest.raises(ValueError, match="video frame 3 needs MFCC rows 12..31 but there are 30"):
        audio_features.mfcc_windows(rows, 4, 25)
    padded = audio_features.mfcc_windows(rows, 4, 25, zero_pad_end=True)
    np.testing.assert_array_equal(padded[3, 0, :18], np.arange(12, 30))
    np.testing.assert_array_equal(padded[3, :, 18:], 0.0)
    with pytest.raises(ValueError, match="video frame 8 needs"):
        # frame 8 starts at row 32 >= 30
        audio_features.mfcc_windows(rows, 9, 25, zero_pad_end=True)


def test_frames_for_audio():
    assert audio_features.frames_for_audio(16000, 16000, 25) == 25
    assert audio_features.frames_for_audio(16639, 16000, 25) == 25
    assert audio_features.frames_for_audio(16640, 16000, 25) == 26
    assert audio_features.frames_for_audio(1_600_000, 16000, 29.97) == 2997
    assert audio_features.frames_for_audio(1_601_600, 16000, 30000 / 1001) == 3000
    assert audio_features.frames_for_audio(1_601_599, 16000, 30000 / 1001) == 2999
    assert audio_features.frames_for_audio(0, 16000, 25) == 0
    with pytest.raises(ValueError, match="fps must be positive"):
        audio_features.frames_for_audio(100, 16000, 0)


# ---------------------------------------------------------------------------------------- errors

def test_bad_audio_is_refused_with_one_line_errors():
    good = chirp_with_noise(16000, seed=0)
    cases = [
        (lambda: audio_features.wav2lip_mel(good, 44100), "defined at 16000 Hz"),
        (lambda: audio_features.wav2lip_mel(np.zeros(0, np.float32)), "audio is empty"),
        (lambda: audio_features.mfcc(np.zeros(0, np.float32)), "audio is empty"),
        (lambda: audio_features.wav2lip_mel(np.where(np.arange(16000) == 5, np.nan, good)), "NaN"),
        (lambda: audio_features.mfcc(np.where(np.arange(16000) == 5, np.inf, good)),
         "NaN or infinite"),
        (lambda: audio_features.wav2lip_mel(good[:400]), "400 samples.*more than 400"),
        (lambda: audio_features.mfcc(good[:399]), "399 samples.*needs 400"),
        (lambda: audio_features.wav2lip_mel(np.stack([good, good])), r"mono \[N\]"),
        (lambda: audio_features.mfcc((good * 32767).astype(np.int16)), "dtype int16"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as caught:
            call()
        assert "\n" not in str(caught.value)


# ------------------------------------------------------------------------- one frame's audio

def test_frame_mel_equals_the_centre_columns_of_the_whole_windows_mel():
    window = chirp_with_noise(10240, seed=3)
    for columns in (8, 16, 32):
        whole = audio_features.wav2lip_mel(window)
        start = int(round((10240 // 2) / 200 - (columns - 1) / 2))
        np.testing.assert_array_equal(frame_mel(window, columns), whole[:, start:start + columns])
    with pytest.raises(ValueError, match="cannot hold 60 mel columns"):
        frame_mel(window, 60)


def test_audio_window_is_centred_on_the_time_and_zero_past_the_ends():
    signal = np.arange(1, 101, dtype=np.float32)               # 100 samples at 10 Hz
    np.testing.assert_array_equal(audio_window(signal, 5.0, 6, 10), signal[47:53])
    np.testing.assert_array_equal(audio_window(signal, 0.1, 6, 10), [0, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(audio_window(signal, 9.9, 6, 10), [97, 98, 99, 100, 0, 0])
    assert not audio_window(None, 1.0, 4, 10).any()
