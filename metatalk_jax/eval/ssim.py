"""Per-frame SSIM between generated and ground-truth frames, under a stated protocol.

Protocol (what the numbers mean; SSIM figures are only comparable under the same settings):
  - frames RGB, uint8 / 255 -> [0,1] (data range 1);
  - Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03 (Wang et al. 2004), population
    (not sample) statistics, computed on the "valid" region (no border padding);
  - SSIM per colour channel, then the mean over channels and pixels: one value per frame.
This is dm-pix's `ssim` and equals scikit-image's
    structural_similarity(a, b, data_range=1, channel_axis=-1, gaussian_weights=True,
                          sigma=1.5, use_sample_covariance=False)
to ~1e-5 (tests/test_ssim.py). scikit-image's *defaults* (7x7 uniform window, sample
covariance) give values 0.004-0.024 apart on the same frames, hence the protocol is stated.

Self-reenactment (how Meta Talk's SSIM column is measured): the model is driven by the audio of
held-out target footage that it never trained on, and each generated frame is compared with the
ground-truth frame at the same time index (same crop, same size; frame t against frame t, no
temporal alignment search). `ssim_frames` takes the two aligned frame stacks; the video score
is the mean over frames.
"""

from __future__ import annotations

import functools

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from metatalk_jax.fixed_batches import index_batches, pad_to_batch

FILTER_SIZE = 11
FILTER_SIGMA = 1.5
K1, K2 = 0.01, 0.03


@functools.lru_cache(maxsize=1)
def _batched_ssim():
    def ssim(a, b):
        a = a.astype(jnp.float32) / 255.0 if a.dtype == jnp.uint8 else a.astype(jnp.float32)
        b = b.astype(jnp.float32) / 255.0 if b.dtype == jnp.uint8 else b.astype(jnp.float32)
        return dm_pix.ssim(a, b, max_val=1.0, filter_size=FILTER_SIZE,
                           filter_sigma=FILTER_SIGMA, k1=K1, k2=K2)
    return jax.jit(ssim)


def _check_frames(frames, what: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"SSIM: {what} frames must be [T,H,W,3] RGB, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        if not np.issubdtype(frames.dtype, np.floating):
            raise ValueError(f"SSIM: {what} frames must be uint8 or float in [0,1], "
                             f"got {frames.dtype}")
        if frames.size and (frames.min() < 0 or frames.max() > 1):
            raise ValueError(f"SSIM: {what} float frames must lie in [0,1], got "
                             f"[{frames.min():.3g}, {frames.max():.3g}]")
    if min(frames.shape[1:3]) < FILTER_SIZE:
        raise ValueError(f"SSIM: {what} frames are {frames.shape[1]}x{frames.shape[2]}, smaller "
                         f"than the {FILTER_SIZE}x{FILTER_SIZE} window")
    return frames


def ssim_frames(generated, reference, *, batch_size: int = 32) -> np.ndarray:
    """SSIM per frame [T] float32 of generated vs reference frames, each [T,H,W,3] uint8 RGB (or
    float in [0,1]), aligned frame by frame; 1.0 means identical.

    Runs one jitted program of fixed batch `batch_size` (last batch padded, padding dropped).
    """
    generated = _check_frames(generated, "generated")
    reference = _check_frames(reference, "reference")
    if generated.shape != reference.shape:
        raise ValueError(f"SSIM: generated frames {generated.shape} and reference frames "
                         f"{reference.shape} must have the same shape")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batch_size = max(1, min(batch_size, len(generated)))   # a short clip is not padded to 32
    ssim = _batched_ssim()
    out = np.empty(len(generated), np.float32)
    for real, _ in index_batches(len(generated), batch_size):
        a, b = (pad_to_batch(x[real[0]:real[-1] + 1], batch_size) for x in (generated, reference))
        out[real] = np.asarray(ssim(a, b))[:len(real)]
    return out


def mean_ssim(generated, reference, *, batch_size: int = 32) -> float:
    """The video's SSIM: the mean of `ssim_frames` over its frames."""
    return float(np.mean(ssim_frames(generated, reference, batch_size=batch_size)))
