"""Wav2Lip's generator (Prajwal et al. 2020, 96x96 faces) in flax.linen, NHWC, inference-first.

Inputs and output (the reference's inference.py, channels moved last):
  audio [B,80,16,1]  one mel chunk per frame (80 mel bins x 16 mel frames = 0.2 s), Wav2Lip's
                     normalised log-mel in [-4,4] (torch's [B,1,80,16] transposed to NHWC)
  face  [B,96,96,6]  channels 0-2: the frame with its lower half (rows 48..95) zeroed, channels
                     3-5: the reference frame; both BGR in [0,1] (see `wav2lip_inputs`)
  ->    [B,96,96,3]  the generated face, BGR in [0,1] (sigmoid)

Channel order: the published weights were trained on frames read with OpenCV, so every image
channel triple, in and out, is B,G,R. `wav2lip_inputs` takes RGB frames and flips them to BGR;
`wav2lip_output_frames` flips the prediction back to RGB.

Layers (Rudrabha/Wav2Lip models/wav2lip.py + models/conv.py; "Conv" = conv with bias -> BatchNorm
(eps 1e-5) -> [+ input when residual] -> ReLU; "ConvT" = ConvTranspose2d with bias -> BN -> ReLU):
  face encoder (7 blocks; each block's output is kept as a skip):
    0: Conv 6->16 k7 p3                                  96
    1: Conv 16->32 k3 s2 p1, 2 x residual Conv 32        48
    2: Conv 32->64 s2, 3 x residual Conv 64              24
    3: Conv 64->128 s2, 2 x residual                     12
    4: Conv 128->256 s2, 2 x residual                     6
    5: Conv 256->512 s2, 1 x residual                     3
    6: Conv 512->512 k3 p0, Conv 512->512 k1              1
  audio encoder on [80,16]: Conv 1->32, 2 res; Conv 32->64 s(3,1), 2 res (27x16); Conv 64->128 s3,
    2 res (9x6); Conv 128->256 s(3,2), 1 res (3x3); Conv 256->512 k3 p0; Conv 512->512 k1 -> 1x1.
  decoder (block i's output is concatenated with the encoder skip 6-i, decoder first):
    0: Conv 512->512 k1 on the audio embedding                               1  (+512)
    1: ConvT 1024->512 k3 s1 p0, res Conv 512                                3  (+512)
    2: ConvT 1024->512 k3 s2 p1 op1, 2 res                                    6  (+256)
    3: ConvT 768->384 s2 p1 op1, 2 res                                        12 (+128)
    4: ConvT 512->256, 2 res                                                  24 (+64)
    5: ConvT 320->128, 2 res                                                  48 (+32)
    6: ConvT 160->64, 2 res                                                   96 (+16)
  output: Conv 80->32 k3 p1, then a plain conv 32->3 k1 (bias, no BN) and a sigmoid.
All convs but the last have BatchNorm; 36,298,035 parameters in the reference's state_dict
(+ BN running statistics), which `count_parameters` reproduces.

Variables: "params"/<layer>/conv/{kernel [kh,kw,Cin,Cout], bias}, <layer>/bn/{scale, bias} and
"batch_stats"/<layer>/bn/{mean, var}, <layer> being the reference's module path with "_" for "."
(e.g. face_encoder_blocks_1_0). Conv kernels are torch's weight [O,I,kh,kw] transposed to
[kh,kw,I,O]. Transposed-conv kernels use flax.linen.ConvTranspose's default layout:
kernel[h,w,i,o] = torch weight[i,o,k-1-h,k-1-w] (channels as stored, spatially flipped), so the
layer is a plain correlation over the stride-dilated input (`conv_transpose_torch`).

Inference speed: `fold_batch_norm` turns eval-mode variables into a BN-free tree (each conv's
kernel and bias absorb the running statistics) for `Wav2Lip(folded_batch_norm=True)`; the result
equals the unfolded eval model up to float rounding. On a shared 2-core CPU (XLA:CPU, batch 128)
the JAX model took 0.50-0.68x PyTorch's wall time (~0.65x its CPU time) with or without folding
(benchmarks/wav2lip.py); the project's XLA:CPU conv flag (metatalk_jax/runtime.py) cost less
CPU time than the YNNPACK default (13 s vs 16 s per batch).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

IMAGE_SIZE = 96
MEL_BINS = 80
MEL_STEPS = 16
BN_EPSILON = 1e-5               # torch.nn.BatchNorm2d's default
REFERENCE_PARAMETER_COUNT = 36_298_035


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One reference layer: nn.Conv2d / nn.ConvTranspose2d arguments plus the block's extras."""
    cin: int
    cout: int
    kernel: int
    stride: tuple[int, int] = (1, 1)
    padding: int = 1
    residual: bool = False
    transpose: bool = False
    output_padding: int = 0
    batch_norm: bool = True     # False only for the final 1x1 conv (plain nn.Conv2d)


