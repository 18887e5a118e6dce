"""SyncNet v2 (Chung & Zisserman 2016, joonson/syncnet_python's `syncnet_v2.model`) in flax.linen,
channels last, eval mode: the network behind the LSE-D / LSE-C lip-sync scores.

Inputs (the reference's SyncNetInstance.evaluate, channels moved last):
  audio [B,13,20,1]      MFCC windows: 13 cepstra (H) x 20 rows of 10 ms (W) = 0.2 s, as
                         media.audio_features.mfcc gives them (python_speech_features on
                         int16-scaled samples); torch's [B,1,13,20] transposed to NHWC
  lips  [B,5,224,224,3]  5 consecutive frames (D), 224x224, raw 0-255 floats in BGR order (the
                         reference feeds cv2.imread pixels unscaled); torch's [B,3,5,224,224]
                         transposed to NDHWC
  ->    [B,1024]         `forward_aud` / `forward_lip` embeddings (Euclidean distances between
                         them are the LSE scores; see metatalk_jax.eval.lse)

Layers (SyncNetModel.py, class S; BN eps 1e-5; "pool" = MaxPool with -inf padding):
  netcnnaud (Conv2d over [13,20]):
     0 conv 1->64 3x3 p1, 1 BN, ReLU, 3 pool 1x1 (identity)           13x20
     4 conv 64->192 3x3 p1, 5 BN, ReLU, 7 pool 3x3 s(1,2)             11x9
     8 conv 192->384 3x3 p1, 9 BN, ReLU
    11 conv 384->256 3x3 p1, 12 BN, ReLU
    14 conv 256->256 3x3 p1, 15 BN, ReLU, 17 pool 3x3 s2              5x4
    18 conv 256->512 5x4 p0, 19 BN, ReLU                               1x1
  netcnnlip (Conv3d over [5,224,224]):
     0 conv 3->96 (5,7,7) s(1,2,2) p0, 1 BN, ReLU, 3 pool (1,3,3) s(1,2,2)            1x54x54
     4 conv 96->256 (1,5,5) s(1,2,2) p(0,1,1), 5 BN, ReLU, 7 pool (1,3,3) s(1,2,2) p(0,1,1)  13
     8 / 11 / 14 conv 256->256 (1,3,3) p(0,1,1), BN, ReLU; 17 pool (1,3,3) s(1,2,2)  6x6
    18 conv 256->512 (1,6,6) p0, 19 BN, ReLU                           1x1x1
  netfcaud / netfclip: 0 Linear 512->512, 1 BatchNorm1d, ReLU, 3 Linear 512->1024.
Indices are the torch Sequential positions, hence the state-dict keys ("netcnnlip.4.weight",
"netfcaud.1.running_var"). 13,631,616 learnable parameters in the reference's state dict.

Variables mirror those keys with "." -> "/": params/netcnnaud/0/{kernel [kh,kw,I,O], bias},
params/netcnnaud/1/{scale, bias} + batch_stats/netcnnaud/1/{mean, var}, params/netcnnlip/0/kernel
[kd,kh,kw,I,O], params/netfcaud/0/kernel [512,512] (torch weight transposed), ...
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

EMBEDDING_SIZE = 1024
LIP_FRAMES = 5
LIP_SIZE = 224
MFCC_CEPSTRA = 13
MFCC_COLUMNS = 20
BN_EPSILON = 1e-5   # torch BatchNorm default
HEADS = ("netfcaud", "netfclip")


@dataclasses.dataclass(frozen=True)
class ConvLayer:
    """One conv of a SyncNet trunk at torch Sequential `index`; BN sits at index + 1.

    kernel/stride/padding have one entry per spatial dim (2 for audio, 3 for lips); `pool` is the
    MaxPool that follows the ReLU, as (kernel, stride, padding), or None.
    """
    index: int
    cin: int
    cout: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    pool: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None


AUDIO_TRUNK: tuple[ConvLayer, ...] = (
    ConvLayer(0, 1, 64, (3, 3), (1, 1), (1, 1), pool=((1, 1), (1, 1), (0, 0))),
    ConvLayer(4, 64, 192, (3, 3), (1, 1), (1, 1), pool=((3, 3), (1, 2), (0, 0))),
    ConvLayer(8, 192, 384, (3, 3), (1, 1), (1, 1)),
    ConvLayer(11, 384, 256, (3, 3), (1, 1), (1, 1)),
    ConvLayer(14, 256, 256, (3, 3), (1, 1), (1, 1), pool=((3, 3), (2, 2), (0, 0))),
    ConvLayer(18, 256, 512, (5, 4), (1, 1), (0, 0)),
)
LIP_TRUNK: tuple[ConvLayer, ...] = (
    ConvLayer(0, 3, 96, (5, 7, 7), (1, 2, 2), (0, 0, 0), pool=((1, 3, 3), (1, 2, 2), (0, 0, 0))),
    ConvLayer(4, 96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1), pool=((1, 3, 3), (1, 2, 2), (0, 1, 1))),
    ConvLayer(8, 256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ConvLayer(11, 256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ConvLayer(14, 256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1), pool=((1, 3, 3), (1, 2, 2), (0, 0, 0))),  # noqa: E501
    ConvLayer(18, 256, 512, (1, 6, 6), (1, 1, 1), (0, 0, 0)),
)
TRUNKS = {"netcnnaud": AUDIO_TRUNK, "netcnnlip": LIP_TRUNK}
# Head: Linear(512, 512) at 0, BatchNorm1d at 1, Linear(512, EMBEDDING_SIZE) at 3.
HEAD_LAYERS = ((0, 512, 512), (3, 512, EMBEDDING_SIZE))
REFERENCE_PARAMETER_COUNT = 13_631_616


def count_parameters() -> int:
    """Learnable parameters of the reference (weights, biases, BN affine) from the tables."""
    total = 0
    for trunk in TRUNKS.values():
        for layer in trunk:
            total += (int(np.prod(layer.kernel)) * layer.cin * layer.cout + layer.cout
                      + 2 * layer.cout)
    per_head = sum(i * o + o for _, i, o in HEAD_LAYERS) + 2 * 512
    return total + 2 * per_head


def _dimension_numbers(spatial: int):
    return ("NHWC", "HWIO", "NHWC") if spatial == 2 else ("NDHWC", "DHWIO", "NDHWC")


def max_pool_torch(x, kernel, stride, padding):
    """nn.MaxPool{2,3}d on channels-last x [B,*spatial,C]: padded positions never win (-inf),
    floor rounding of the output size (torch's ceil_mode=False)."""
    window = (1,) + tuple(kernel) + (1,)
    strides = (1,) + tuple(stride) + (1,)
    pads = ((0, 0),) + tuple((p, p) for p in padding) + ((0, 0),)
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, pads)


