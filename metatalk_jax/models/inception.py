"""pytorch-fid's InceptionV3 (the TF 2015-12-05 "pool_3" network used for FID) in flax.linen, NHWC.

Input and output (pytorch-fid `InceptionV3(output_blocks=[3])`, channels moved last):
  images [B,H,W,3]  RGB float in [0,1] (uint8 frames divided by 255, as torchvision's ToTensor)
  ->     [B,2048]   pool_3 features: the global average of Mixed_7c's output (float32)

Pre-processing (pytorch-fid inception.py `forward`, resize_input and normalize_input on):
  bilinear resize to 299x299 as torch `F.interpolate(mode="bilinear", align_corners=False)`:
  half-pixel centres, source coordinates clamped at 0, two nearest taps and *no* antialiasing
  when shrinking (`resize_bilinear_like_torch`; jax.image.resize("linear") low-pass filters on
  downscaling, antialias=True by default, so it gives other values), then x -> 2x - 1.

Layers (torchvision's Inception3 names, so the state dict of pt_inception-2015-12-05-6726825d.pth
maps one to one; "C(o,k,s,p)" is BasicConv2d = conv without bias -> BatchNorm(eps 0.001) -> ReLU):
  Conv2d_1a_3x3 C(32,3,s2) 299->149, Conv2d_2a_3x3 C(32,3) ->147, Conv2d_2b_3x3 C(64,3,p1),
  max 3/2 ->73, Conv2d_3b_1x1 C(80,1), Conv2d_4a_3x3 C(192,3) ->71, max 3/2 ->35,
  Mixed_5b/5c/5d  FID-InceptionA (pool features 32, 64, 64)        35x35x256/288/288
  Mixed_6a        InceptionB                                         17x17x768
  Mixed_6b..6e    FID-InceptionC (7x7 channels 128, 160, 160, 192)   17x17x768
  Mixed_7a        InceptionD                                         8x8x1280
  Mixed_7b        FID-InceptionE_1                                   8x8x2048
  Mixed_7c        FID-InceptionE_2                                   8x8x2048 -> mean -> 2048
The FID variants differ from torchvision's blocks in their pool branch: a 3x3/1 average pool
that divides by the number of *unpadded* inputs (count_include_pad=False, as TF), and in
Mixed_7c a 3x3/1 max pool (a quirk of the TF graph) instead of the average.
The checkpoint's `fc` (2048->1008 logits) is not used for pool features.

Variables: "params"/<block>/<conv>/conv/kernel [kh,kw,Cin,Cout] and .../bn/{scale,bias},
"batch_stats"/<block>/<conv>/bn/{mean,var}; <block>/<conv> is torch's dotted module path split
at the dots (e.g. params/Mixed_5b/branch1x1/conv/kernel <- "Mixed_5b.branch1x1.conv.weight";
stem layers sit at the top: params/Conv2d_1a_3x3/conv/kernel).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from metatalk_jax.fixed_batches import pad_to_batch

INPUT_SIZE = 299
FEATURES = 2048
BN_EPSILON = 1e-3
FC_CLASSES = 1008                    # the TF graph's 1008-way logits (fc is stored, never used)
# Learnable values of the layers up to pool_3 (fc and BN running statistics excluded): hand
# count from torchvision's layer table (27,161,264 for inception_v3 with aux head and 1000
# classes, minus the aux head's 3,326,696 and the fc's 2,049,000).
REFERENCE_FEATURE_PARAMETERS = 21_785_568


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One BasicConv2d: output channels, kernel (kh, kw), stride, padding (ph, pw)."""
    cin: int
    cout: int
    kernel: tuple[int, int]
    stride: int = 1
    padding: tuple[int, int] = (0, 0)


def _conv(cin, cout, k, stride=1, pad=0) -> ConvSpec:
    k = (k, k) if isinstance(k, int) else tuple(k)
    pad = (pad, pad) if isinstance(pad, int) else tuple(pad)
    return ConvSpec(cin, cout, k, stride, pad)


