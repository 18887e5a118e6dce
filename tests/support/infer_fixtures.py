"""Random-initialised A2E and renderer checkpoints in the training work-dir layout, for the
inference tests and benchmarks/infer.py (no training: the pipeline's plumbing and speed are what
they measure)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp

from metatalk_jax.config_loading import load_config
from metatalk_jax.models.a2e import make_a2e
from metatalk_jax.models.renderer import make_renderer
from metatalk_jax.train import gan_step

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _save(workdir: str, config, state, step: int = 1) -> str:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(json.loads(config.to_json_best_effort()), f)
    manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                    item_names=("state",))
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
    manager.wait_until_finished()
    manager.close()
    return workdir


def random_renderer(workdir: str, subject: str, *, resolution: int = 32, seed: int = 0,
                    variant: str = "tiny", overrides=()) -> str:
    """A work dir holding an initial renderer state of configs/renderer.py:<variant> at
    `resolution`."""
    config = load_config(f"renderer:{variant}",
                         [f"data.subject={subject}", f"data.resolution={resolution}",
                          *overrides])
    reference = bool(config.data.mouth_reference)
    generator, discriminator = make_renderer(config.model, reference=reference)
    g_tx, d_tx = gan_step.make_gan_optimizers(config.optim)
    c = 3 * int(config.data.window) + (3 if reference else 0)
    state = gan_step.create_gan_state(jax.random.key(seed), generator, discriminator, g_tx, d_tx,
                                      (1, resolution, resolution, c),
                                      (1, resolution, resolution, 3))
    return _save(workdir, config, state)


def random_a2e(workdir: str, subject: str, expression_dim: int, *, seed: int = 0,
               variant: str = "tiny", overrides=()) -> str:
    """A work dir holding an initial A2E state of configs/a2e.py:<variant> with E outputs."""
    config = load_config(f"a2e:{variant}",
                         [f"data.subject={subject}", *overrides])
    model = make_a2e(config.model, expression_dim)
    w, m = int(config.data.window), int(config.data.mel_columns)
    params = model.init(jax.random.key(seed), jnp.zeros((1, w, 80, m)),
                        jnp.ones((1, w), bool))["params"]
    state = {"step": jnp.zeros((), jnp.int32), "params": params,
             "opt": optax.adam(1e-3).init(params)}
    return _save(workdir, config, state)