def _c(cin, cout, k=3, s=1, p=1, res=False) -> ConvSpec:
    return ConvSpec(cin, cout, k, (s, s) if isinstance(s, int) else tuple(s), p, res)


def _res(c) -> ConvSpec:
    return _c(c, c, res=True)


def _up(cin, cout, s=2, p=1, op=1) -> ConvSpec:
    return ConvSpec(cin, cout, 3, (s, s), p, transpose=True, output_padding=op)


FACE_ENCODER_BLOCKS: tuple[tuple[ConvSpec, ...], ...] = (
    (_c(6, 16, 7, 1, 3),),
    (_c(16, 32, s=2), _res(32), _res(32)),
    (_c(32, 64, s=2), _res(64), _res(64), _res(64)),
    (_c(64, 128, s=2), _res(128), _res(128)),
    (_c(128, 256, s=2), _res(256), _res(256)),
    (_c(256, 512, s=2), _res(512)),
    (_c(512, 512, p=0), _c(512, 512, 1, p=0)),
)
AUDIO_ENCODER: tuple[ConvSpec, ...] = (
    _c(1, 32), _res(32), _res(32),
    _c(32, 64, s=(3, 1)), _res(64), _res(64),
    _c(64, 128, s=3), _res(128), _res(128),
    _c(128, 256, s=(3, 2)), _res(256),
    _c(256, 512, p=0), _c(512, 512, 1, p=0),
)
FACE_DECODER_BLOCKS: tuple[tuple[ConvSpec, ...], ...] = (
    (_c(512, 512, 1, p=0),),
    (_up(1024, 512, s=1, p=0, op=0), _res(512)),
    (_up(1024, 512), _res(512), _res(512)),
    (_up(768, 384), _res(384), _res(384)),
    (_up(512, 256), _res(256), _res(256)),
    (_up(320, 128), _res(128), _res(128)),
    (_up(160, 64), _res(64), _res(64)),
)
OUTPUT_BLOCK: tuple[ConvSpec, ...] = (
    _c(80, 32),
    ConvSpec(32, 3, 1, padding=0, batch_norm=False),
)


def reference_layers() -> Iterator[tuple[str, ConvSpec]]:
    """(torch module path, spec) of every conv layer in the reference's order, e.g.
    ("face_encoder_blocks.1.0", ...); for BN layers the torch keys are
    <path>.conv_block.{0,1}.*, for the final plain conv <path>.{weight,bias}."""
    for b, block in enumerate(FACE_ENCODER_BLOCKS):
        for i, spec in enumerate(block):
            yield f"face_encoder_blocks.{b}.{i}", spec
    for i, spec in enumerate(AUDIO_ENCODER):
        yield f"audio_encoder.{i}", spec
    for b, block in enumerate(FACE_DECODER_BLOCKS):
        for i, spec in enumerate(block):
            yield f"face_decoder_blocks.{b}.{i}", spec
    for i, spec in enumerate(OUTPUT_BLOCK):
        yield f"output_block.{i}", spec


def flax_name(torch_path: str) -> str:
    """The Flax module name of a reference layer: its module path with '_' for '.'."""
    return torch_path.replace(".", "_")


