"""Audio features for the models: Wav2Lip's mel spectrogram, SyncNet's MFCC, and the per-video-frame
windows cut from them.

Plain NumPy (plus librosa's mel filter bank, built once), so it runs in data-loader workers
without JAX. Both features reproduce the public reference pipelines number for number:

* `wav2lip_mel` = Wav2Lip's `audio.melspectrogram` (hparams of Rudrabha/Wav2Lip) under the
  librosa 0.7 it pins, i.e. with REFLECT padding of the centred STFT (librosa >= 0.10 pads with
  zeros by default, which changes the first and last two columns).
* `mfcc` = python_speech_features 0.6 `mfcc` with its defaults, as syncnet_python calls it on the
  int16 samples of a 16 kHz wav (hence `pcm_scale`, see there).

Rates: 80 mel columns per second (hop 200 at 16 kHz), 100 MFCC rows per second (step 10 ms).
"""

from __future__ import annotations

import functools
import math
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import numpy as np
import scipy.fft

# Wav2Lip hparams.py (fixed by the released checkpoints).
WAV2LIP_SAMPLE_RATE = 16000
WAV2LIP_N_FFT = 800
WAV2LIP_HOP = 200          # 12.5 ms -> 80 mel columns per second
WAV2LIP_WIN = 800          # 50 ms
WAV2LIP_NUM_MELS = 80
WAV2LIP_FMIN = 55.0
WAV2LIP_FMAX = 7600.0
WAV2LIP_PREEMPHASIS = 0.97
WAV2LIP_MIN_LEVEL_DB = -100.0
WAV2LIP_REF_LEVEL_DB = 20.0
WAV2LIP_MAX_ABS_VALUE = 4.0
WAV2LIP_MEL_STEP = 16      # columns per chunk = 0.2 s, what the audio encoder takes
MEL_COLUMNS_PER_SECOND = WAV2LIP_SAMPLE_RATE // WAV2LIP_HOP

# python_speech_features 0.6 defaults (what syncnet_python uses).
MFCC_WINLEN_S = 0.025
MFCC_WINSTEP_S = 0.01
MFCC_NUM_CEPSTRA = 13
MFCC_NUM_FILTERS = 26
MFCC_MIN_NFFT = 512
MFCC_PREEMPHASIS = 0.97
MFCC_CEPLIFTER = 22
MFCC_ROWS_PER_SECOND = 100
SYNCNET_MFCC_COLUMNS = 20  # 0.2 s of MFCC per SyncNet audio window
PCM16_SCALE = 32768.0

# Frames per STFT block: bounds the temporary [frames, 800] float64 buffer to ~13 MB on long audio.
_STFT_BLOCK = 2048


def _checked_audio(wav, who: str) -> np.ndarray:
    """float64 [N] copy of `wav` after checking it is 1-D, floating point, non-empty and finite."""
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise ValueError(f"{who}: audio must be mono [N] samples, got shape {wav.shape}")
    if not np.issubdtype(wav.dtype, np.floating):
        raise ValueError(f"{who}: audio must be float samples in [-1, 1], got dtype {wav.dtype} "
                         f"(divide int16 PCM by 32768)")
    if wav.size == 0:
        raise ValueError(f"{who}: audio is empty")
    if not np.all(np.isfinite(wav)):
        raise ValueError(f"{who}: audio contains NaN or infinite samples")
    return wav.astype(np.float64)


def _preemphasis(x: np.ndarray, coefficient: float) -> np.ndarray:
    """y[0] = x[0], y[n] = x[n] - k x[n-1]: the FIR filter [1, -k] (scipy lfilter / PSF)."""
    y = x.copy()
    y[1:] -= coefficient * x[:-1]
    return y


def _positive_rate(value, who: str, what: str) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: {what} must be a number, got {value!r}") from None
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"{who}: {what} must be positive and finite, got {value!r}")
    return rate


def _frame_count(value, who: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"{who}: num_frames must be a non-negative integer, got {value!r}")
    return int(value)