def _block_a(cin: int, pool: int) -> dict[str, ConvSpec]:
    return {"branch1x1": _conv(cin, 64, 1),
            "branch5x5_1": _conv(cin, 48, 1), "branch5x5_2": _conv(48, 64, 5, pad=2),
            "branch3x3dbl_1": _conv(cin, 64, 1), "branch3x3dbl_2": _conv(64, 96, 3, pad=1),
            "branch3x3dbl_3": _conv(96, 96, 3, pad=1),
            "branch_pool": _conv(cin, pool, 1)}


def _block_b(cin: int) -> dict[str, ConvSpec]:
    return {"branch3x3": _conv(cin, 384, 3, stride=2),
            "branch3x3dbl_1": _conv(cin, 64, 1), "branch3x3dbl_2": _conv(64, 96, 3, pad=1),
            "branch3x3dbl_3": _conv(96, 96, 3, stride=2)}


def _block_c(cin: int, c7: int) -> dict[str, ConvSpec]:
    row, col = {"k": (1, 7), "pad": (0, 3)}, {"k": (7, 1), "pad": (3, 0)}   # factorised 7x7
    return {"branch1x1": _conv(cin, 192, 1),
            "branch7x7_1": _conv(cin, c7, 1), "branch7x7_2": _conv(c7, c7, **row),
            "branch7x7_3": _conv(c7, 192, **col),
            "branch7x7dbl_1": _conv(cin, c7, 1), "branch7x7dbl_2": _conv(c7, c7, **col),
            "branch7x7dbl_3": _conv(c7, c7, **row), "branch7x7dbl_4": _conv(c7, c7, **col),
            "branch7x7dbl_5": _conv(c7, 192, **row),
            "branch_pool": _conv(cin, 192, 1)}


def _block_d(cin: int) -> dict[str, ConvSpec]:
    return {"branch3x3_1": _conv(cin, 192, 1), "branch3x3_2": _conv(192, 320, 3, stride=2),
            "branch7x7x3_1": _conv(cin, 192, 1),
            "branch7x7x3_2": _conv(192, 192, (1, 7), pad=(0, 3)),
            "branch7x7x3_3": _conv(192, 192, (7, 1), pad=(3, 0)),
            "branch7x7x3_4": _conv(192, 192, 3, stride=2)}


def _block_e(cin: int) -> dict[str, ConvSpec]:
    row, col = {"k": (1, 3), "pad": (0, 1)}, {"k": (3, 1), "pad": (1, 0)}   # factorised 3x3
    return {"branch1x1": _conv(cin, 320, 1),
            "branch3x3_1": _conv(cin, 384, 1), "branch3x3_2a": _conv(384, 384, **row),
            "branch3x3_2b": _conv(384, 384, **col),
            "branch3x3dbl_1": _conv(cin, 448, 1), "branch3x3dbl_2": _conv(448, 384, 3, pad=1),
            "branch3x3dbl_3a": _conv(384, 384, **row), "branch3x3dbl_3b": _conv(384, 384, **col),
            "branch_pool": _conv(cin, 192, 1)}


STEM: dict[str, ConvSpec] = {
    "Conv2d_1a_3x3": _conv(3, 32, 3, stride=2), "Conv2d_2a_3x3": _conv(32, 32, 3),
    "Conv2d_2b_3x3": _conv(32, 64, 3, pad=1), "Conv2d_3b_1x1": _conv(64, 80, 1),
    "Conv2d_4a_3x3": _conv(80, 192, 3)}
# (block name, kind, its convs) in forward order; kind picks the branch wiring.
MIXED: list[tuple[str, str, dict[str, ConvSpec]]] = [
    ("Mixed_5b", "A", _block_a(192, 32)), ("Mixed_5c", "A", _block_a(256, 64)),
    ("Mixed_5d", "A", _block_a(288, 64)), ("Mixed_6a", "B", _block_b(288)),
    ("Mixed_6b", "C", _block_c(768, 128)), ("Mixed_6c", "C", _block_c(768, 160)),
    ("Mixed_6d", "C", _block_c(768, 160)), ("Mixed_6e", "C", _block_c(768, 192)),
    ("Mixed_7a", "D", _block_d(768)), ("Mixed_7b", "E1", _block_e(1280)),
    ("Mixed_7c", "E2", _block_e(2048))]