def count_parameters(include_batch_norm_stats: bool = False) -> int:
    """Learnable parameters of the reference (conv weights + biases + BN affine), from the specs;
    with `include_batch_norm_stats`, also the BN running mean/var entries of the state_dict."""
    total = 0
    for _, s in reference_layers():
        total += s.kernel * s.kernel * s.cin * s.cout + s.cout
        if s.batch_norm:
            total += 2 * s.cout * (2 if include_batch_norm_stats else 1)
    return total


# ------------------------------------------------------------------------------------------------
# Convolutions
# ------------------------------------------------------------------------------------------------

_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_torch(x, kernel, stride: tuple[int, int], padding: int):
    """nn.Conv2d (no bias): x [B,H,W,Cin], kernel [kh,kw,Cin,Cout], zero padding `padding` px on
    every side -> [B,(H+2p-kh)//sh+1,(W+2p-kw)//sw+1,Cout]."""
    return jax.lax.conv_general_dilated(x, kernel, window_strides=stride,
                                        padding=((padding, padding), (padding, padding)),
                                        dimension_numbers=_NHWC)


def conv_transpose_torch(x, kernel, stride: int, padding: int, output_padding: int,
                         by_phases: bool = False):
    """nn.ConvTranspose2d (no bias) with torch's padding semantics: x [B,H,W,Cin], kernel
    [k,k,Cin,Cout] = torch weight [Cin,Cout,k,k] transposed (2,3,0,1) and flipped in both
    spatial axes. Output side (H-1)*s - 2p + k + output_padding.

    A transposed conv is the correlation of the stride-dilated input with the spatially flipped
    kernel; torch's `padding` p removes p rows/cols from each border of the full result, which
    is a padding of k-1-p before and k-1-p+output_padding after the dilated input.
    With `by_phases`, each of the s x s output phases is instead computed as its own small
    correlation of the undilated input and the phases are interleaved (9 instead of 36 taps per
    4 outputs at k=3, s=2, if the backend multiplied the inserted zeros). Off by default: XLA's
    cost analysis counts no work on the zeros and on XLA:CPU (2 cores) batch-128 inference was
    no faster by phases (benchmarks/wav2lip.py --phase-transpose).
    """
    k = kernel.shape[0]
    lo = k - 1 - padding
    hi = lo + output_padding
    out_size = (x.shape[1] - 1) * stride - 2 * padding + k + output_padding
    square = x.shape[1] == x.shape[2]
    if stride == 1 or not by_phases or not square or out_size % stride or k < stride:
        return jax.lax.conv_general_dilated(x, kernel, window_strides=(1, 1),
                                            padding=((lo, hi), (lo, hi)),
                                            lhs_dilation=(stride, stride), dimension_numbers=_NHWC)
    n = x.shape[1]
    phase_out = out_size // stride
    # Output o = s*m + a reads dilated-padded position o + t, which holds x[(o + t - lo) / s]
    # when divisible: taps t = t0, t0+s, ... with input offsets m + d, d = (a + t - lo) // s.
    taps = []
    for a in range(stride):
        t0 = (lo - a) % stride
        d0 = (a + t0 - lo) // stride
        count = len(range(t0, k, stride))
        # pad so that index m + d0 + j is valid for m < phase_out, j < count (negative = crop)
        taps.append((slice(t0, k, stride), -d0, phase_out - 1 + d0 + count - 1 - (n - 1)))
    rows = []
    for taps_h, pad_h_lo, pad_h_hi in taps:
        row = []
        for taps_w, pad_w_lo, pad_w_hi in taps:
            xp = jax.lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (pad_h_lo, pad_h_hi, 0),
                                                        (pad_w_lo, pad_w_hi, 0), (0, 0, 0)))
            row.append(jax.lax.conv_general_dilated(xp, kernel[taps_h, taps_w], (1, 1), "VALID",
                                                    dimension_numbers=_NHWC))
        rows.append(jnp.stack(row, axis=3))            # [B,n',n',s,C]: phase b of the width
    y = jnp.stack(rows, axis=2)                         # [B,n',s,n',s,C]
    return y.reshape(x.shape[0], out_size, out_size, kernel.shape[-1])