def _exact_fps(fps, who: str) -> Fraction:
    """fps as an exact fraction; a float is read as the nearest fraction with a denominator up
    to 1e6, so 29.97 is 2997/100 and 30000/1001 stays itself (floors land on the exact frame)."""
    _positive_rate(fps, who, "fps")
    if isinstance(fps, Fraction):
        return fps
    return Fraction(fps).limit_denominator(1_000_000)


# ----------------------------------------------------------------------------------- Wav2Lip mel

def periodic_hann(length: int) -> np.ndarray:
    """float64 [length] periodic Hann window 0.5 - 0.5 cos(2 pi n / length) (librosa's 'hann')."""
    n = np.arange(length, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)


@functools.lru_cache(maxsize=1)
def wav2lip_mel_basis() -> np.ndarray:
    """float64 [80, 401] mel filter bank of Wav2Lip: librosa.filters.mel(sr=16000, n_fft=800,
    n_mels=80, fmin=55, fmax=7600) with librosa's defaults (Slaney mel scale, Slaney area
    normalisation). The values are librosa's float32 ones, as Wav2Lip multiplies with."""
    import librosa  # deferred: importing librosa costs ~1 s and only this needs it

    basis = librosa.filters.mel(sr=WAV2LIP_SAMPLE_RATE, n_fft=WAV2LIP_N_FFT,
                                n_mels=WAV2LIP_NUM_MELS, fmin=WAV2LIP_FMIN, fmax=WAV2LIP_FMAX,
                                htk=False, norm="slaney", dtype=np.float32)
    basis = np.asarray(basis, dtype=np.float64)
    basis.setflags(write=False)
    return basis


def wav2lip_mel(wav, sample_rate: int = WAV2LIP_SAMPLE_RATE) -> np.ndarray:
    """Wav2Lip's normalised log-mel spectrogram: float32 [80, T] in [-4, 4], T = 1 + N // 200.

    wav: float [N] mono samples in [-1, 1] at 16 kHz (resample first with
    media.audio_files.load_audio(path, 16000); any other `sample_rate` raises ValueError).
    Column t describes the 50 ms Hann window centred on sample 200 t (12.5 ms steps).

    Steps (Wav2Lip audio.py / hparams.py): pre-emphasis 0.97; STFT n_fft 800, hop 200, periodic
    Hann 800, centred with 400 samples of REFLECT padding each side; magnitude; mel filter bank
    (`wav2lip_mel_basis`); 20 log10(max(1e-5, mel)) - 20 dB; symmetric normalisation
    clip(8 (S + 100) / 100 - 4, -4, 4).
    """
    who = "wav2lip_mel"
    x = _checked_audio(wav, who)
    if sample_rate != WAV2LIP_SAMPLE_RATE:
        raise ValueError(f"{who}: Wav2Lip's mel is defined at {WAV2LIP_SAMPLE_RATE} Hz, got "
                         f"sample_rate={sample_rate!r}; resample with "
                         f"media.audio_files.load_audio(path, 16000)")
    half = WAV2LIP_N_FFT // 2
    if x.size <= half:
        raise ValueError(f"{who}: audio has {x.size} samples; the centred STFT needs more than "
                         f"{half} (25 ms at 16 kHz)")
    padded = np.pad(_preemphasis(x, WAV2LIP_PREEMPHASIS), half, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, WAV2LIP_N_FFT)[::WAV2LIP_HOP]
    window = periodic_hann(WAV2LIP_WIN)  # win == n_fft, so no centring of the window inside it
    basis = wav2lip_mel_basis()
    mel = np.empty((WAV2LIP_NUM_MELS, frames.shape[0]), dtype=np.float64)
    for start in range(0, frames.shape[0], _STFT_BLOCK):
        block = frames[start:start + _STFT_BLOCK] * window
        magnitude = np.abs(np.fft.rfft(block, n=WAV2LIP_N_FFT, axis=-1))  # [b, 401]
        mel[:, start:start + block.shape[0]] = basis @ magnitude.T
    min_level = 10.0 ** (WAV2LIP_MIN_LEVEL_DB / 20.0)  # 1e-5
    level_db = 20.0 * np.log10(np.maximum(min_level, mel)) - WAV2LIP_REF_LEVEL_DB
    scale = 2.0 * WAV2LIP_MAX_ABS_VALUE
    normalised = scale * (level_db - WAV2LIP_MIN_LEVEL_DB) / -WAV2LIP_MIN_LEVEL_DB
    normalised -= WAV2LIP_MAX_ABS_VALUE
    return np.clip(normalised, -WAV2LIP_MAX_ABS_VALUE, WAV2LIP_MAX_ABS_VALUE).astype(np.float32)


