"""The neural renderer (metatalk_jax.models.renderer), its losses and the GAN step, checked against
a PyTorch mirror of AudioDVP's pix2pix code (tests/support/torch_renderer_reference.py) on copied
weights: forward passes, BatchNorm running statistics, two full training steps; plus the HD
variant's shapes and full-resolution path, bfloat16 compute, and input validation."""

from __future__ import annotations

import functools

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch

from metatalk_jax.models import gan_losses
from metatalk_jax.models.renderer import (HDGenerator, MultiScaleDiscriminator, PatchDiscriminator,
                                          UnetGenerator, _avg_pool_3x3_s2, make_renderer,
                                          unet_dropout_levels)
from metatalk_jax.models.renderer_layers import BatchNorm2d, DownConv2d, UpConv2d, _up_conv_4x4
from metatalk_jax.train import gan_step
from tests.support.torch_renderer_reference import (TorchPatchDiscriminator, TorchPix2PixStep,
                                            TorchUnetBlock, TorchUnetGenerator,
                                            init_pix2pix_weights, patch_d_variables_from_torch,
                                            unet_variables_from_torch)

torch.set_flush_denormal(True)   # as XLA:CPU; keeps the torch side fast


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def relative_error(actual, expected) -> float:
    """max |actual - expected| / max |expected| over the whole array."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def tree_relative_errors(actual, expected) -> dict:
    flat_a = flax.traverse_util.flatten_dict(jax.device_get(actual))
    flat_e = flax.traverse_util.flatten_dict(expected)
    assert flat_a.keys() == flat_e.keys()
    return {"/".join(k): relative_error(flat_a[k], flat_e[k]) for k in flat_a}


def uniform(seed, shape):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def random_variables(model, x, seed: int) -> dict:
    """pix2pix-style random variables for `model` on input x, drawn with NumPy: compiling flax's
    init (one threefry per parameter) takes ~20 s on this CPU, longer than the tests themselves."""
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0), x)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "mean":
            return np.zeros(leaf.shape, np.float32)
        if name == "var":
            return np.ones(leaf.shape, np.float32)
        noise = (0.02 * rng.standard_normal(leaf.shape)).astype(np.float32)
        return noise + 1.0 if name == "scale" else noise

    return jax.tree_util.tree_map_with_path(draw, shapes)


# ------------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("h,w,cin,cout", [(1, 1, 5, 3), (3, 3, 4, 6), (4, 6, 3, 7), (6, 6, 8, 5)])
def test_up_and_down_convs_and_their_gradients_equal_torch(h, w, cin, cout):
    """Values and both gradients (the up-conv's are hand-written) against torch autograd."""
    for kind in ("up", "down"):
        size = (h, w) if kind == "up" else (2 * h, 2 * w)
        x = uniform(0, (2, *size, cin))
        weight = np.random.default_rng(1).standard_normal(
            (cin, cout, 4, 4) if kind == "up" else (cout, cin, 4, 4)).astype(np.float32)
        bias = np.linspace(-1, 1, cout).astype(np.float32)
        out_size = (2 * h, 2 * w) if kind == "up" else (h, w)
        cotangent = uniform(2, (2, *out_size, cout))
        if kind == "up":
            module, kernel = UpConv2d(cout, use_bias=True), weight.transpose(2, 3, 0, 1)
            torch_fn = functools.partial(torch.nn.functional.conv_transpose2d, stride=2, padding=1)
        else:
            module, kernel = DownConv2d(cout, use_bias=True), weight.transpose(2, 3, 1, 0)
            torch_fn = functools.partial(torch.nn.functional.conv2d, stride=2, padding=1)

        def objective(x, kernel):
            y = module.apply({"params": {"kernel": kernel, "bias": bias}}, x)
            return jnp.sum(y * cotangent), y

        (dx, dkernel), y = jax.jit(jax.grad(objective, argnums=(0, 1), has_aux=True))(x, kernel)
        tx, tw = nchw(x).requires_grad_(), torch.from_numpy(weight).requires_grad_()
        ty = torch_fn(tx, tw, torch.from_numpy(bias))
        (ty * nchw(cotangent)).sum().backward()
        assert y.shape == (2, *out_size, cout)
        assert relative_error(y, nhwc(ty)) < 1e-5
        assert relative_error(dx, nhwc(tx.grad)) < 1e-5
        torch_dkernel = tw.grad.numpy().transpose((2, 3, 0, 1) if kind == "up" else (2, 3, 1, 0))
        assert relative_error(dkernel, torch_dkernel) < 1e-5


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("h,w,cin,cout", [(2, 2, 6, 4), (4, 8, 5, 3), (5, 7, 4, 6)])
def test_up_conv_custom_gradients_equal_autodiff_of_the_transposed_conv(dtype, h, w, cin, cout):
    """The hand-written VJP of `_up_conv_4x4` (im2col path up to 32 input pixels, correlation
    path above) against jax.grad of the textbook formulation: lax.conv_transpose of the
    spatially flipped kernel with 2 px of padding, differentiated by XLA."""
    def reference(x, kernel):
        return jax.lax.conv_transpose(x, kernel[::-1, ::-1], strides=(2, 2),
                                      padding=((2, 2), (2, 2)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))

    with jax.enable_x64(dtype == "float64"):
        x = uniform(0, (3, h, w, cin)).astype(dtype)
        kernel = uniform(1, (4, 4, cin, cout)).astype(dtype)
        cotangent = uniform(2, (3, 2 * h, 2 * w, cout)).astype(dtype)

        def gradients(fn):
            return jax.jit(jax.grad(lambda x, k: jnp.sum(fn(x, k) * cotangent),
                                    argnums=(0, 1)))(x, kernel)

        (dx, dkernel), (ref_dx, ref_dkernel) = gradients(_up_conv_4x4), gradients(reference)
        assert dx.dtype == dkernel.dtype == np.dtype(dtype)
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    assert relative_error(dx, ref_dx) < tolerance
    assert relative_error(dkernel, ref_dkernel) < tolerance


def test_batchnorm_equals_torch_including_unbiased_running_variance():
    x1, x2 = uniform(0, (3, 5, 4, 6)) * 3 + 1, uniform(1, (3, 5, 4, 6))
    ref = torch.nn.BatchNorm2d(6)
    with torch.no_grad():
        ref.weight.copy_(torch.linspace(0.5, 1.5, 6))
        ref.bias.copy_(torch.linspace(-1, 1, 6))
    variables = {"params": {"scale": ref.weight.detach().numpy().copy(),
                            "bias": ref.bias.detach().numpy().copy()},
                 "batch_stats": {"mean": np.zeros(6, np.float32), "var": np.ones(6, np.float32)}}
    bn = BatchNorm2d()
    for x in (x1, x2):                       # two updates: the momentum recursion, not one step
        y, updated = bn.apply(variables, x, train=True, mutable=["batch_stats"])
        expected = nhwc(ref.train()(nchw(x)))
        assert relative_error(y, expected) < 1e-5
        variables = {**variables, "batch_stats": updated["batch_stats"]}
    np.testing.assert_allclose(variables["batch_stats"]["mean"], ref.running_mean.numpy(),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(variables["batch_stats"]["var"], ref.running_var.numpy(), rtol=1e-5)
    # the unbiased (n-1) variance, which flax.linen.BatchNorm would not give
    var1, var2 = (x.reshape(-1, 6).var(axis=0, ddof=1) for x in (x1, x2))
    np.testing.assert_allclose(variables["batch_stats"]["var"], 0.81 + 0.09 * var1 + 0.1 * var2,
                               rtol=1e-5)
    y_eval = bn.apply(variables, x2, train=False)
    assert relative_error(y_eval, nhwc(ref.eval()(nchw(x2)))) < 1e-5


def test_multiscale_pooling_and_its_gradient_equal_torch_avgpool():
    for shape in ((2, 10, 14, 3), (1, 9, 5, 2)):
        x = uniform(0, shape)
        tx = nchw(x).requires_grad_()
        expected = torch.nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)(tx)
        cotangent = uniform(1, expected.shape)
        (expected * torch.from_numpy(cotangent)).sum().backward()
        # traced, as in a step
        pooled, pullback = jax.vjp(jax.jit(_avg_pool_3x3_s2), jnp.asarray(x))
        assert relative_error(pooled, nhwc(expected)) < 1e-6
        (dx,) = pullback(jnp.asarray(cotangent.transpose(0, 2, 3, 1)))
        assert relative_error(dx, nhwc(tx.grad)) < 1e-6


# ------------------------------------------------------------------------------------------------
# Generator and discriminator forward passes vs torch
# ------------------------------------------------------------------------------------------------

def test_dropout_levels_follow_audiodvp_construction():
    """AudioDVP drops out in the innermost block and the ngf*8 blocks above it but one: count the
    torch mirror's Dropout modules per level (built by the reference's loop)."""
    for num_downs in (5, 6, 7, 8):
        net = TorchUnetGenerator(21, 3, num_downs, 4)
        with_dropout, block, level = [], net.model, 0
        while block is not None:
            children = list(block.model)
            if any(isinstance(m, torch.nn.Dropout) for m in children):
                with_dropout.append(level)
            block = next((m for m in children if isinstance(m, TorchUnetBlock)), None)
            level += 1
        assert level == num_downs
        assert tuple(with_dropout) == unet_dropout_levels(num_downs)
    assert unet_dropout_levels(8) == (5, 6, 7)


@pytest.mark.parametrize("num_downs,ngf,size,batch", [
    (6, 8, 64, 4),
    # AudioDVP's full depth at 256 px: ~30 s, so in the slow set (`make test-slow`)
    pytest.param(8, 4, 256, 2, marks=pytest.mark.slow)])
def test_unet_generator_equals_torch(num_downs, ngf, size, batch):
    """Eval mode (dropout layers present but inactive) and train mode (batch statistics, no
    dropout), then the running statistics after that one train-mode forward. (8, 4, 256) is
    unet_256's full depth (every ngf*8 level) with few channels."""
    x = uniform(0, (batch, size, size, 21))
    for use_dropout in (True, False):
        net = init_pix2pix_weights(TorchUnetGenerator(21, 3, num_downs, ngf, use_dropout), seed=1)
        variables = unet_variables_from_torch(net.state_dict(), num_downs)
        model = UnetGenerator(num_downs=num_downs, ngf=ngf, use_dropout=use_dropout)
        init = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0), x)
        assert jax.tree.map(lambda a: a.shape, init) == jax.tree.map(np.shape, variables)
        if use_dropout:
            ours = jax.jit(functools.partial(model.apply, train=False))(variables, x)
            with torch.no_grad():
                theirs = nhwc(net.eval()(nchw(x)))
        else:
            ours, updated = jax.jit(functools.partial(model.apply, train=True,
                                                      mutable=["batch_stats"]))(variables, x)
            with torch.no_grad():
                theirs = nhwc(net.train()(nchw(x)))
            stats = unet_variables_from_torch(net.state_dict(), num_downs)["batch_stats"]
            errors = tree_relative_errors(updated["batch_stats"], stats)
            assert max(errors.values()) < 1e-4, errors
        assert ours.dtype == jnp.float32 and ours.shape == (batch, size, size, 3)
        assert relative_error(ours, theirs) < 1e-4


