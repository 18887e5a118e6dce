"""Audio-to-expression (A2E) networks: per-frame mel windows -> 3DMM expression per frame.

Both models map mel [B, W, 80, M] (data_pipelines/a2e_windows.py: Wav2Lip log-mel in [-4, 4],
M columns of 12.5 ms centred on each of W consecutive video frames) and valid [B, W] (False where
a window position has no frame) to expressions [B, W, E] (unit-variance 3DMM coefficients).
flax.linen, parameters float32, `dtype` the compute dtype.

"audiodvp" (AudioDVPA2E), the baseline. AudioDVP's A2E takes 7 consecutive 256-d audio features
(frames t-3..t+3) and runs, with the 7 frames as channels over the 256 feature positions,
Conv1d(7->5, k3) -> Conv1d(5->3, k3) -> Conv1d(3->1, k3) (no activations, no padding: 256 -> 254
-> 252 -> 250) -> Linear(250 -> E=64). DEVIATION: its 256-d features come from ATVGnet's
pretrained audio encoder (MFCC windows), which is not available; here a per-frame convolutional
encoder of the same output size (FrameEncoder, features=256) reads each frame's mel window and
is trained jointly with the A2E. Every window position gets a prediction (context zero-padded
past the window's ends, as past the video's ends); the task trains the centre one only when
config.loss.centre_only is set (AudioDVP's setting).

"metatalk" (MetaTalkA2E). Meta Talk's modified A2E is unpublished; this is our design, made to
use context across frames and to be trained on many speakers' audio (pseudo videos):
  * FrameEncoder: 2D convolutions over (mel band, time) of each frame's window, stride 2 (on
    the time axis until it is 1 column), LayerNorm + GELU, mean over the remaining time
    columns, the bands flattened (absolute frequency matters), Dense -> D;
  * temporal context: residual blocks of dilated 1D convolutions over the W frames (kernel 3,
    dilations e.g. 1, 2, 4, 8: a receptive field of 31 frames = 1.24 s), pre-LayerNorm, GELU,
    dropout; features at invalid positions are zeroed before every convolution, so a clip's
    ends look like zero padding, never like another clip;
  * head: LayerNorm -> Dense(E).
The task trains it with expression MSE + a mouth-vertex loss + a velocity (smoothness) loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from metatalk_jax.errors import InputError

AUDIODVP_CONTEXT = 7            # frames t-3..t+3
AUDIODVP_FEATURES = 256         # ATVGnet's audio feature size
AUDIODVP_CONV_CHANNELS = (5, 3, 1)
AUDIODVP_KERNEL = 3


class FrameEncoder(nn.Module):
    """mel [B, W, 80, M] -> features [B, W, features]; each frame encoded on its own."""

    channels: Sequence[int] = (32, 64, 128, 256)
    features: int = 256
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, mel):
        b, w, bands, columns = mel.shape
        x = mel.reshape(b * w, bands, columns, 1).astype(self.dtype) / 4.0  # mel in [-4, 4]
        for i, c in enumerate(self.channels):
            stride = (2 if x.shape[1] > 1 else 1, 2 if x.shape[2] > 1 else 1)
            x = nn.Conv(c, (3, 3), strides=stride, dtype=self.dtype, name=f"conv{i}")(x)
            x = nn.LayerNorm(dtype=self.dtype, name=f"norm{i}")(x)
            x = nn.gelu(x)
        # Mean over the remaining time columns only: which bands carry energy is the signal
        # (formants), so the band axis is flattened, not pooled.
        x = jnp.mean(x, axis=2).reshape(b * w, -1)
        x = nn.Dense(self.features, dtype=self.dtype, name="proj")(x)
        return x.reshape(b, w, self.features)


class AudioDVPHead(nn.Module):
    """AudioDVP's A2E proper: [N, 7, 256] features -> [N, E] (layer list in the module doc)."""

    expression_dim: int = 64
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, context):
        # torch Conv1d is channels-first [N, 7, 256]; flax convolves the middle axis of
        # [N, 256, 7], so the 7 frames are the input channels as in AudioDVP.
        x = jnp.swapaxes(context, 1, 2).astype(self.dtype)
        for i, c in enumerate(AUDIODVP_CONV_CHANNELS):
            x = nn.Conv(c, (AUDIODVP_KERNEL,), padding="VALID", dtype=self.dtype,
                        name=f"conv{i}")(x)
        x = x[..., 0]                                     # [N, 250]
        return nn.Dense(self.expression_dim, dtype=self.dtype, name="fc")(x)