def wav2lip_mel_start_column(frame_index: int, fps: float) -> int:
    """First mel column of video frame `frame_index`'s chunk before the end rule:
    int(frame_index * (80 / fps)), computed in float64 exactly as Wav2Lip's inference.py does
    (equal to the exact floor(80 i / fps) for 24/25/30/50/60 and the NTSC rates; tested)."""
    return int(frame_index * (float(MEL_COLUMNS_PER_SECOND) / float(fps)))


def wav2lip_mel_chunks(mel, num_frames: int, fps: float) -> np.ndarray:
    """Wav2Lip's audio input per video frame: float32 [num_frames, 80, 16].

    mel: [80, T] from `wav2lip_mel`; fps: video frame rate in Hz (any positive value).
    Chunk i = mel[:, s : s + 16] with s = `wav2lip_mel_start_column(i, fps)` (the 0.2 s of audio
    starting at the frame's time, 80 columns per second). End rule, as in Wav2Lip's inference:
    a chunk that would run past the last column is replaced by the LAST 16 columns,
    mel[:, T - 16 :]. Wav2Lip stops at the first such chunk (and drops later video frames);
    here every later frame gets the same last-16 chunk, so the result equals Wav2Lip's for every
    frame Wav2Lip produces and `frames_for_audio` frames can always be served.

    Raises ValueError when mel has fewer than 16 columns or a frame starts at or after column T
    (a video frame entirely past the end of the audio).
    """
    who = "wav2lip_mel_chunks"
    mel = np.asarray(mel)
    if mel.ndim != 2 or mel.shape[0] != WAV2LIP_NUM_MELS:
        raise ValueError(f"{who}: mel must be [{WAV2LIP_NUM_MELS}, T], got shape {mel.shape}")
    num_columns = mel.shape[1]
    if num_columns < WAV2LIP_MEL_STEP:
        raise ValueError(f"{who}: mel has {num_columns} columns; one chunk needs "
                         f"{WAV2LIP_MEL_STEP} (0.2 s of audio)")
    num_frames = _frame_count(num_frames, who)
    fps = _positive_rate(fps, who, "fps")
    starts = np.array([wav2lip_mel_start_column(i, fps) for i in range(num_frames)],
                      dtype=np.int64)
    if num_frames and starts[-1] >= num_columns:
        first_bad = int(np.argmax(starts >= num_columns))
        raise ValueError(f"{who}: video frame {first_bad} (t={first_bad / fps:.3f} s) starts past "
                         f"the end of the audio ({num_columns} mel columns = "
                         f"{num_columns / MEL_COLUMNS_PER_SECOND:.3f} s)")
    starts = np.minimum(starts, num_columns - WAV2LIP_MEL_STEP)
    columns = starts[:, None] + np.arange(WAV2LIP_MEL_STEP)[None, :]  # [F, 16]
    return np.ascontiguousarray(np.moveaxis(mel[:, columns], 1, 0), dtype=np.float32)


# ------------------------------------------------------------------------------------ SyncNet MFCC