def test_patch_discriminator_equals_torch():
    x = uniform(0, (4, 64, 64, 24))
    net = init_pix2pix_weights(TorchPatchDiscriminator(24, 8, 3), seed=2)
    variables = patch_d_variables_from_torch(net.state_dict())
    model = PatchDiscriminator(ndf=8, n_layers=3)
    with torch.no_grad():
        theirs_eval = nhwc(net.eval()(nchw(x)))
    assert relative_error(jax.jit(functools.partial(model.apply, train=False))(variables, x)[-1],
                          theirs_eval) < 1e-4
    outputs, updated = jax.jit(functools.partial(model.apply, train=True,
                                                 mutable=["batch_stats"]))(variables, x)
    with torch.no_grad():
        theirs_train = nhwc(net.train()(nchw(x)))
    assert [o.shape[1] for o in outputs] == [32, 16, 8, 7, 6]     # 64 -> 64/8 - 2 patches
    assert outputs[-1].dtype == jnp.float32
    assert relative_error(outputs[-1], theirs_train) < 1e-4
    stats = patch_d_variables_from_torch(net.state_dict())["batch_stats"]
    assert max(tree_relative_errors(updated["batch_stats"], stats).values()) < 1e-4


# ------------------------------------------------------------------------------------------------
# The training step vs torch
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps, batch", [
    (1, 2),                                                    # the default run: ~15 s
    pytest.param(2, 4, marks=pytest.mark.slow),                # ~40 s: `make test-slow`
])
def test_gan_steps_equal_torch_pix2pix_in_float64(steps, batch):
    """`steps` steps of gan_train_step and of NFRModel.optimize_parameters from the same weights,
    no dropout, Adam(2e-4, (0.5, 0.999), eps 1e-8), both sides in float64: parameters, running
    stats, losses and eval-mode outputs agree to 1e-6 relative.

    Why float64: in float32 the two frameworks round differently, and in a ReLU network a
    pre-activation within rounding of zero lands on different sides of the kink (one such pixel in
    this setup changes a refine BatchNorm's bias gradient by 1.6%); and the conv biases that feed a
    train-mode BatchNorm have an exactly zero gradient, i.e. rounding noise, which Adam turns into
    +-lr steps of random sign. Both differences are real float32 effects, not errors, and vanish
    in float64. The float32 path is covered by the forward and gradient parity tests above.
    """
    num_downs, ngf, ndf, size = 5, 8, 8, 32
    net_g = init_pix2pix_weights(TorchUnetGenerator(21, 3, num_downs, ngf, use_dropout=False),
                                 seed=3).double()
    net_d = init_pix2pix_weights(TorchPatchDiscriminator(24, ndf, 3), seed=4).double()
    g_vars = unet_variables_from_torch(net_g.state_dict(), num_downs)
    d_vars = patch_d_variables_from_torch(net_d.state_dict())
    torch_step = TorchPix2PixStep(net_g, net_d, lr=2e-4, beta1=0.5, lambda_l1=100.0)

    with jax.enable_x64(True):
        generator = UnetGenerator(num_downs=num_downs, ngf=ngf, use_dropout=False,
                                  dtype=jnp.float64)
        discriminator = PatchDiscriminator(ndf=ndf, n_layers=3, dtype=jnp.float64)
        g_tx, d_tx = gan_step.make_gan_optimizers(
            ml_collections.ConfigDict(dict(lr=2e-4, beta1=0.5, beta2=0.999)))
        as_jnp = functools.partial(jax.tree.map, jnp.asarray)
        state = gan_step.GanState(
            step=jnp.zeros((), jnp.int32),
            g_params=as_jnp(g_vars["params"]), g_stats=as_jnp(g_vars["batch_stats"]),
            g_opt=g_tx.init(as_jnp(g_vars["params"])),
            d_params=as_jnp(d_vars["params"]), d_stats=as_jnp(d_vars["batch_stats"]),
            d_opt=d_tx.init(as_jnp(d_vars["params"])))
        step = jax.jit(functools.partial(
            gan_step.gan_train_step, generator=generator, discriminator=discriminator, g_tx=g_tx,
            d_tx=d_tx, loss_config=ml_collections.ConfigDict(dict(lambda_l1=100.0, lambda_fm=0.0))))
        for i in range(steps):
            inputs = uniform(10 + i, (batch, size, size, 21)).astype(np.float64)
            targets = uniform(20 + i, (batch, size, size, 3)).astype(np.float64)
            state, metrics = step(state, inputs, targets, jax.random.PRNGKey(i))
            expected = torch_step(nchw(inputs), nchw(targets))
            for name in ("d_fake", "d_real", "g_gan", "g_l1"):
                assert float(metrics[name]) == pytest.approx(expected[name], rel=1e-6), name
            assert float(metrics["g_total"]) == pytest.approx(
                expected["g_gan"] + 100 * expected["g_l1"], rel=1e-6)
            assert float(metrics["g_fm"]) == 0.0
        assert int(state.step) == steps

        g_now = unet_variables_from_torch(net_g.state_dict(), num_downs)
        d_now = patch_d_variables_from_torch(net_d.state_dict())
        for ours, theirs in ((state.g_params, g_now["params"]), (state.d_params, d_now["params"]),
                             (state.g_stats, g_now["batch_stats"]),
                             (state.d_stats, d_now["batch_stats"])):
            errors = tree_relative_errors(ours, theirs)
            assert max(errors.values()) < 1e-6, sorted(errors.items(), key=lambda kv: -kv[1])[:3]
        # the parameters did move: 1-2 Adam steps of lr against weights of ~0.02
        assert max(tree_relative_errors(state.g_params, g_vars["params"]).values()) > 1e-3
        assert max(tree_relative_errors(state.d_params, d_vars["params"]).values()) > 1e-3
        # eval-mode generation uses the running statistics, as torch's eval()
        x = uniform(30, (2, size, size, 21)).astype(np.float64)
        with torch.no_grad():
            theirs = nhwc(net_g.eval()(nchw(x)))
        ours = jax.jit(functools.partial(gan_step.generate, generator=generator))(state, x)
        assert relative_error(ours, theirs) < 1e-6


