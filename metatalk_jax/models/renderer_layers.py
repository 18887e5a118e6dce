"""The renderer's building blocks (models/renderer.py composes them): torch-equal BatchNorm,
the convolutions, the 4x4 stride-2 down and transposed convolutions, and AudioDVP's refine block.
flax.linen, NHWC; parameters float32 (pix2pix's N(0, 0.02) initialisation), computed in `dtype`.

Each convolution has two forms that compute the same sums:
  "cpu"  laid out for XLA:CPU: im2col + one matmul for small images, space-to-depth for the
         stride-2 conv, a hand-written backward for the transposed conv (measured 1.2-70x faster
         on CPU, benchmarks/BENCHMARKS.md);
  "lax"  plain `lax.conv_general_dilated` / `lax.conv_transpose` with autodiff gradients, which
         the TPU and GPU compilers tile themselves (the CPU tricks were never measured there and
         a reshape-heavy layout costs HBM traffic on them).
The form is chosen when a step is traced, by `compile_target.target_platform()`: the training
engine wraps every trace in `compiling_for(platform)` with its mesh's platform, so a TPU compile
on a CPU host gets "lax".
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from metatalk_jax.compile_target import target_platform

Dtype = Any

# pix2pix's `init_weights(init_type='normal', init_gain=0.02)`.
INIT_GAIN = 0.02


def at_least_float32(dtype):
    """The dtype for statistics and outputs: float32 for bfloat16/float32 compute, float64 for
    float64 (used by the float64 parity tests)."""
    return jnp.promote_types(dtype, jnp.float32)


def normal_init(key, shape, dtype=jnp.float32):
    return INIT_GAIN * jax.random.normal(key, shape, dtype)


def bn_scale_init(key, shape, dtype=jnp.float32):
    return 1.0 + INIT_GAIN * jax.random.normal(key, shape, dtype)


# Up to this many output pixels per image, stride-1 convolutions run as im2col + one matmul.
# XLA:CPU lays such small-image convolutions out with the batch as the minor dimension and runs
# them 10-70x slower than the matmul (the U-Net's 1024-channel refine convs at 2x2: 2 s vs 0.03 s
# at batch 16); from 8x8 up its own convolution is as fast or faster.
IM2COL_MAX_PIXELS = 32

def conv_form() -> str:
    """"cpu" when the program being traced is for XLA:CPU, else "lax" (module docstring)."""
    return "cpu" if target_platform() == "cpu" else "lax"


def _lax_conv(x, kernel, stride: int, padding: int):
    """Plain NHWC x HWIO convolution with `stride` and zero padding `padding` on every side."""
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv2d_stride1(x, kernel, padding: int):
    """Stride-1 convolution, NHWC x HWIO, zero padding `padding` px on every side:
    x [B,H,W,Cin], kernel [kh,kw,Cin,Cout] -> [B,H+2p-kh+1,W+2p-kw+1,Cout]."""
    b, h, w, c = x.shape
    kh, kw, _, cout = kernel.shape
    ho, wo = h + 2 * padding - kh + 1, w + 2 * padding - kw + 1
    if ho * wo > IM2COL_MAX_PIXELS or conv_form() == "lax":
        return jax.lax.conv_general_dilated(
            x, kernel, window_strides=(1, 1), padding=((padding, padding), (padding, padding)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    columns = jnp.concatenate([xp[:, i:i + ho, j:j + wo] for i in range(kh) for j in range(kw)],
                              axis=-1)
    y = jnp.dot(columns.reshape(b * ho * wo, kh * kw * c), kernel.reshape(kh * kw * c, cout))
    return y.reshape(b, ho, wo, cout)


# ------------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------------

class BatchNorm2d(nn.Module):
    """torch.nn.BatchNorm2d semantics on NHWC: train mode normalises with the batch mean and
    *biased* variance and updates running stats with the *unbiased* variance (flax's BatchNorm
    uses the biased one for both), ra = momentum * ra + (1 - momentum) * batch (torch momentum
    0.1 == 0.9 here). Eval mode uses the running stats.

    Statistics are over axes (B, H, W); under jax.jit with the batch sharded over devices the
    reductions are global (SyncBatchNorm), which a single-device torch run equals.
    """
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        channels = x.shape[-1]
        scale = self.param("scale", bn_scale_init, (channels,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32)
        x32 = x.astype(at_least_float32(self.dtype))
        if train:
            mean = jnp.mean(x32, axis=(0, 1, 2))
            var = jnp.mean(jnp.square(x32 - mean), axis=(0, 1, 2))
            if not self.is_initializing():
                count = x.size // channels
                unbiased = var * (count / max(count - 1, 1))
                m = self.momentum
                running_mean.value = m * running_mean.value + (1.0 - m) * mean
                running_var.value = m * running_var.value + (1.0 - m) * unbiased
        else:
            mean, var = running_mean.value, running_var.value
        multiplier = scale * jax.lax.rsqrt(var + self.epsilon)
        return (x32 * multiplier + (bias - mean * multiplier)).astype(self.dtype)


class Conv2d(nn.Module):
    """Stride-1 square convolution, zero padding `padding`; kernel [k,k,Cin,Cout] (HWIO)."""
    features: int
    kernel_size: int = 3
    padding: int = 1
    use_bias: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        kernel = self.param("kernel", normal_init, (k, k, x.shape[-1], self.features), jnp.float32)
        y = conv2d_stride1(x.astype(self.dtype), kernel.astype(self.dtype), self.padding)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
            y = y + bias.astype(self.dtype)
        return y


def _down_conv_4x4(x, kernel):
    """Conv 4x4, stride 2, padding 1: x [B,H,W,Cin] (H, W even), kernel [4,4,Cin,Cout] (HWIO)
    -> [B,H/2,W/2,Cout]. Computed as space-to-depth + a stride-1 2x2 conv over 4*Cin channels: the
    same sums, but the convolution and both of its gradients are stride 1, which XLA:CPU runs
    faster than strided ones (about 1.2-1.4x for fwd+bwd at the U-Net's sizes). On TPU/GPU
    (`conv_form() == "lax"`) the plain strided convolution."""
    if conv_form() == "lax":
        return _lax_conv(x, kernel, 2, 1)
    b, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    # s2d[n, j, k, (qr, qc, c)] = xp[n, 2j+qr, 2k+qc, c]
    s2d = xp.reshape(b, h // 2 + 1, 2, w // 2 + 1, 2, c).transpose(0, 1, 3, 2, 4, 5)
    s2d = s2d.reshape(b, h // 2 + 1, w // 2 + 1, 4 * c)
    # tap a = 2p + q of the 4x4 kernel is tap p of the 2x2 kernel on phase q
    k2 = kernel.reshape(2, 2, 2, 2, c, -1).transpose(0, 2, 1, 3, 4, 5).reshape(2, 2, 4 * c, -1)
    return conv2d_stride1(s2d, k2, 0)


def _up_conv_4x4(x, kernel):
    """Transposed conv 4x4, stride 2, padding 1 (`_up_conv_4x4_cpu`'s layout and semantics): on
    CPU the hand-differentiated form, on TPU/GPU `lax.conv_transpose` with autodiff gradients."""
    if conv_form() == "lax":
        return _up_conv_4x4_lax(x, kernel)
    return _up_conv_4x4_cpu(x, kernel)


def _up_conv_4x4_lax(x, kernel):
    """The transposed conv as XLA's own op: scatter kernel[a, b] at 2y - 1 + a is a correlation
    of the 2-dilated input, padded by 2, with the spatially flipped kernel."""
    return jax.lax.conv_transpose(x, kernel[::-1, ::-1], strides=(2, 2), padding=((2, 2), (2, 2)),
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


@jax.custom_vjp
def _up_conv_4x4_cpu(x, kernel):
    """Transposed conv 4x4, stride 2, padding 1 (torch ConvTranspose2d(k=4, s=2, p=1)):
    x [B,H,W,Cin], kernel [4,4,Cin,Cout] with kernel[a, b, i, o] = torch_weight[i, o, a, b], i.e.
    input pixel (y, x) adds kernel[a, b] to output pixel (2y - 1 + a, 2x - 1 + b) -> [B,2H,2W,Cout].

    Forward: XLA's transposed convolution (dilated input, flipped kernel), or for small inputs the
    4 output phases as one stride-1 conv. Backward (`_up_conv_4x4_bwd`): both gradients
    are those of the stride-2 conv (`_down_conv_4x4`), its adjoint: dx = down(dy, kernel^T),
    dkernel = d<x, down(dy, k)>/dk. XLA's own gradients of a transposed conv (a conv with a
    dilated window) are ~20x slower on CPU.
    """
    b, h, w, c = x.shape
    if h * w > IM2COL_MAX_PIXELS // 2:
        return _up_conv_4x4_lax(x, kernel)
    # Small inputs (slow in XLA:CPU's transposed conv too): one stride-1 2x2 conv over the
    # 1-padded input gives all 4 output phases; output row 2m + r takes taps a = 3 - r - 2d from
    # padded rows m + r + d, d in {0, 1}.
    o = kernel.shape[-1]
    flipped = kernel[::-1, ::-1].reshape(2, 2, 2, 2, c, o)               # (d_r, r, d_c, s, c, o)
    k2 = flipped.transpose(0, 2, 4, 1, 3, 5).reshape(2, 2, c, 4 * o)     # phases (r, s) major
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    phases = conv2d_stride1(xp, k2, 0).reshape(b, h + 1, w + 1, 2, 2, o)
    rows = [jnp.stack([phases[:, r:r + h, s:s + w, r, s] for s in (0, 1)], axis=3) for r in (0, 1)]
    return jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, o)         # [B, H, 2(r), W, 2(s), o]


def _up_conv_4x4_fwd(x, kernel):
    return _up_conv_4x4_cpu(x, kernel), (x, kernel)


def _space_to_depth_padded(dy):
    """dy [B,2H,2W,C] -> S [B,H+1,W+1,4C],
    S[n, j, k, (qr, qc, c)] = pad(dy, 1)[n, 2j+qr, 2k+qc, c]."""
    b, h2, w2, c = dy.shape
    dyp = jnp.pad(dy, ((0, 0), (1, 1), (1, 1), (0, 0)))
    s2d = dyp.reshape(b, h2 // 2 + 1, 2, w2 // 2 + 1, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return s2d.reshape(b, h2 // 2 + 1, w2 // 2 + 1, 4 * c)


def _up_conv_4x4_bwd(residuals, dy):
    """Both gradients from S = space-to-depth(pad(dy, 1)) [B,H+1,W+1,4*Cout]:
    dkernel[2pr+qr, 2pc+qc, i, o] = sum_{n,y,x} x[n,y,x,i] S[n, y+pr, x+pc, (qr,qc,o)] and
    dx = the stride-2 conv of dy with the kernel's (i, o) swapped.

    dkernel is produced with Cin major ([Cin, ..., Cout]), so turning it into [4,4,Cin,Cout] moves
    whole Cout rows; XLA's own weight gradient comes out [(q,o), p, Cin] and its (o, i) transpose
    was fused into each of Adam's elementwise passes (strided reads, ~3x slower than the update).
    """
    x, kernel = residuals
    b, h, w, cin = x.shape
    cout = kernel.shape[-1]
    s2d = _space_to_depth_padded(dy)
    if h * w > IM2COL_MAX_PIXELS:
        # correlation of pad(x, 1) (batch = Cin, features = images) with S (window = all of S):
        # out[i, s_r, s_c, (q, o)] = dkernel at tap p = 1 - s.
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        out = jax.lax.conv_general_dilated(xp, s2d, (1, 1), "VALID",
                                           dimension_numbers=("CHWN", "IHWO", "NHWC"))
        taps = out[:, ::-1, ::-1].reshape(cin, 2, 2, 2, 2, cout)       # (i, pr, pc, qr, qc, o)
        dx = _down_conv_4x4(dy, kernel.transpose(0, 1, 3, 2))
    else:
        # im2col over the 2x2 window of S: columns[(n,y,x), (pr, pc, qr, qc, o)]
        columns = jnp.concatenate([s2d[:, i:i + h, j:j + w] for i in (0, 1) for j in (0, 1)],
                                  axis=-1)
        columns = columns.reshape(b * h * w, 16 * cout)
        taps = jax.lax.dot_general(x.reshape(b * h * w, cin), columns, (((0,), (0,)), ((), ())))
        taps = taps.reshape(cin, 2, 2, 2, 2, cout)
        # kernel as [Cin, (pr, pc, qr, qc, o)]: whole Cout rows move, and the dot contracts it
        # on its minor axis, which needs no transposed copy
        kernel_rows = kernel.reshape(2, 2, 2, 2, cin, cout).transpose(4, 0, 2, 1, 3, 5)
        dx = jax.lax.dot_general(columns, kernel_rows.reshape(cin, 16 * cout),
                                 (((1,), (1,)), ((), ())))
        dx = dx.reshape(b, h, w, cin)
    dkernel = taps.transpose(1, 3, 2, 4, 0, 5).reshape(4, 4, cin, cout)
    return dx, dkernel


_up_conv_4x4_cpu.defvjp(_up_conv_4x4_fwd, _up_conv_4x4_bwd)


class _Conv4x4Stride2(nn.Module):
    """A 4x4 stride-2 padding-1 convolution `op` (down or transposed) with a [4,4,Cin,Cout]
    kernel and an optional bias; parameters float32, computed in `dtype`."""
    features: int
    use_bias: bool = False
    dtype: Dtype = jnp.float32

    op = None   # set by the subclasses: (x, kernel) -> y

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", normal_init, (4, 4, x.shape[-1], self.features), jnp.float32)
        y = type(self).op(x.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
            y = y + bias.astype(self.dtype)
        return y


class DownConv2d(_Conv4x4Stride2):
    """Conv 4x4, stride 2, padding 1 (H -> H/2); kernel [4,4,Cin,Cout] (HWIO, torch's OIHW
    transposed)."""
    op = staticmethod(_down_conv_4x4)


class UpConv2d(_Conv4x4Stride2):
    """Transposed conv 4x4, stride 2, padding 1 (H -> 2H); kernel [4,4,Cin,Cout] in the scatter
    layout of `_up_conv_4x4` (torch's [Cin,Cout,kh,kw] transposed to [kh,kw,Cin,Cout], no flip)."""
    op = staticmethod(_up_conv_4x4)


class RefineBlock(nn.Module):
    """AudioDVP's RefineModule: 2 x [conv3x3 (bias), BN, dropout 0.5 if enabled, ReLU], same
    channel count in and out."""
    use_dropout: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        channels = x.shape[-1]
        for i in range(2):
            x = Conv2d(channels, 3, 1, use_bias=True, dtype=self.dtype, name=f"conv_{i}")(x)
            x = BatchNorm2d(dtype=self.dtype, name=f"norm_{i}")(x, train=train)
            if self.use_dropout:
                x = nn.Dropout(0.5, deterministic=not train)(x)
            x = nn.relu(x)
        return x