class AudioDVPA2E(nn.Module):
    """The baseline: FrameEncoder (stand-in for ATVGnet, 256-d) + AudioDVPHead at every frame."""

    expression_dim: int = 64
    encoder_channels: Sequence[int] = (32, 64, 128, 256)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, mel, valid, *, train: bool = False):
        del train  # no dropout or batch statistics
        feats = FrameEncoder(self.encoder_channels, AUDIODVP_FEATURES, self.dtype,
                             name="encoder")(mel)
        feats = feats * valid[..., None].astype(feats.dtype)
        b, w, _ = feats.shape
        half = AUDIODVP_CONTEXT // 2
        padded = jnp.pad(feats, ((0, 0), (half, half), (0, 0)))
        context = jnp.stack([padded[:, k:k + w] for k in range(AUDIODVP_CONTEXT)], axis=2)
        out = AudioDVPHead(self.expression_dim, self.dtype, name="a2e")(
            context.reshape(b * w, AUDIODVP_CONTEXT, AUDIODVP_FEATURES))
        return out.reshape(b, w, self.expression_dim).astype(jnp.float32)


class MetaTalkA2E(nn.Module):
    """Our stronger A2E (module docstring): frame encoder + dilated temporal convs + head."""

    expression_dim: int = 64
    encoder_channels: Sequence[int] = (32, 64, 128, 256)
    features: int = 256
    dilations: Sequence[int] = (1, 2, 4, 8)
    dropout: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, mel, valid, *, train: bool = False):
        mask = valid[..., None].astype(self.dtype)
        x = FrameEncoder(self.encoder_channels, self.features, self.dtype, name="encoder")(mel)
        x = x * mask
        for i, d in enumerate(self.dilations):
            h = nn.LayerNorm(dtype=self.dtype, name=f"block{i}_norm")(x) * mask
            h = nn.Conv(self.features, (3,), kernel_dilation=(d,), padding="SAME",
                        dtype=self.dtype, name=f"block{i}_conv")(h)
            h = nn.gelu(h)
            h = nn.Dropout(self.dropout, deterministic=not train)(h)
            h = nn.Dense(self.features, dtype=self.dtype, name=f"block{i}_out")(h)
            x = (x + h) * mask
        x = nn.LayerNorm(dtype=self.dtype, name="head_norm")(x)
        out = nn.Dense(self.expression_dim, dtype=self.dtype, name="head")(x)
        return out.astype(jnp.float32)


def make_a2e(model_config, expression_dim: int | None = None) -> nn.Module:
    """The A2E named by model_config.kind ("audiodvp" or "metatalk").

    expression_dim: E; None = model_config.expression_dim. Reads encoder_channels, features,
    dilations, dropout and dtype ("float32" / "bfloat16") where the kind uses them.
    """
    e = int(expression_dim if expression_dim is not None else model_config.expression_dim)
    if e <= 0:
        raise InputError(f"expression_dim must be positive, got {e}")
    dtype = jnp.dtype(model_config.get("dtype", "float32"))
    channels = tuple(int(c) for c in model_config.encoder_channels)
    kind = model_config.kind
    if kind == "audiodvp":
        return AudioDVPA2E(e, channels, dtype)
    if kind == "metatalk":
        return MetaTalkA2E(e, channels, int(model_config.features),
                           tuple(int(d) for d in model_config.dilations),
                           float(model_config.dropout), dtype)
    raise InputError(f"unknown A2E model.kind {kind!r} (known: audiodvp, metatalk)")
