"""The engine's loop keeps the device busy (train/loop.py, train/step_metrics.py), on a small
least-squares task whose every number is known:

- metrics are fetched from the devices once per log or save step, not once per step;
- the production train step holds no finiteness check and no NaN-injection select;
- a NaN (debug.nan_at_step, applied between steps) stops the run naming the step range and
  the last good checkpoint, and nothing after that checkpoint is saved;
- the loop's parameters equal a NumPy SGD of the same batches (so prefetching the next batch
  while a step runs changes nothing), also across a resume;
- PendingMetrics' step ranges, checked by hand.
~20 s on 2 cores.
"""

from __future__ import annotations

import os

import grain
import jax
import jax.extend
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from metatalk_jax.train import loop, step_metrics
from metatalk_jax.train.engine_config import add_engine_fields
from metatalk_jax.train.step_metrics import NonFiniteError, PendingMetrics

DIM, BATCH, LR = 3, 8, 0.1
TRUE_W = np.array([1.0, -2.0, 0.5], np.float32)


def example(i):
    x = np.random.default_rng(int(i)).normal(size=DIM).astype(np.float32)
    return {"x": x, "y": np.float32(x @ TRUE_W)}


class LeastSquares:
    """y = x . w, plain SGD on the mean squared error; batch b holds examples b*8 .. b*8+7."""
    name = "least_squares"

    def constants(self):
        return {}

    def init_state(self, rng):
        return {"w": jnp.zeros((DIM,), jnp.float32), "step": jnp.zeros((), jnp.int32)}

    def train_batches(self, *, seed, process_index, process_count):
        ds = grain.MapDataset.range(10_000).map(example).batch(BATCH)
        return iter(ds.to_iter_dataset())

    def eval_batches(self, *, process_index, process_count):
        return iter([])

    def train_step(self, state, batch, rng, constants):
        def loss(w):
            return jnp.mean(jnp.square(batch["x"] @ w - batch["y"]))
        value, grad = jax.value_and_grad(loss)(state["w"])
        return {"w": state["w"] - LR * grad, "step": state["step"] + 1}, {"loss": value}

    def eval_step(self, state, batch, constants):
        return {"count": jnp.zeros(())}

    def preview_step(self, state, batch, constants):
        return jnp.zeros((1, 2, 2, 3))


def numpy_sgd(steps: int) -> np.ndarray:
    w = np.zeros(DIM, np.float64)
    for b in range(steps):
        rows = [example(b * BATCH + k) for k in range(BATCH)]
        x = np.stack([r["x"] for r in rows]).astype(np.float64)
        y = np.array([r["y"] for r in rows], np.float64)
        w -= LR * 2.0 * x.T @ (x @ w - y) / BATCH
    return w


def config_for(total: int, **engine) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict({"seed": 0, "total_steps": total, "batch_size": BATCH})
    add_engine_fields(config, log_every_steps=5, eval_every_steps=0, preview_every_steps=0)
    config.eval_at_start = False
    config.mesh.num_devices = 1
    config.checkpoint_every_steps = 0
    config.async_checkpoints = False
    config.update(engine)
    return config


def final_w(workdir) -> np.ndarray:
    from metatalk_jax.train.checkpointing import Checkpoints, read_state
    latest = Checkpoints(str(workdir), every_steps=0, keep=3).latest_step()
    return np.asarray(read_state(os.path.join(workdir, "checkpoints", str(latest)))["w"])


def test_metrics_are_fetched_at_log_and_save_steps_only(tmp_path, monkeypatch):
    fetches = []
    real_get = jax.device_get

    def counting_get(tree):
        # PendingMetrics fetches a list of per-step dicts; a state check fetches one bool
        fetches.append(len(tree) if isinstance(tree, list) else "state")
        return real_get(tree)

    monkeypatch.setattr(step_metrics.jax, "device_get", counting_get)
    result = loop.train_and_evaluate(config_for(20, checkpoint_every_steps=8), str(tmp_path),
                                     task=LeastSquares(), log=lambda *_: None)
    assert result.status == "finished" and result.step == 20
    # log steps 5, 10, 15, 20 and save steps 8, 16 (20 is both): 6 fetches of 5,3,2,5,1,4 steps,
    # each save preceded by one check of the state
    assert fetches == [5, 3, "state", 2, 5, 1, "state", 4, "state"]
    np.testing.assert_allclose(final_w(tmp_path), numpy_sgd(20), rtol=1e-5, atol=1e-6)


def test_production_step_has_no_finiteness_check_or_injection():
    trainer = loop.Trainer(LeastSquares(), config_for(4))
    state = trainer.init()
    batch = trainer.device_batch(next(LeastSquares().train_batches(
        seed=0, process_index=0, process_count=1)))
    key = jax.random.key(0)
    jaxpr = jax.make_jaxpr(trainer._step)(state, batch, key, trainer.constants)
    names = {e.primitive.name for e in jaxpr.eqns}
    inner = set()
    for eqn in jaxpr.eqns:
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            inner |= {e.primitive.name for e in sub.eqns}
    assert not ({"is_finite", "select_n"} & (names | inner))
    assert trainer.state_is_finite(state) and not trainer.state_is_finite(trainer.poisoned(state))


def test_nan_stops_the_run_naming_the_steps_and_the_last_good_checkpoint(tmp_path):
    config = config_for(12, checkpoint_every_steps=4, log_every_steps=3,
                        debug=ml_collections.ConfigDict({"nan_at_step": 6}))
    with pytest.raises(NonFiniteError) as err:
        loop.train_and_evaluate(config, str(tmp_path), task=LeastSquares(),
                                log=lambda *_: None)
    message = str(err.value)
    # State 6 is NaN. Step 6's loss (from state 5) is finite, fetched at the log step 6, so
    # state 5 is known good; step 7's loss (from state 6) is the first NaN, fetched before the
    # save at step 8: the state went bad in steps 6-7, and checkpoint 8 is never written.
    assert "non-finite values in steps 6-7" in message, message
    assert "loss=nan at step 7" in message
    assert "Last good checkpoint: step 4" in message
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4"]


def test_resume_after_a_stop_equals_the_straight_run(tmp_path):
    loop.train_and_evaluate(config_for(7, checkpoint_every_steps=3), str(tmp_path / "a"),
                            task=LeastSquares(), log=lambda *_: None)
    # a run that stops at 7 then continues to 13 reads exactly the batches 7..12 next
    loop.train_and_evaluate(config_for(13, checkpoint_every_steps=3), str(tmp_path / "a"),
                            task=LeastSquares(), log=lambda *_: None)
    np.testing.assert_allclose(final_w(tmp_path / "a"), numpy_sgd(13), rtol=1e-5, atol=1e-6)


def test_pending_metrics_ranges():
    pending = PendingMetrics(good_through=10)
    for step, loss in ((11, 1.0), (12, 2.0)):
        pending.add(step, {"loss": jnp.float32(loss)})
    assert [(s, r["loss"]) for s, r in pending.fetch()] == [(11, 1.0), (12, 2.0)]
    assert pending.good_through == 11          # step 12's loss proves state 11
    pending.state_checked(12, True)
    assert pending.good_through == 12
    pending.add(13, {"loss": jnp.float32(1.0)})
    pending.add(14, {"loss": jnp.float32(np.inf)})
    with pytest.raises(NonFiniteError, match=r"in steps 13-14 \(loss=inf at step 14\)"):
        pending.fetch()
    with pytest.raises(NonFiniteError, match=r"in step 13 \(parameters at step 13\)"):
        PendingMetrics(good_through=12).state_checked(13, False)