def _torch_default_kernel_init():
    # torch's default conv init (kaiming_uniform, a=sqrt(5)) is U(+-1/sqrt(fan_in)).
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_default_bias_init(fan_in: int):
    bound = 1.0 / np.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


class ConvBlock(nn.Module):
    """One reference layer: conv (+bias) -> [BN] -> [+x if residual] -> [ReLU]. NHWC.

    The final plain conv (spec.batch_norm False) has neither BN nor ReLU. With
    `folded_batch_norm` the BN is absent and its statistics live in the conv's kernel/bias.
    """
    spec: ConvSpec
    folded_batch_norm: bool = False
    transpose_by_phases: bool = False

    @nn.compact
    def __call__(self, x, *, use_running_average: bool = True):
        s = self.spec
        if x.shape[-1] != s.cin:
            raise ValueError(f"wav2lip: layer {self.name} expects {s.cin} channels, got {x.shape}")
        y = _Conv(s, self.transpose_by_phases, name="conv")(x)
        if s.batch_norm and not self.folded_batch_norm:
            # two-pass variance as torch: E[x^2]-E[x]^2 cancels badly on the 1x1 layers
            y = nn.BatchNorm(use_running_average=use_running_average, momentum=0.9,
                             epsilon=BN_EPSILON, use_fast_variance=False, name="bn")(y)
        if s.residual:
            y = y + x
        return nn.relu(y) if s.batch_norm else y


class _Conv(nn.Module):
    """The conv of a ConvBlock: params kernel [k,k,Cin,Cout] and bias [Cout]."""
    spec: ConvSpec
    transpose_by_phases: bool = False

    @nn.compact
    def __call__(self, x):
        s = self.spec
        kernel = self.param("kernel", _torch_default_kernel_init(),
                            (s.kernel, s.kernel, s.cin, s.cout))
        bias = self.param("bias", _torch_default_bias_init(s.cin * s.kernel * s.kernel), (s.cout,))
        if s.transpose:
            y = conv_transpose_torch(x, kernel, s.stride[0], s.padding, s.output_padding,
                                     self.transpose_by_phases)
        else:
            y = conv_torch(x, kernel, s.stride, s.padding)
        return y + bias


# ------------------------------------------------------------------------------------------------
# The generator
# ------------------------------------------------------------------------------------------------

class Wav2Lip(nn.Module):
    """Wav2Lip generator: (audio [B,80,16,1], face [B,96,96,6]) -> face [B,96,96,3] in [0,1].

    `use_running_average` True (default) is the reference's eval mode (BN with running
    statistics); False normalises with the batch statistics and updates "batch_stats" (apply
    with mutable=["batch_stats"]; flax's running variance is the biased one, torch's unbiased).
    """
    folded_batch_norm: bool = False
    transpose_by_phases: bool = False

    def _stack(self, x, paths_specs, use_running_average):
        for path, spec in paths_specs:
            x = ConvBlock(spec, self.folded_batch_norm, self.transpose_by_phases,
                          name=flax_name(path))(x, use_running_average=use_running_average)
        return x

    @nn.compact
    def __call__(self, audio, face, *, use_running_average: bool = True):
        b = face.shape[0]
        if audio.shape[1:] != (MEL_BINS, MEL_STEPS, 1):
            raise ValueError(f"wav2lip: audio must be [B,{MEL_BINS},{MEL_STEPS},1], "
                             f"got {audio.shape}")
        if face.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 6) or audio.shape[0] != b:
            raise ValueError(f"wav2lip: face must be [B,{IMAGE_SIZE},{IMAGE_SIZE},6] with the "
                             f"audio's batch {audio.shape[0]}, got {face.shape}")
        ura = use_running_average
        x = self._stack(audio, [(f"audio_encoder.{i}", s) for i, s in enumerate(AUDIO_ENCODER)],
                        ura)

        skips = []
        y = face
        for bi, block in enumerate(FACE_ENCODER_BLOCKS):
            y = self._stack(y, [(f"face_encoder_blocks.{bi}.{i}", s) for i, s in enumerate(block)],
                            ura)
            skips.append(y)

        for bi, block in enumerate(FACE_DECODER_BLOCKS):
            x = self._stack(x, [(f"face_decoder_blocks.{bi}.{i}", s) for i, s in enumerate(block)],
                            ura)
            x = jnp.concatenate([x, skips.pop()], axis=-1)

        x = self._stack(x, [(f"output_block.{i}", s) for i, s in enumerate(OUTPUT_BLOCK)], ura)
        return jax.nn.sigmoid(x)