def _round_half_up(value: float) -> int:
    """Round half up on the float's exact binary value, as python_speech_features does."""
    return int(Decimal(value).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _hz_to_mel_htk(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_htk_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mfcc_filter_bank(num_filters: int, nfft: int, sample_rate: float, low_hz: float = 0.0,
                     high_hz: float | None = None) -> np.ndarray:
    """float64 [num_filters, nfft // 2 + 1] triangular filters of python_speech_features.

    Edges evenly spaced on the HTK mel scale (2595 log10(1 + f / 700)) and snapped down to FFT
    bins floor((nfft + 1) f / sample_rate); peaks are 1, no area normalisation.
    """
    high_hz = sample_rate / 2.0 if high_hz is None else high_hz
    mel_edges = np.linspace(_hz_to_mel_htk(low_hz), _hz_to_mel_htk(high_hz), num_filters + 2)
    edges = np.floor((nfft + 1) * _mel_htk_to_hz(mel_edges) / sample_rate).astype(np.int64)
    bins = np.arange(nfft // 2 + 1)
    bank = np.zeros((num_filters, bins.size), dtype=np.float64)
    for j in range(num_filters):
        left, centre, right = edges[j], edges[j + 1], edges[j + 2]
        rising = (bins >= left) & (bins < centre)
        falling = (bins >= centre) & (bins < right)
        # Masks are empty whenever a denominator would be zero (coincident edges).
        bank[j, rising] = (bins[rising] - left) / max(centre - left, 1)
        bank[j, falling] = (right - bins[falling]) / max(right - centre, 1)
    return bank


def mfcc_fft_size(sample_rate: float) -> int:
    """FFT size for a 25 ms window: 512 (PSF 0.6's default, used unchanged whenever the window
    fits, i.e. up to 20.48 kHz), else the next power of two that holds the whole window (where
    0.6 would silently truncate frames and later versions enlarge the FFT)."""
    window = _round_half_up(MFCC_WINLEN_S * sample_rate)
    nfft = MFCC_MIN_NFFT
    while nfft < window:
        nfft *= 2
    return nfft


def mfcc(wav, sample_rate: int = 16000, *, pcm_scale: float = PCM16_SCALE) -> np.ndarray:
    """MFCC as python_speech_features.mfcc with its defaults: float32 [T, 13], 100 rows per second.

    wav: float [N] mono samples in [-1, 1] at `sample_rate` Hz (SyncNet expects 16 kHz).
    pcm_scale: the samples are multiplied by this first. The default 32768 reproduces
    syncnet_python, which feeds the int16 values of its wav to python_speech_features: only
    column 0 (log frame energy) depends on it, by 2 ln(pcm_scale) = 20.79. Pass 1.0 for the
    features of the float samples as given.

    Steps: pre-emphasis 0.97; rectangular frames of round_half_up(0.025 sr) samples every
    round_half_up(0.01 sr), T = 1 + ceil((N - len) / step), the last frame zero-padded; power
    spectrum |rfft(frame, nfft)|^2 / nfft (nfft from `mfcc_fft_size`, 512 at 16 kHz); 26 filters
    (`mfcc_filter_bank`) over 0..sr/2; log; DCT-II (orthonormal), first 13; lifter
    1 + 11 sin(pi n / 22); column 0 replaced by the log of the frame's total power. Zero powers
    become float64 eps before the logs, as in the reference.
    """
    who = "mfcc"
    x = _checked_audio(wav, who)
    sample_rate = _positive_rate(sample_rate, who, "sample_rate")
    x = x * float(pcm_scale)
    frame_len = _round_half_up(MFCC_WINLEN_S * sample_rate)
    frame_step = _round_half_up(MFCC_WINSTEP_S * sample_rate)
    if x.size < frame_len:
        raise ValueError(f"{who}: audio has {x.size} samples; one 25 ms MFCC window needs "
                         f"{frame_len} at {sample_rate:g} Hz")
    num_rows = 1 + math.ceil((x.size - frame_len) / frame_step)
    padded = np.zeros((num_rows - 1) * frame_step + frame_len, dtype=np.float64)
    padded[:x.size] = _preemphasis(x, MFCC_PREEMPHASIS)
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_len)[::frame_step]
    nfft = mfcc_fft_size(sample_rate)
    power = np.abs(np.fft.rfft(frames, n=nfft, axis=-1)) ** 2 / nfft  # [T, nfft/2+1]
    eps = np.finfo(np.float64).eps
    energy = power.sum(axis=1)
    energy = np.where(energy == 0.0, eps, energy)
    bank = mfcc_filter_bank(MFCC_NUM_FILTERS, nfft, sample_rate)
    filtered = power @ bank.T
    filtered = np.where(filtered == 0.0, eps, filtered)
    cepstra = scipy.fft.dct(np.log(filtered), type=2, axis=1, norm="ortho")[:, :MFCC_NUM_CEPSTRA]
    n = np.arange(MFCC_NUM_CEPSTRA)
    cepstra *= 1.0 + (MFCC_CEPLIFTER / 2.0) * np.sin(np.pi * n / MFCC_CEPLIFTER)
    cepstra[:, 0] = np.log(energy)
    return cepstra.astype(np.float32)


def mfcc_start_row(frame_index: int, fps) -> int:
    """First MFCC row of video frame `frame_index`'s window: floor(100 i / fps) exactly (fps
    read as in `frames_for_audio`). At 25 fps this is 4 i, syncnet_python's cc[:, 4i : 4i + 20]."""
    exact = _exact_fps(fps, "mfcc_start_row")
    return (MFCC_ROWS_PER_SECOND * int(frame_index) * exact.denominator) // exact.numerator


def mfcc_windows(mfcc_rows, num_frames: int, fps, columns: int = SYNCNET_MFCC_COLUMNS, *,
                 zero_pad_end: bool = False) -> np.ndarray:
    """SyncNet-style audio windows per video frame: float32 [num_frames, 13, columns].

    mfcc_rows: [T, 13] from `mfcc` (100 rows per second). Window i holds rows
    s .. s + columns - 1 transposed, s = `mfcc_start_row(i, fps)`: it starts at the frame's time,
    floored to the 10 ms grid (100 / fps rows per frame; 4 at 25 fps, so at 25 fps this is
    exactly syncnet_python's cct[..., 4i : 4i + 20]), and 20 columns = 0.2 s = the 5 frames the
    lip branch sees from frame i on.

    A window running past the last row raises ValueError (syncnet_python never builds one: it
    stops 5 frames before the end), unless zero_pad_end, which fills the missing rows with 0.
    A frame starting at or after row T raises either way.
    """
    who = "mfcc_windows"
    rows = np.asarray(mfcc_rows)
    if rows.ndim != 2 or rows.shape[1] != MFCC_NUM_CEPSTRA:
        raise ValueError(f"{who}: mfcc must be [T, {MFCC_NUM_CEPSTRA}], got shape {rows.shape}")
    if isinstance(columns, bool) or int(columns) != columns or columns < 1:
        raise ValueError(f"{who}: columns must be a positive integer, got {columns!r}")
    columns = int(columns)
    num_frames = _frame_count(num_frames, who)
    _exact_fps(fps, who)
    num_rows = rows.shape[0]
    starts = np.array([mfcc_start_row(i, fps) for i in range(num_frames)], dtype=np.int64)
    if num_frames:
        late = starts >= num_rows if zero_pad_end else starts + columns > num_rows
        if late.any():
            i = int(np.argmax(late))
            raise ValueError(
                f"{who}: video frame {i} needs MFCC rows {starts[i]}..{starts[i] + columns - 1} "
                f"but there are {num_rows}; use fewer frames"
                + ("" if zero_pad_end else " or zero_pad_end=True"))
    padded = np.zeros((num_rows + columns, MFCC_NUM_CEPSTRA), dtype=np.float32)
    padded[:num_rows] = rows
    index = starts[:, None] + np.arange(columns)[None, :]  # [F, columns]
    return np.ascontiguousarray(np.swapaxes(padded[index], 1, 2))


def frames_for_audio(num_samples: int, sample_rate: int, fps) -> int:
    """Number of whole video frames at `fps` that `num_samples` samples at `sample_rate` Hz
    cover: floor(num_samples * fps / sample_rate), in exact arithmetic (a float fps is read as
    the nearest fraction with denominator <= 1e6: 29.97 -> 2997/100, 30000/1001 stays)."""
    who = "frames_for_audio"
    if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 0:
        raise ValueError(f"{who}: num_samples must be a non-negative integer, got {num_samples!r}")
    rate = _positive_rate(sample_rate, who, "sample_rate")
    exact_rate = Fraction(sample_rate) if isinstance(sample_rate, (int, Fraction)) \
        else Fraction(rate).limit_denominator(1_000_000)
    return math.floor(int(num_samples) * _exact_fps(fps, who) / exact_rate)