def reference_layers() -> Iterator[tuple[str, ConvSpec]]:
    """(torch module path, spec) of every BasicConv2d, e.g. ("Mixed_6b.branch7x7_2", ...)."""
    yield from STEM.items()
    for block, _, convs in MIXED:
        for name, spec in convs.items():
            yield f"{block}.{name}", spec


def count_parameters() -> int:
    """Learnable values up to pool_3 (conv kernels + BN scale/bias), from the layer table."""
    return sum(s.cout * s.cin * s.kernel[0] * s.kernel[1] + 2 * s.cout
               for _, s in reference_layers())


# -- resize -------------------------------------------------------------------------------------

def bilinear_matrix_like_torch(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] float32 weights of torch's 1-D linear interpolation, align_corners=False.

    Output pixel i samples source coordinate (i + 0.5) * in/out - 0.5, clamped below at 0 (torch
    clamps rather than extrapolating), between taps floor(x) and min(floor(x)+1, in-1). Exactly
    two taps for any scale: shrinking skips pixels instead of averaging them (no antialiasing).
    Rounded as torch's CPU kernel: the ratio in float32, the coordinate in double, stored as
    float32 (done in float64 throughout, weights move by up to ~1e-5 at x ~ 100).
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"resize sizes must be >= 1, got {in_size} -> {out_size}")
    f32 = np.float32
    scale = np.float64(f32(in_size) / f32(out_size))        # a float32 ratio, used in double
    source = (scale * (np.arange(out_size) + 0.5) - 0.5).astype(f32)
    source = np.maximum(source, f32(0.0))
    low = np.minimum(source.astype(np.int64), in_size - 1)       # truncation == floor, x >= 0
    high = np.minimum(low + 1, in_size - 1)
    frac = source - low.astype(f32)
    weights = np.zeros((out_size, in_size), f32)
    np.add.at(weights, (np.arange(out_size), low), f32(1.0) - frac)
    np.add.at(weights, (np.arange(out_size), high), frac)
    return weights


def resize_bilinear_like_torch(images: jax.Array, size: tuple[int, int]) -> jax.Array:
    """[B,H,W,C] -> [B,size[0],size[1],C] as torch F.interpolate(bilinear, align_corners=False).

    Separable: rows then columns, each a small dense matmul (exact float32 weights; HIGHEST
    precision so TPU/GPU do not drop to bf16 passes).
    """
    rows = bilinear_matrix_like_torch(images.shape[1], size[0])
    cols = bilinear_matrix_like_torch(images.shape[2], size[1])
    hi = jax.lax.Precision.HIGHEST
    out = jnp.einsum("oh,bhwc->bowc", rows, images, precision=hi)
    return jnp.einsum("pw,bowc->bopc", cols, out, precision=hi)


# -- modules ------------------------------------------------------------------------------------