def fold_batch_norm(variables: dict) -> dict:
    """Eval-mode variables -> {"params": ...} for Wav2Lip(folded_batch_norm=True).

    BN(conv(x) + b) = conv(x) * m + (b - mean) * m + beta with m = scale / sqrt(var + eps), so
    the kernel's output channels are multiplied by m and the bias becomes (b - mean) * m + beta.
    Computed in float64 on the host, stored float32.
    """
    params, stats = variables["params"], variables.get("batch_stats", {})
    folded = {}
    for path, spec in reference_layers():
        name = flax_name(path)
        conv = params[name]["conv"]
        kernel = np.asarray(conv["kernel"], np.float64)
        bias = np.asarray(conv["bias"], np.float64)
        if spec.batch_norm:
            bn, st = params[name]["bn"], stats[name]["bn"]
            m = (np.asarray(bn["scale"], np.float64)
                 / np.sqrt(np.asarray(st["var"], np.float64) + BN_EPSILON))
            kernel = kernel * m
            bias = ((bias - np.asarray(st["mean"], np.float64)) * m
                    + np.asarray(bn["bias"], np.float64))
        folded[name] = {"conv": {"kernel": jnp.asarray(kernel, jnp.float32),
                                 "bias": jnp.asarray(bias, jnp.float32)}}
    return {"params": folded}


# ------------------------------------------------------------------------------------------------
# Inputs and outputs
# ------------------------------------------------------------------------------------------------

def _check_frames(name: str, frames) -> None:
    shape = getattr(frames, "shape", None)
    if shape is None or len(shape) != 4 or tuple(shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"wav2lip_inputs: {name} must be [B,{IMAGE_SIZE},{IMAGE_SIZE},3], "
                         f"got {shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"wav2lip_inputs: {name} must be uint8 (0-255), got {frames.dtype}")


def wav2lip_inputs(frames_rgb_uint8, reference_rgb_uint8) -> jax.Array:
    """The generator's face input, as the reference's inference.py builds it.

    frames_rgb_uint8 [B,96,96,3] and reference_rgb_uint8 [B,96,96,3], RGB uint8 -> float32
    [B,96,96,6] in [0,1]: channels 0-2 the frame in BGR with rows 48..95 (the lower half) set to
    0, channels 3-5 the reference in BGR. (Inference uses the frame itself as its reference.)
    """
    _check_frames("frames", frames_rgb_uint8)
    _check_frames("reference", reference_rgb_uint8)
    if frames_rgb_uint8.shape[0] != reference_rgb_uint8.shape[0]:
        raise ValueError(f"wav2lip_inputs: frames batch {frames_rgb_uint8.shape[0]} != reference "
                         f"batch {reference_rgb_uint8.shape[0]}")
    frames_bgr = jnp.asarray(frames_rgb_uint8)[..., ::-1]
    reference_bgr = jnp.asarray(reference_rgb_uint8)[..., ::-1]
    masked = frames_bgr.at[:, IMAGE_SIZE // 2:].set(0)
    return jnp.concatenate([masked, reference_bgr], axis=-1).astype(jnp.float32) / 255.0


def wav2lip_output_frames(prediction_bgr) -> np.ndarray:
    """Generator output [B,96,96,3] (BGR, [0,1]) -> RGB uint8 [B,96,96,3], truncating x*255 as the
    reference does before pasting."""
    pred = np.asarray(prediction_bgr, np.float32)
    return (np.clip(pred, 0.0, 1.0) * 255.0).astype(np.uint8)[..., ::-1]
