"""Audio -> one 3DMM expression per output video frame, through the trained A2E.

Features are exactly the training ones: the whole clip is brought to the front end's loudness
(media/loudness.at_front_end_level, as prepare and the pseudo corpora store their audio), then
for frame i (time i / fps) the subject's audio window
(`audio_samples` samples centred on that time, zero past the audio's ends, as `prepare` stores
them) and its `frame_mel` columns. Every frame is predicted as the centre of its own W-frame
window (as the A2E task evaluates), in chunks, so memory does not grow with the audio's length.
"""

from __future__ import annotations

import numpy as np

from metatalk_jax.fixed_batches import index_batches
from metatalk_jax.inference.trained_models import TrainedA2E
from metatalk_jax.media.audio_features import WAV2LIP_NUM_MELS
from metatalk_jax.media.frame_audio_windows import audio_window, frame_mel
from metatalk_jax.media.loudness import apply_gain, at_front_end_level
from metatalk_jax.progress import Progress


def frame_mels(audio: np.ndarray, frames: range, *, fps: float, audio_samples: int,
               sample_rate: int, mel_columns: int) -> np.ndarray:
    """float32 [len(frames), 80, M]: the mel columns of each frame's audio window."""
    out = np.zeros((len(frames), WAV2LIP_NUM_MELS, mel_columns), np.float32)
    for k, i in enumerate(frames):
        window = audio_window(audio, i / fps, audio_samples, sample_rate)
        out[k] = frame_mel(window, mel_columns)
    return out


def batch_expressions(a2e: TrainedA2E, audio: np.ndarray, centres: np.ndarray,
                      position: np.ndarray, num_frames: int, *, fps: float, audio_samples: int,
                      sample_rate: int) -> np.ndarray:
    """float32 [len(centres), E]: the A2E's expressions of frames `centres` (position: the same
    padded to the batch size), each the centre of its own W-frame window; `audio` is already at
    the front end's level. Neighbours past num_frames are masked out, as the A2E task does."""
    half, m = a2e.window // 2, a2e.mel_columns
    lo, hi = max(0, centres[0] - half), min(num_frames, centres[-1] + half + 1)
    mels = frame_mels(audio, range(lo, hi), fps=fps, audio_samples=audio_samples,
                      sample_rate=sample_rate, mel_columns=m)
    neighbours = position[:, None] + np.arange(-half, half + 1)[None, :]        # [B, W]
    valid = (neighbours >= 0) & (neighbours < num_frames)
    index = np.clip(neighbours, lo, hi - 1) - lo
    mel = np.where(valid[..., None, None], mels[index], 0.0).astype(np.float32)
    predicted = np.asarray(a2e(mel, valid))                                     # [B, W, E]
    return predicted[:len(centres), half]


def expressions_from_audio(a2e: TrainedA2E, audio: np.ndarray, num_frames: int, *, fps: float,
                           audio_samples: int, sample_rate: int = 16000, batch: int = 32,
                           show_progress: bool = True, gain_db: float | None = None
                           ) -> np.ndarray:
    """float32 [num_frames, E] expressions for frames 0..num_frames-1 of `audio` (float32 [N]
    at sample_rate Hz). batch: centre frames per A2E call (a fixed shape: compiled once).
    gain_db: the front end's gain (media/loudness.py; None: measured on this clip)."""
    audio = (at_front_end_level(audio, sample_rate) if gain_db is None
             else apply_gain(audio, gain_db))
    out = np.zeros((num_frames, a2e.expression_dim), np.float32)
    progress = Progress("audio -> expressions", num_frames, enabled=show_progress)
    for centres, position in index_batches(num_frames, batch):
        out[centres] = batch_expressions(a2e, audio, centres, position, num_frames, fps=fps,
                                         audio_samples=audio_samples, sample_rate=sample_rate)
        progress.update(len(centres))
    progress.close()
    return out
