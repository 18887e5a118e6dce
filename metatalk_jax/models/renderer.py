"""The neural face renderer: AudioDVP's pix2pix U-Net generator and PatchGAN discriminator, and an
HD (coarse-to-fine) variant for 512 and 1024 crops. flax.linen, NHWC.

The generator maps a stack of masked 3DMM renders [B,H,W,Cin] (AudioDVP: 7 frames, 21 channels,
values in [-1,1]) to the masked real face [B,H,W,3] in [-1,1] (tanh). The discriminator sees
input and output concatenated on channels ([B,H,W,Cin+3]) and returns its feature maps, the last
being per-patch logits.

Layer list (AudioDVP's vendored pix2pix `networks.py`, unet_256 with `use_refine`): level 0 is the
outermost of `num_downs` levels, level l halves the resolution once more.
  down:  level 0: conv4x4/2 (no bias). level l>0: LeakyReLU(0.2), conv4x4/2 (no bias), BN (no BN
         on the innermost level). The LeakyReLU'd input is also the skip connection: pix2pix's
         in-place LeakyReLU overwrites the tensor it then concatenates, so the skip carries
         LeakyReLU(x), not x.
  up:    ReLU, refine = 2 x [conv3x3 (with bias), BN, (dropout), ReLU] on the up path's input
         channels, transposed conv4x4/2 (bias only on level 0), BN (not on level 0), dropout
         0.5; level 0 ends in tanh, the others return concat([skip, up]).
  Channels (outer -> inner): level 0 Cin -> ngf (returns 3), 1: ngf -> 2ngf, 2: 2ngf -> 4ngf,
  3: 4ngf -> 8ngf, 4.. innermost: 8ngf -> 8ngf.
  Dropout (AudioDVP's variant of pix2pix): the innermost level and every level >= 5, i.e. the 3
  innermost levels of unet_256; those levels' refine blocks drop out too.
PatchGAN (n_layers=3): conv4x4/2 (bias), LReLU; [conv4x4/2, BN, LReLU] x (n_layers-1) with
ndf*min(2^n, 8) channels; conv4x4/1, BN, LReLU; conv4x4/1 (bias) -> 1 channel. 256 -> 30x30 logits.

Parameters are float32; `dtype` is the compute dtype (bfloat16 for GPUs/TPUs). BatchNorm statistics
and the normalisation are computed in float32; generator outputs and logits are float32 (float64
when computing in float64, which the parity tests do).

On CPU, run with XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution: jax
0.10.2's default YNNPACK convolutions compute these weight gradients 5-10x slower
(benchmarks/BENCHMARKS.md, "Neural renderer training").
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from metatalk_jax.errors import InputError
from metatalk_jax.models.renderer_layers import (BatchNorm2d, Conv2d, Dtype, DownConv2d,
                                                 RefineBlock, UpConv2d, at_least_float32)


# ------------------------------------------------------------------------------------------------
# Generator
# ------------------------------------------------------------------------------------------------

def _unet_channels(level: int, ngf: int) -> tuple[int, int]:
    """(outer, inner) channels of a U-Net level (level 0's outer is the output)."""
    inner = ngf * min(2 ** level, 8)
    outer = ngf * min(2 ** (level - 1), 8) if level > 0 else 0
    return outer, inner


def unet_dropout_levels(num_downs: int) -> tuple[int, ...]:
    """Levels with dropout in AudioDVP's UnetGenerator: the innermost and all levels >= 5."""
    return tuple(level for level in range(1, num_downs) if level == num_downs - 1 or level >= 5)


class UnetLevel(nn.Module):
    """One level of the U-Net: `down` on the way in, `up` on the way out (see module docstring)."""
    outer: int
    inner: int
    outermost: bool
    innermost: bool
    use_refine: bool
    use_dropout: bool
    dtype: Dtype

    def setup(self):
        self.down_conv = DownConv2d(self.inner, use_bias=False, dtype=self.dtype)
        if not (self.outermost or self.innermost):
            self.down_norm = BatchNorm2d(dtype=self.dtype)
        if self.use_refine:
            self.refine = RefineBlock(use_dropout=self.use_dropout, dtype=self.dtype)
        self.up_conv = UpConv2d(self.outer, use_bias=self.outermost, dtype=self.dtype)
        if not self.outermost:
            self.up_norm = BatchNorm2d(dtype=self.dtype)
        if self.use_dropout:
            self.dropout = nn.Dropout(0.5)

    def down(self, x, *, train: bool):
        y = self.down_conv(x)
        if not (self.outermost or self.innermost):
            y = self.down_norm(y, train=train)
        return y

    def up(self, x, *, train: bool):
        y = nn.relu(x)
        if self.use_refine:
            y = self.refine(y, train=train)
        y = self.up_conv(y)
        if not self.outermost:
            y = self.up_norm(y, train=train)
        if self.use_dropout:
            y = self.dropout(y, deterministic=not train)
        return y


class UnetGenerator(nn.Module):
    """AudioDVP's unet_256 generator (num_downs=8, ngf=64, refine, dropout).

    __call__(x [B,H,W,Cin], *, train) -> [B,H,W,output_nc] float32 in [-1,1]; H and W must be
    divisible by 2**num_downs. train=True uses batch statistics (and updates 'batch_stats' when
    mutable) and dropout (rng 'dropout'). With final_tanh=False the last up-conv's output is
    returned as is, in the compute dtype (features for HDGenerator).
    """
    output_nc: int = 3
    num_downs: int = 8
    ngf: int = 64
    use_refine: bool = True
    use_dropout: bool = True
    final_tanh: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        if self.num_downs < 5:
            raise InputError(f"UnetGenerator needs num_downs >= 5, got {self.num_downs}")
        _check_divisible(x.shape, 2 ** self.num_downs, "UnetGenerator")
        dropout_levels = unet_dropout_levels(self.num_downs) if self.use_dropout else ()
        levels = []
        for level in range(self.num_downs):
            outer, inner = _unet_channels(level, self.ngf)
            levels.append(UnetLevel(
                outer=self.output_nc if level == 0 else outer, inner=inner,
                outermost=level == 0, innermost=level == self.num_downs - 1,
                use_refine=self.use_refine, use_dropout=level in dropout_levels,
                dtype=self.dtype, name=f"level_{level}"))
        skips = []
        h = levels[0].down(x.astype(self.dtype), train=train)
        for level in levels[1:]:
            skips.append(nn.leaky_relu(h, 0.2))
            h = level.down(skips[-1], train=train)
        for level, skip in zip(levels[:0:-1], skips[::-1]):
            h = jnp.concatenate([skip, level.up(h, train=train)], axis=-1)
        y = levels[0].up(h, train=train)
        return jnp.tanh(y.astype(at_least_float32(self.dtype))) if self.final_tanh else y


class OnReference(nn.Module):
    """A generator that corrects its mouth reference instead of drawing the face anew:
    x [B,H,W,Cin] whose last 3 channels are the reference in [-1,1] (subject/conditioning
    .with_reference) -> clip(reference + generator(x), -1, 1) [B,H,W,3] float32.

    factor > 1: the generator sees x box-averaged by `factor` and its correction is resized
    back (bilinear), so the correction costs a generator at H / factor while the reference keeps
    every pixel of H (a 128-px face for the price of a 64-px generator).

    The reference is a real crop of the subject redrawn in the frame's 3DMM geometry, so its
    fine detail (lip texture, teeth, stubble) is already the footage's; what it lacks is smooth
    (the frame's lighting, an inner mouth the mesh does not carry). With the generator's output
    added to it, that detail reaches the output through an identity path from the first step,
    where a generator that redraws everything regresses it to an average in the few thousand
    steps a laptop gives it (benchmarks/BENCHMARKS.md, "A sharp mouth")."""
    generator: nn.Module
    factor: int = 1

    @property
    def dtype(self):
        return self.generator.dtype

    @nn.compact
    def __call__(self, x, *, train: bool):
        f = int(self.factor)
        b, h, w, c = x.shape
        small = x if f == 1 else x.reshape(b, h // f, f, w // f, f, c).mean(axis=(2, 4))
        correction = self.generator(small, train=train)
        if f > 1:
            correction = jax.image.resize(correction, (b, h, w, correction.shape[-1]),
                                          "bilinear")
        reference = x[..., -3:].astype(correction.dtype)
        return jnp.clip(reference + correction, -1.0, 1.0)


def _check_divisible(shape, factor: int, who: str):
    if len(shape) != 4 or shape[1] % factor or shape[2] % factor:
        raise ValueError(f"{who}: input must be [B,H,W,C] with H and W divisible by {factor}, "
                         f"got {tuple(shape)}")


class ResidualBlock(nn.Module):
    """x + BN(conv3x3(ReLU(BN(conv3x3(x))))), channels unchanged (pix2pixHD's ResnetBlock with
    zero padding)."""
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        c = x.shape[-1]
        y = Conv2d(c, 3, 1, use_bias=False, dtype=self.dtype, name="conv_0")(x)
        y = nn.relu(BatchNorm2d(dtype=self.dtype, name="norm_0")(y, train=train))
        y = Conv2d(c, 3, 1, use_bias=False, dtype=self.dtype, name="conv_1")(y)
        return x + BatchNorm2d(dtype=self.dtype, name="norm_1")(y, train=train)


class HDGenerator(nn.Module):
    """Coarse-to-fine generator for 512 / 1024 crops (pix2pixHD's global generator + local
    enhancer, with AudioDVP's U-Net as the global generator).

    x [B,H,W,Cin] -> [B,H,W,output_nc] float32 in [-1,1]. With f = global_factor (2 or 4):
      global: box-downsample x by f, U-Net (num_downs, ngf, refine, dropout) at H/f whose last
              up-conv emits local_ngf*f feature channels (no tanh);
      local:  conv3x3 Cin -> local_ngf at full resolution, BN, ReLU, then log2(f) x [conv4x4/2,
              BN, ReLU] doubling channels -> [B,H/f,W/f,local_ngf*f]; added to the global features;
              local_blocks residual blocks; log2(f) x [transposed conv4x4/2, BN, ReLU] halving
              channels; conv3x3 -> output_nc (bias), tanh.
    Defaults keep full-resolution layers at 32 channels and the fused trunk at 64 (f=2) or 128
    (f=4) so a 1024 step fits on one accelerator; the U-Net at 256 is AudioDVP's unet_256.
    H and W must be divisible by f * 2**num_downs.
    """
    output_nc: int = 3
    global_factor: int = 2
    num_downs: int = 8
    ngf: int = 64
    local_ngf: int = 32
    local_blocks: int = 3
    use_refine: bool = True
    use_dropout: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        f = self.global_factor
        if f not in (2, 4, 8):
            raise InputError(f"HDGenerator: global_factor must be 2, 4 or 8, got {f}")
        _check_divisible(x.shape, f * 2 ** self.num_downs, "HDGenerator")
        b, h, w, c = x.shape
        x = x.astype(self.dtype)
        coarse = x.reshape(b, h // f, f, w // f, f, c).mean(axis=(2, 4))
        trunk_nc = self.local_ngf * f
        global_features = UnetGenerator(
            output_nc=trunk_nc, num_downs=self.num_downs, ngf=self.ngf, use_refine=self.use_refine,
            use_dropout=self.use_dropout, final_tanh=False, dtype=self.dtype,
            name="global_unet")(coarse, train=train)

        y = Conv2d(self.local_ngf, 3, 1, use_bias=False, dtype=self.dtype, name="front_conv")(x)
        y = nn.relu(BatchNorm2d(dtype=self.dtype, name="front_norm")(y, train=train))
        n_scales = f.bit_length() - 1
        for i in range(n_scales):
            y = DownConv2d(self.local_ngf * 2 ** (i + 1), dtype=self.dtype,
                           name=f"down_conv_{i}")(y)
            y = nn.relu(BatchNorm2d(dtype=self.dtype, name=f"down_norm_{i}")(y, train=train))
        y = y + global_features
        for i in range(self.local_blocks):
            y = ResidualBlock(dtype=self.dtype, name=f"block_{i}")(y, train=train)
        for i in range(n_scales):
            y = UpConv2d(trunk_nc // 2 ** (i + 1), dtype=self.dtype, name=f"up_conv_{i}")(y)
            y = nn.relu(BatchNorm2d(dtype=self.dtype, name=f"up_norm_{i}")(y, train=train))
        y = Conv2d(self.output_nc, 3, 1, use_bias=True, dtype=self.dtype, name="out_conv")(y)
        return jnp.tanh(y.astype(at_least_float32(self.dtype)))


# ------------------------------------------------------------------------------------------------
# Discriminators
# ------------------------------------------------------------------------------------------------

class PatchDiscriminator(nn.Module):
    """pix2pix NLayerDiscriminator (PatchGAN). x [B,H,W,C] -> list of n_layers+2 maps: the
    n_layers+1 LeakyReLU activations (compute dtype; for feature matching) and the logits
    [B,h,w,1] float32 (256 -> 30x30 for n_layers=3; H, W >= 2**n_layers * 4)."""
    ndf: int = 64
    n_layers: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        features = []
        y = DownConv2d(self.ndf, use_bias=True, dtype=self.dtype,
                       name="conv_0")(x.astype(self.dtype))
        features.append(nn.leaky_relu(y, 0.2))
        for n in range(1, self.n_layers + 1):
            nc = self.ndf * min(2 ** n, 8)
            if n < self.n_layers:
                y = DownConv2d(nc, use_bias=False, dtype=self.dtype, name=f"conv_{n}")(features[-1])
            else:
                y = Conv2d(nc, 4, 1, use_bias=False, dtype=self.dtype,
                           name=f"conv_{n}")(features[-1])
            y = BatchNorm2d(dtype=self.dtype, name=f"norm_{n}")(y, train=train)
            features.append(nn.leaky_relu(y, 0.2))
        logits = Conv2d(1, 4, 1, use_bias=True, dtype=self.dtype,
                        name=f"conv_{self.n_layers + 1}")(features[-1])
        features.append(logits.astype(at_least_float32(self.dtype)))
        return features


def _avg_pool_3x3_s2(x):
    """torch AvgPool2d(3, stride=2, padding=1, count_include_pad=False) on NHWC."""
    window, strides, pad = (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
    # a concrete (NumPy) zero lets JAX recognise the differentiable windowed sum
    total = jax.lax.reduce_window(x, np.zeros((), x.dtype), jax.lax.add, window, strides, pad)

    def taps_inside(size):        # per output position: window taps inside [0, size), 2 or 3
        starts = np.arange(0, size, 2) - 1
        return np.minimum(starts + 3, size) - np.maximum(starts, 0)

    # computed here rather than by pooling ones, which XLA would constant-fold for seconds at 1024
    count = np.outer(taps_inside(x.shape[1]), taps_inside(x.shape[2]))[None, :, :, None]
    return total / jnp.asarray(count, x.dtype)


class MultiScaleDiscriminator(nn.Module):
    """pix2pixHD's multi-scale D: PatchDiscriminators on x, avgpool(x), avgpool^2(x), ...
    Returns one feature list (see PatchDiscriminator) per scale, finest first."""
    num_scales: int = 3
    ndf: int = 64
    n_layers: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool) -> list[list[jax.Array]]:
        outputs = []
        for s in range(self.num_scales):
            if s:
                x = _avg_pool_3x3_s2(x)
            outputs.append(PatchDiscriminator(self.ndf, self.n_layers, self.dtype,
                                              name=f"scale_{s}")(x, train=train))
        return outputs


# ------------------------------------------------------------------------------------------------
# Factory
# ------------------------------------------------------------------------------------------------

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}


def compute_dtype(name: str):
    """'float32' | 'bfloat16' | 'float64' -> the jnp dtype (ValueError otherwise).

    float64 is for exactness checks (the sharded-vs-single-device engine tests): it needs
    JAX_ENABLE_X64=1, and then the parameters and optimiser state are float64 too
    (train/gan_step.create_gan_state)."""
    if name not in _DTYPES:
        raise InputError(f"unknown compute dtype {name!r}; expected one of {sorted(_DTYPES)}")
    if name == "float64" and not jax.config.jax_enable_x64:
        raise InputError("compute dtype 'float64' needs 64-bit JAX: set JAX_ENABLE_X64=1")
    return _DTYPES[name]


def make_renderer(config, *, reference: bool = False) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) from a model ConfigDict; reference: the input ends with a
    mouth reference (data.mouth_reference), which the generator corrects (OnReference, at
    resolution / config.correction_factor).

    Fields: arch ("unet" | "hd"), num_downs, ngf, ndf, n_layers_d, num_d_scales (1: one
    PatchDiscriminator, as AudioDVP; >1: MultiScaleDiscriminator), use_refine, use_dropout,
    dtype ("float32" | "bfloat16" | "float64"); for arch "hd" also hd_global_factor (the U-Net runs
    at resolution / factor), hd_local_ngf (channels at full resolution), hd_local_blocks (residual
    blocks in the fused trunk). The input channel count is taken from the data (21 for a 7-frame
    window), so it is not a field.
    """
    dtype = compute_dtype(config.dtype)
    if config.arch == "unet":
        generator = UnetGenerator(output_nc=3, num_downs=config.num_downs, ngf=config.ngf,
                                  use_refine=config.use_refine, use_dropout=config.use_dropout,
                                  dtype=dtype)
    elif config.arch == "hd":
        generator = HDGenerator(output_nc=3, global_factor=config.hd_global_factor,
                                num_downs=config.num_downs, ngf=config.ngf,
                                local_ngf=config.hd_local_ngf, local_blocks=config.hd_local_blocks,
                                use_refine=config.use_refine, use_dropout=config.use_dropout,
                                dtype=dtype)
    else:
        raise InputError(f"unknown renderer arch {config.arch!r}; expected 'unet' or 'hd'")
    if reference:
        generator = OnReference(generator, int(config.get("correction_factor", 1)))
    if config.num_d_scales == 1:
        discriminator = PatchDiscriminator(ndf=config.ndf, n_layers=config.n_layers_d, dtype=dtype)
    else:
        discriminator = MultiScaleDiscriminator(num_scales=config.num_d_scales, ndf=config.ndf,
                                                n_layers=config.n_layers_d, dtype=dtype)
    return generator, discriminator