# ------------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------------

def test_losses_equal_torch_and_brute_force():
    logits = uniform(0, (2, 5, 5, 1)) * 4
    for real in (True, False):
        expected = torch.nn.BCEWithLogitsLoss()(torch.from_numpy(logits),
                                                torch.full((2, 5, 5, 1), 1.0 if real else 0.0))
        assert float(gan_losses.bce_with_logits(jnp.asarray(logits), real)) == pytest.approx(
            float(expected), rel=1e-6)
    # multi-scale: GAN summed over scales, feature matching = mean over scales of mean over layers
    fake = [[np.full((1, 2, 2, 1), 1.0), np.full((1, 1, 1, 2), 3.0), logits[:1]],
            [np.full((1, 2, 2, 1), 0.0), logits[1:]]]
    real = [[np.full((1, 2, 2, 1), 0.5), np.full((1, 1, 1, 2), 1.0), logits[:1]],
            [np.full((1, 2, 2, 1), 2.0), logits[1:]]]
    fake, real = jax.tree.map(jnp.asarray, fake), jax.tree.map(jnp.asarray, real)
    assert float(gan_losses.feature_matching_loss(fake, real)) == pytest.approx(
        ((0.5 + 2.0) / 2 + 2.0) / 2)
    single = float(gan_losses.gan_loss(fake[0], True)) + float(gan_losses.gan_loss(fake[1], True))
    assert float(gan_losses.gan_loss(fake, True)) == pytest.approx(single)
    assert float(gan_losses.l1_loss(jnp.ones((2, 3)), jnp.zeros((2, 3)) - 1)) == 2.0


