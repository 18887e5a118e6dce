"""The renderer's two convolution forms (models/renderer_layers.py): the CPU-tuned one (im2col,
space-to-depth, the hand-written transposed-conv backward) and the plain `lax` one that TPU and
GPU programs use compute the same function, forward and both gradients, layer by layer and for
a whole GAN loss; the platform a step is traced for picks the form. float64, so any difference
beyond rounding (1e-12) is a wrong sum, not float noise. ~25 s on 2 cores (+2 min slow).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from metatalk_jax.compile_target import compiling_for
from metatalk_jax.models import renderer_layers as layers
from metatalk_jax.models.renderer import make_renderer


def uniform(seed, shape):
    return np.random.default_rng(seed).uniform(-1, 1, shape)


def relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def value_and_grads(fn, platform, x, kernel, cotangent):
    """(fn(x, kernel), d<fn, cotangent>/dx, .../dkernel), traced for `platform`."""
    def objective(x, k):
        with compiling_for(platform):
            y = fn(x, k)
        return jnp.sum(y * cotangent), y
    (dx, dk), y = jax.grad(objective, argnums=(0, 1), has_aux=True)(x, kernel)
    return y, dx, dk


OPS = {
    "conv3x3": (lambda x, k: layers.conv2d_stride1(x, k, 1), 3, 1),
    "conv4x4_p1": (lambda x, k: layers.conv2d_stride1(x, k, 1), 4, 1),
    "down4x4_s2": (layers._down_conv_4x4, 4, 0.5),
    "up4x4_s2": (layers._up_conv_4x4, 4, 2),
}


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("h,w", [(2, 2), (4, 6), (12, 10)])   # im2col and conv paths
def test_cpu_and_lax_forms_agree_forward_and_gradients(name, h, w):
    fn, k, scale = OPS[name]
    with jax.enable_x64(True):
        x = uniform(0, (2, h, w, 5))
        kernel = uniform(1, (k, k, 5, 3))
        out_shape = jax.eval_shape(lambda a, b: fn(a, b), x, kernel).shape
        if scale == 1:   # 'same'-style convs: kernel 3 keeps the size, kernel 4 adds one
            assert out_shape[1:3] == (h + 3 - k, w + 3 - k)
        else:
            assert out_shape[1:3] == (int(h * scale), int(w * scale))
        cotangent = uniform(2, out_shape)
        cpu = value_and_grads(fn, "cpu", x, kernel, cotangent)
        lax = value_and_grads(fn, "tpu", x, kernel, cotangent)
    for a, b in zip(cpu, lax):
        assert a.dtype == np.float64
        assert relative_error(a, b) < 1e-12


def test_the_traced_platform_picks_the_form():
    """A TPU/GPU trace holds no custom VJP and no im2col concatenate; a CPU trace does."""
    x, kernel = jnp.ones((1, 2, 2, 4)), jnp.ones((4, 4, 4, 4))

    def primitives(platform):
        def f(x, k):
            with compiling_for(platform):
                return layers._up_conv_4x4(x, k) + 0.0
        return {e.primitive.name for e in jax.make_jaxpr(jax.grad(
            lambda x, k: jnp.sum(f(x, k)), argnums=(0, 1)))(x, kernel).eqns}

    on_cpu, on_tpu, on_gpu = primitives("cpu"), primitives("tpu"), primitives("gpu")
    assert "custom_vjp_call" in on_cpu or "custom_vjp_call_jaxpr" in on_cpu
    for plain in (on_tpu, on_gpu):
        assert not any(p.startswith("custom_vjp") for p in plain)
        assert "conv_general_dilated" in plain and "concatenate" not in plain
    with compiling_for("tpu"):
        assert layers.conv_form() == "lax"
    assert layers.conv_form() == ("cpu" if jax.default_backend() == "cpu" else "lax")


@pytest.mark.slow  # ~2 min on 2 busy cores (an HD GAN gradient, float64, op by op, twice)
def test_whole_gan_loss_gradients_agree_between_forms():
    """A tiny HD generator (U-Net + local enhancer, both conv kinds at 1x1..64x64) and a
    two-scale PatchGAN: the loss and every parameter gradient agree across the forms."""
    config = ml_collections.ConfigDict(dict(
        arch="hd", num_downs=5, ngf=4, ndf=4, n_layers_d=2, num_d_scales=2, use_refine=True,
        use_dropout=False, dtype="float64", hd_global_factor=2, hd_local_ngf=4,
        hd_local_blocks=1))
    with jax.enable_x64(True):
        generator, discriminator = make_renderer(config)
        x = jnp.asarray(uniform(3, (2, 64, 64, 6)))
        g_vars = generator.init(jax.random.key(0), x, train=False)
        d_vars = discriminator.init(jax.random.key(1), jnp.zeros((2, 64, 64, 9)), train=False)

        def loss(g_params, d_params, platform):
            with compiling_for(platform):
                fake = generator.apply({**g_vars, "params": g_params}, x, train=False)
                outs = discriminator.apply({**d_vars, "params": d_params},
                                           jnp.concatenate([x, fake], -1), train=False)
            return sum(jnp.sum(jnp.square(o[-1])) for o in outs) + jnp.sum(fake ** 3)

        grad = jax.value_and_grad(loss, argnums=(0, 1))
        cpu = grad(g_vars["params"], d_vars["params"], "cpu")
        lax = grad(g_vars["params"], d_vars["params"], "gpu")
    assert relative_error(cpu[0], lax[0]) < 1e-12
    for a, b in zip(jax.tree.leaves(cpu[1]), jax.tree.leaves(lax[1])):
        assert relative_error(a, b) < 1e-10