class BasicConv(nn.Module):
    """torchvision BasicConv2d in eval mode: conv (no bias) -> BatchNorm(eps 1e-3) -> ReLU."""
    spec: ConvSpec

    @nn.compact
    def __call__(self, x):
        s = self.spec
        x = nn.Conv(s.cout, s.kernel, strides=(s.stride, s.stride),
                    padding=((s.padding[0], s.padding[0]), (s.padding[1], s.padding[1])),
                    use_bias=False, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
        return nn.relu(x)


def _avg_pool_same_unpadded(x):
    """3x3/1 average pool over the unpadded neighbours (TF's SAME average; torch
    count_include_pad=False)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                       count_include_pad=False)


def _max_pool_valid(x):
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class MixedBlock(nn.Module):
    """One Mixed_* block; `kind` is A, B, C, D, E1 or E2 (see the module docstring)."""
    kind: str
    convs: dict

    @nn.compact
    def __call__(self, x):
        c = {name: BasicConv(spec, name=name) for name, spec in self.convs.items()}

        def chain(*names):
            y = x
            for name in names:
                y = c[name](y)
            return y

        if self.kind == "A":
            return jnp.concatenate([
                c["branch1x1"](x), chain("branch5x5_1", "branch5x5_2"),
                chain("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
                c["branch_pool"](_avg_pool_same_unpadded(x))], axis=-1)
        if self.kind == "B":
            return jnp.concatenate([
                c["branch3x3"](x), chain("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
                _max_pool_valid(x)], axis=-1)
        if self.kind == "C":
            return jnp.concatenate([
                c["branch1x1"](x), chain("branch7x7_1", "branch7x7_2", "branch7x7_3"),
                chain(*(f"branch7x7dbl_{i}" for i in range(1, 6))),
                c["branch_pool"](_avg_pool_same_unpadded(x))], axis=-1)
        if self.kind == "D":
            return jnp.concatenate([
                chain("branch3x3_1", "branch3x3_2"),
                chain(*(f"branch7x7x3_{i}" for i in range(1, 5))),
                _max_pool_valid(x)], axis=-1)
        if self.kind in ("E1", "E2"):
            a = c["branch3x3_1"](x)
            d = chain("branch3x3dbl_1", "branch3x3dbl_2")
            if self.kind == "E1":
                pooled = _avg_pool_same_unpadded(x)
            else:   # max pool padded with -inf, as torch's max_pool2d(padding=1)
                pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
            return jnp.concatenate([
                c["branch1x1"](x), c["branch3x3_2a"](a), c["branch3x3_2b"](a),
                c["branch3x3dbl_3a"](d), c["branch3x3dbl_3b"](d),
                c["branch_pool"](pooled)], axis=-1)
        raise ValueError(f"unknown Inception block kind {self.kind!r}")


class FIDInceptionV3(nn.Module):
    """images [B,H,W,3] RGB in [0,1] -> pool_3 features [B,2048] (eval mode, float32).

    resize_input / normalize_input as pytorch-fid's flags (both on for FID).
    """
    resize_input: bool = True
    normalize_input: bool = True

    @nn.compact
    def __call__(self, images):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"Inception input must be [B,H,W,3] RGB, got shape {images.shape}")
        x = jnp.asarray(images, jnp.float32)
        if self.resize_input:
            x = resize_bilinear_like_torch(x, (INPUT_SIZE, INPUT_SIZE))
        if self.normalize_input:
            x = 2.0 * x - 1.0
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"):
            x = BasicConv(STEM[name], name=name)(x)
        x = _max_pool_valid(x)
        for name in ("Conv2d_3b_1x1", "Conv2d_4a_3x3"):
            x = BasicConv(STEM[name], name=name)(x)
        x = _max_pool_valid(x)
        for name, kind, convs in MIXED:
            x = MixedBlock(kind, convs, name=name)(x)
        return jnp.mean(x, axis=(1, 2))


# -- batched feature extraction -----------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def jitted_features(model: FIDInceptionV3):
    """jax.jit(variables, frames [B,H,W,3] uint8 or float in [0,1]) -> [B,2048], one per model."""
    def features(variables, frames):
        if frames.dtype == jnp.uint8:      # torchvision ToTensor: uint8 / 255
            frames = frames.astype(jnp.float32) / 255.0
        return model.apply(variables, frames)
    return jax.jit(features)


def inception_features(frames, variables, *, batch_size: int = 16,
                       model: FIDInceptionV3 | None = None) -> np.ndarray:
    """pool_3 features [N,2048] float32 of frames [N,H,W,3] (uint8 RGB, or float RGB in [0,1]).

    Runs one jitted program of fixed batch min(batch_size, N): the last batch is padded
    (fixed_batches.pad_to_batch) and the padding's rows dropped, so any N >= batch_size
    compiles once per frame size.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [N,H,W,3] RGB, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        frames = frames.astype(np.float32)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batch_size = max(1, min(batch_size, len(frames)))       # a few frames are not padded to 16
    apply = jitted_features(model or FIDInceptionV3())
    out = np.empty((len(frames), FEATURES), np.float32)
    for start in range(0, len(frames), batch_size):
        chunk = frames[start:start + batch_size]
        n = len(chunk)
        out[start:start + n] = np.asarray(apply(variables, pad_to_batch(chunk, batch_size)))[:n]
    return out
