"""One pix2pix training step for the renderer (generator G + discriminator D), as pure functions.

The order is pix2pix's `optimize_parameters` (AudioDVP's NFRModel) exactly:
  1. fake = G(inputs), train mode (batch statistics, dropout), once;
  2. D update: D(inputs ++ stop_gradient(fake)) then D(inputs ++ targets), loss (D_fake + D_real)/2,
     one Adam step;
  3. G update with the *updated* D: GAN(D(inputs ++ fake), real) + lambda_l1 * L1(fake, targets)
     (+ lambda_fm * feature matching against D(inputs ++ targets), HD variant), one Adam step.
     The gradient reaches G's parameters through a jax.vjp of step 1's forward, so G runs forward
     once per step, as torch does.
D runs in train mode each time, so its running statistics are updated by every call in that order
(2 or 3 times per step for pix2pix, 4 with feature matching); G's once.

No sharding here: the engine jit's `gan_train_step` with its shardings (batch statistics are then
global means over the sharded batch). The state stays float32 when the models compute in bfloat16
(float64 when they compute in float64, for exactness checks).
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from metatalk_jax.models import gan_losses


@flax.struct.dataclass
class GanState:
    """Everything a renderer training step updates; a pytree whose leaves are all arrays."""
    step: jax.Array      # int32 scalar
    g_params: Any
    g_stats: Any         # generator batch_stats (BatchNorm running mean / var)
    g_opt: Any           # optax state of the generator's optimiser
    d_params: Any
    d_stats: Any
    d_opt: Any


def make_gan_optimizers(config) -> tuple[optax.GradientTransformation,
                                         optax.GradientTransformation]:
    """(g_tx, d_tx): Adam for each network, pix2pix's torch.optim.Adam(lr, betas=(beta1, beta2)).

    Reads config.lr (2e-4), config.beta1 (0.5), config.beta2 (0.999), config.eps (torch's 1e-8)
    where present (defaults in brackets). A learning-rate schedule, if wanted, is an optax
    schedule in config.lr.
    """
    def adam():
        return optax.adam(config.get("lr", 2e-4), b1=config.get("beta1", 0.5),
                          b2=config.get("beta2", 0.999), eps=config.get("eps", 1e-8))
    return adam(), adam()


def create_gan_state(rng, generator, discriminator, g_tx, d_tx, input_shape,
                     target_shape) -> GanState:
    """Initial GanState. input_shape [B,H,W,Cin], target_shape [B,H,W,3] (only shapes are used;
    D is initialised on Cin + 3 channels)."""
    g_rng, d_rng = jax.random.split(rng)
    inputs = jnp.zeros(input_shape, jnp.float32)
    pair = jnp.zeros(tuple(input_shape[:-1]) + (input_shape[-1] + target_shape[-1],), jnp.float32)
    # Parameters are float32 for float32 / bfloat16 compute, float64 for float64 compute.
    g_vars = _promote(generator.init(g_rng, inputs, train=False), generator.dtype)
    d_vars = _promote(discriminator.init(d_rng, pair, train=False), discriminator.dtype)
    return GanState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_vars["params"], g_stats=g_vars.get("batch_stats", {}),
        g_opt=g_tx.init(g_vars["params"]),
        d_params=d_vars["params"], d_stats=d_vars.get("batch_stats", {}),
        d_opt=d_tx.init(d_vars["params"]))


def _promote(variables, compute_dtype):
    """Floating leaves cast to at least `compute_dtype`'s precision (never below float32)."""
    dtype = jnp.promote_types(compute_dtype, jnp.float32)
    return jax.tree.map(lambda leaf: leaf.astype(dtype)
                        if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf, variables)


def _as_float(images):
    """Images as float32 (float64 kept, for the float64 parity test)."""
    images = jnp.asarray(images)
    return images.astype(jnp.promote_types(images.dtype, jnp.float32))


def _apply_d_train(discriminator, params, stats, inputs, images):
    """D on inputs ++ images in train mode -> (outputs, updated batch_stats)."""
    outputs, updated = discriminator.apply(
        {"params": params, "batch_stats": stats}, jnp.concatenate([inputs, images], axis=-1),
        train=True, mutable=["batch_stats"])
    return outputs, updated.get("batch_stats", stats)


def gan_train_step(state: GanState, inputs, targets, rng, *, generator, discriminator, g_tx, d_tx,
                   loss_config) -> tuple[GanState, dict[str, jax.Array]]:
    """One D update then one G update (module docstring). inputs [B,H,W,Cin], targets [B,H,W,3],
    both in [-1,1]; rng feeds G's dropout. loss_config: lambda_l1 (pix2pix 100), lambda_fm (0 for
    AudioDVP's U-Net; e.g. 10 for the HD variant). Returns the new state and float32 scalars:
    d_real, d_fake, g_gan, g_l1 (unweighted mean |fake - target|), g_fm, g_total."""
    lambda_l1 = float(loss_config.lambda_l1)
    lambda_fm = float(loss_config.get("lambda_fm", 0.0))
    inputs, targets = _as_float(inputs), _as_float(targets)

    # 1. the only generator forward; g_pullback maps d loss / d fake to d loss / d g_params
    def g_forward(g_params):
        fake, updated = generator.apply(
            {"params": g_params, "batch_stats": state.g_stats}, inputs, train=True,
            rngs={"dropout": rng}, mutable=["batch_stats"])
        return fake, updated.get("batch_stats", state.g_stats)

    fake, g_pullback, g_stats = jax.vjp(g_forward, state.g_params, has_aux=True)

    # 2. discriminator update on (fake detached, real)
    def d_objective(d_params):
        on_fake, stats = _apply_d_train(discriminator, d_params, state.d_stats, inputs,
                                        jax.lax.stop_gradient(fake))
        on_real, stats = _apply_d_train(discriminator, d_params, stats, inputs, targets)
        d_fake = gan_losses.gan_loss(on_fake, target_is_real=False)
        d_real = gan_losses.gan_loss(on_real, target_is_real=True)
        return 0.5 * (d_fake + d_real), (stats, d_fake, d_real)

    d_grads, (d_stats, d_fake, d_real) = jax.grad(d_objective, has_aux=True)(state.d_params)
    d_updates, d_opt = d_tx.update(d_grads, state.d_opt, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    # 3. generator loss against the updated discriminator, as a function of the fake images
    def g_objective(fake_images):
        on_fake, stats = _apply_d_train(discriminator, d_params, d_stats, inputs, fake_images)
        g_gan = gan_losses.gan_loss(on_fake, target_is_real=True)
        g_l1 = gan_losses.l1_loss(fake_images, targets)
        g_fm = jnp.zeros((), jnp.float32)
        if lambda_fm:
            on_real, stats = _apply_d_train(discriminator, d_params, stats, inputs, targets)
            g_fm = gan_losses.feature_matching_loss(on_fake, on_real)
        total = g_gan + lambda_l1 * g_l1 + lambda_fm * g_fm
        return total, (stats, g_gan, g_l1, g_fm)

    d_fake_images, (d_stats, g_gan, g_l1, g_fm) = jax.grad(g_objective, has_aux=True)(fake)
    (g_grads,) = g_pullback(d_fake_images)
    g_updates, g_opt = g_tx.update(g_grads, state.g_opt, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)

    new_state = state.replace(step=state.step + 1, g_params=g_params, g_stats=g_stats, g_opt=g_opt,
                              d_params=d_params, d_stats=d_stats, d_opt=d_opt)
    metrics = {"d_real": d_real, "d_fake": d_fake, "g_gan": g_gan, "g_l1": g_l1, "g_fm": g_fm,
               "g_total": g_gan + lambda_l1 * g_l1 + lambda_fm * g_fm}
    return new_state, {k: v.astype(jnp.float32) for k, v in metrics.items()}


def generate(state: GanState, inputs, *, generator) -> jax.Array:
    """G in eval mode (running statistics, no dropout): [B,H,W,Cin] -> [B,H,W,3] float32."""
    return generator.apply({"params": state.g_params, "batch_stats": state.g_stats},
                           _as_float(inputs), train=False)