# ------------------------------------------------------------------------------------------------
# HD variant, bfloat16, configuration errors
# ------------------------------------------------------------------------------------------------

def test_hd_generator_512_shapes_and_full_resolution_path():
    """At 512 the U-Net sees a 2x2 box-filtered copy; a +-eps checkerboard inside every 2x2 box
    leaves that copy unchanged, so any change of the output comes from the full-resolution path."""
    model = HDGenerator(global_factor=2, num_downs=5, ngf=4, local_ngf=8, local_blocks=1)
    x = uniform(0, (1, 512, 512, 6))
    variables = random_variables(model, x, seed=0)
    run = jax.jit(functools.partial(model.apply, train=False))
    y = run(variables, x)
    assert y.shape == (1, 512, 512, 3) and y.dtype == jnp.float32
    assert float(jnp.abs(y).max()) <= 1.0
    checker = np.indices((512, 512)).sum(axis=0) % 2 * 2.0 - 1.0          # +-1, zero mean per 2x2
    x2 = x + 0.1 * checker[None, :, :, None].astype(np.float32)

    def coarse(a):
        return a.reshape(1, 256, 2, 256, 2, 6).mean(axis=(2, 4))

    np.testing.assert_allclose(coarse(x2), coarse(x), atol=1e-6)
    assert float(jnp.abs(run(variables, x2) - y).max()) > 1e-4

    disc = MultiScaleDiscriminator(num_scales=3, ndf=4, n_layers=3)
    pair = jnp.zeros((1, 512, 512, 9))
    outputs = jax.eval_shape(lambda v, p: disc.apply(v, p, train=False),
                             random_variables(disc, pair, 1), pair)
    assert [scale[-1].shape for scale in outputs] == [(1, 62, 62, 1), (1, 30, 30, 1),
                                                      (1, 14, 14, 1)]


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    x = uniform(0, (2, 64, 64, 21))
    fp32 = UnetGenerator(num_downs=6, ngf=8, use_dropout=False)
    bf16 = UnetGenerator(num_downs=6, ngf=8, use_dropout=False, dtype=jnp.bfloat16)
    init_shapes = jax.eval_shape(functools.partial(bf16.init, train=False),
                                 jax.random.PRNGKey(0), x)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(init_shapes))
    variables = random_variables(bf16, x, seed=0)
    y16 = jax.jit(functools.partial(bf16.apply, train=False))(variables, x)
    y32 = jax.jit(functools.partial(fp32.apply, train=False))(variables, x)
    assert y16.dtype == jnp.float32
    assert float(jnp.abs(y16 - y32).max()) < 0.05 * float(jnp.abs(y32).max())

    config = ml_collections.ConfigDict(dict(
        arch="hd", num_downs=5, ngf=4, ndf=4, n_layers_d=3, num_d_scales=2, use_refine=True,
        use_dropout=True, dtype="bfloat16", hd_global_factor=2, hd_local_ngf=8, hd_local_blocks=1))
    generator, discriminator = make_renderer(config)
    g_tx, d_tx = gan_step.make_gan_optimizers(ml_collections.ConfigDict())
    shapes = ((2, 128, 128, 21), (2, 128, 128, 3))
    state = jax.eval_shape(lambda r: gan_step.create_gan_state(r, generator, discriminator, g_tx,
                                                               d_tx, *shapes),
                           jax.random.PRNGKey(0))
    new_state, metrics = jax.eval_shape(
        functools.partial(gan_step.gan_train_step, generator=generator, discriminator=discriminator,
                          g_tx=g_tx, d_tx=d_tx,
                          loss_config=ml_collections.ConfigDict(dict(lambda_l1=100.0,
                                                                     lambda_fm=10.0))),
        state, jax.ShapeDtypeStruct(shapes[0], jnp.float32),
        jax.ShapeDtypeStruct(shapes[1], jnp.float32), jax.random.PRNGKey(0))
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    float_leaves = [leaf for leaf in jax.tree.leaves(new_state)
                    if jnp.issubdtype(leaf.dtype, jnp.floating)]
    assert float_leaves and all(leaf.dtype == jnp.float32 for leaf in float_leaves)
    assert sorted(metrics) == ["d_fake", "d_real", "g_fm", "g_gan", "g_l1", "g_total"]
    assert all(m.shape == () and m.dtype == jnp.float32 for m in metrics.values())


def test_bad_sizes_and_config_values_raise():
    with pytest.raises(ValueError, match="divisible by 64"):
        UnetGenerator(num_downs=6, ngf=4).init(
            jax.random.PRNGKey(0), jnp.zeros((1, 96, 64, 3)), train=False)
    with pytest.raises(ValueError, match="divisible by 64"):
        HDGenerator(global_factor=2, num_downs=5, ngf=4).init(
            jax.random.PRNGKey(0), jnp.zeros((1, 96, 96, 3)), train=False)
    with pytest.raises(ValueError, match="num_downs >= 5"):
        UnetGenerator(num_downs=4, ngf=4).init(
            jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)), train=False)
    config = ml_collections.ConfigDict(dict(arch="resnet", num_downs=6, ngf=4, ndf=4, n_layers_d=3,
                                            num_d_scales=1, use_refine=True, use_dropout=True,
                                            dtype="float32"))
    with pytest.raises(ValueError, match="arch"):
        make_renderer(config)
    config.arch, config.dtype = "unet", "float16"
    with pytest.raises(ValueError, match="dtype"):
        make_renderer(config)