def _conv(x, kernel, layer: ConvLayer):
    """torch Conv{2,3}d (no bias) on channels-last x with kernel [*k, I, O].

    A Conv3d whose kernel spans the whole (unpadded) depth, as every lip layer does (5 frames
    then depth 1), is computed as the equal 2-D conv over depth x channels stacked: the result
    is the same sum, and XLA:CPU runs it in ~2.5x less CPU time than its 3-D conv
    (benchmarks/syncnet.py: 3.5 -> 1.4 CPU-s per 20 windows).
    """
    if len(layer.kernel) == 3 and x.shape[1] == layer.kernel[0] and layer.padding[0] == 0:
        b, d, h, w, c = x.shape
        flat_x = jnp.transpose(x, (0, 2, 3, 1, 4)).reshape(b, h, w, d * c)
        kd, kh, kw, ci, co = kernel.shape
        flat_k = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(kh, kw, kd * ci, co)
        y = jax.lax.conv_general_dilated(flat_x, flat_k, window_strides=layer.stride[1:],
                                         padding=tuple((p, p) for p in layer.padding[1:]),
                                         dimension_numbers=_dimension_numbers(2))
        return y[:, None]
    return jax.lax.conv_general_dilated(x, kernel, window_strides=layer.stride,
                                        padding=tuple((p, p) for p in layer.padding),
                                        dimension_numbers=_dimension_numbers(len(layer.kernel)))


