"""The A2E's windows: W frames of audio features and fitted expressions, target and pseudo alike.

A window (data_pipelines/windows.py) centred on frame i of a clip (the target video's split is
one clip; each pseudo clip is one) holds, at position k, frame i + k - W//2:

  key            dtype    shape         meaning
  mel            float32  [W, 80, M]    Wav2Lip log-mel (in [-4, 4]) of each frame's audio window,
                                        its M columns (12.5 ms apart) centred on the frame
  expression     float32  [W, E]        fitted 3DMM expression of each frame
  valid          bool     [W]           the position holds a frame of the same clip

Batches add example_id and example_valid (windows.py); the A2E task reads mel, expression,
valid and example_valid. Target and pseudo windows are mixed per global batch by
`windows.make_window_batches(target, pseudo, pseudo_ratio=...)`.

Features are computed here, in the data workers (numpy), rather than on device: `frame_mel` is
the project's reference implementation of Wav2Lip's features (also used at inference), so the
model sees bit-identical features in training and inference; a frame's mel is computed once per
process and kept (~5 KB for M = 16), after which an example costs a few dict lookups; and the
host -> device transfer is the mel (80 x M floats a frame), not the 0.64 s audio (10240).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from metatalk_jax.data_pipelines.pseudo_corpus import open_pseudo_video
from metatalk_jax.data_pipelines.windows import DEFAULT_CACHE_FRAMES, WindowSource
from metatalk_jax.media.frame_audio_windows import frame_mel


class A2EFrames:
    """FrameFeatures of the A2E: a frame's mel [80, M] (from its stored audio window) and its
    expression [E], both kept per process; nothing from the centre record alone."""

    reads_centre = False

    def __init__(self, mel_columns: int):
        self.mel_columns = int(mel_columns)

    def keep(self, record: dict) -> dict:
        return {"mel": frame_mel(record["audio"], self.mel_columns),
                "expression": np.asarray(record["expression"], np.float32)}

    def position(self, kept: dict, frame_index: int) -> dict[str, np.ndarray]:
        return kept

    def centre(self, record: dict) -> dict[str, np.ndarray]:
        return {}


def a2e_windows(frame_sources: Sequence[Any], *, window: int, mel_columns: int,
                cache_frames: int = DEFAULT_CACHE_FRAMES) -> WindowSource:
    """A2E windows over stored frames (target splits, pseudo sources, or both: windows never
    span two sources, nor two pseudo clips). A ValueError when there are no frames, W is even or
    the audio windows are too short for M mel columns."""
    return WindowSource(frame_sources, A2EFrames(mel_columns), window=window,
                        cache_frames=cache_frames)


def pseudo_frame_sources(roots: Sequence[str], split: str, *, expression_dim: int | None = None,
                         audio_samples: int | None = None,
                         subject_fingerprint: str | None = None) -> list:
    """The stored frames of `split` of the pseudo-video corpora at `roots`, one source per
    corpus (possibly empty); each corpus's metadata is checked against the given arguments."""
    return [open_pseudo_video(root, expression_dim=expression_dim, audio_samples=audio_samples,
                              subject_fingerprint=subject_fingerprint).source(split)
            for root in roots]