class _Trunk(nn.Module):
    """A SyncNet conv trunk (netcnnaud or netcnnlip): children named "0", "1", "4", ... as the
    torch Sequential indices, so the variable tree reads like the state dict."""
    layers: tuple[ConvLayer, ...]

    @nn.compact
    def __call__(self, x):
        for layer in self.layers:
            if x.shape[-1] != layer.cin:
                raise ValueError(f"syncnet: {self.name}.{layer.index} expects {layer.cin} "
                                 f"channels, got input {x.shape}")
            fan_in = layer.cin * int(np.prod(layer.kernel))
            conv = _Weights(kernel_shape=tuple(layer.kernel) + (layer.cin, layer.cout),
                            fan_in=fan_in, name=str(layer.index))
            kernel, bias = conv()
            x = _conv(x, kernel, layer) + bias
            x = _eval_batch_norm(x, layer.cout, name=str(layer.index + 1))
            x = nn.relu(x)
            if layer.pool is not None:
                x = max_pool_torch(x, *layer.pool)
        return x


class _Weights(nn.Module):
    """Holds a kernel and a bias with torch's default init (U(+-1/sqrt(fan_in)) for both)."""
    kernel_shape: tuple[int, ...]
    fan_in: int

    @nn.compact
    def __call__(self):
        bound = 1.0 / np.sqrt(self.fan_in)

        def uniform(key, shape, dtype=jnp.float32):
            return jax.random.uniform(key, shape, dtype, -bound, bound)
        kernel = self.param("kernel", uniform, self.kernel_shape)
        bias = self.param("bias", uniform, (self.kernel_shape[-1],))
        return kernel, bias


def _eval_batch_norm(x, features: int, name: str):
    # Two-pass variance as torch (only matters if someone trains with it); eval mode always.
    return nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, use_fast_variance=False,
                        name=name)(x)


class _Head(nn.Module):
    """netfcaud / netfclip: Linear 512->512, BatchNorm1d, ReLU, Linear 512->1024."""

    @nn.compact
    def __call__(self, x):
        (first, i0, o0), (second, i1, o1) = HEAD_LAYERS
        kernel, bias = _Weights(kernel_shape=(i0, o0), fan_in=i0, name=str(first))()
        x = nn.relu(_eval_batch_norm(x @ kernel + bias, o0, name=str(first + 1)))
        kernel, bias = _Weights(kernel_shape=(i1, o1), fan_in=i1, name=str(second))()
        return x @ kernel + bias


class SyncNet(nn.Module):
    """SyncNet v2 in eval mode. `apply(variables, audio, lips)` returns both embeddings;
    `apply(variables, audio, method=SyncNet.forward_aud)` and
    `apply(variables, lips, method=SyncNet.forward_lip)` one each (shapes in the module doc)."""

    def setup(self):
        self.netcnnaud = _Trunk(AUDIO_TRUNK)
        self.netcnnlip = _Trunk(LIP_TRUNK)
        self.netfcaud = _Head()
        self.netfclip = _Head()

    def forward_aud(self, audio):
        """MFCC windows [B,13,20,1] float32 -> audio embeddings [B,1024]."""
        if audio.ndim != 4 or tuple(audio.shape[1:]) != (MFCC_CEPSTRA, MFCC_COLUMNS, 1):
            raise ValueError(f"syncnet: audio must be [B,{MFCC_CEPSTRA},{MFCC_COLUMNS},1], "
                             f"got {audio.shape}")
        mid = self.netcnnaud(audio)
        return self.netfcaud(mid.reshape(mid.shape[0], -1))

    def forward_lip(self, lips):
        """Frame windows [B,5,224,224,3] (BGR, 0-255 floats) -> lip embeddings [B,1024]."""
        expected = (LIP_FRAMES, LIP_SIZE, LIP_SIZE, 3)
        if lips.ndim != 5 or tuple(lips.shape[1:]) != expected:
            raise ValueError(f"syncnet: lips must be [B,{','.join(map(str, expected))}], "
                             f"got {lips.shape}")
        mid = self.netcnnlip(lips)
        return self.netfclip(mid.reshape(mid.shape[0], -1))

    def __call__(self, audio, lips):
        return self.forward_aud(audio), self.forward_lip(lips)


def init_variables(seed: int = 0) -> dict:
    """Randomly initialised variables (torch's default init, identity BN statistics), batch 1."""
    audio = jnp.zeros((1, MFCC_CEPSTRA, MFCC_COLUMNS, 1), jnp.float32)
    lips = jnp.zeros((1, LIP_FRAMES, LIP_SIZE, LIP_SIZE, 3), jnp.float32)
    return SyncNet().init(jax.random.PRNGKey(seed), audio, lips)
