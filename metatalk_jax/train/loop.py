"""The training loop shared by every model: `train_and_evaluate(config, workdir)`.

A task (train/tasks.py) supplies the pure pieces: `init_state(rng)`, `train_step(state, batch,
rng, constants)`, `eval_step`, `preview_step`, its data iterators and replicated constants. This
module adds everything that is the same for all models:

  mesh + shardings    state built as eval_shape -> shardings -> jit(init, out_shardings), so no
                      process ever materialises unsharded parameters; steps jitted with donated
                      state; the per-process batch assembled into one global array
  randomness          typed key from config.seed, folded with the step number (a resumed run
                      draws the same numbers as an uninterrupted one)
  checkpoints         orbax: train state + grain iterator state, every N steps, keep-last-K,
                      a save on SIGTERM (preemption), automatic resume from the work dir
  safety              a non-finite loss or parameter stops the run with NonFiniteError; the
                      state that produced it is never saved, so the last checkpoint is good
  logging             metrics.jsonl + TensorBoard events (process 0 only), image previews,
                      a progress line with ETA
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from metatalk_jax.atomic_files import write_json
from metatalk_jax.progress import Progress
from metatalk_jax.train.checkpointing import Checkpoints
from metatalk_jax.train.mesh import global_batch, make_mesh, replicated, state_shardings
from metatalk_jax.train.metric_writers import MetricWriter
from metatalk_jax.train.preemption import PreemptionWatch


class NonFiniteError(RuntimeError):
    """Training produced NaN/Inf; the message names the step and the offending metrics."""


@dataclasses.dataclass
class RunResult:
    step: int                 # steps completed (the latest checkpoint's step on success)
    status: str               # "finished" | "preempted"
    last_metrics: dict
    eval_metrics: dict


class Trainer:
    """The compiled pieces of a run on one mesh: init, train step, eval, preview.

    Usable on its own (tests compare a 1-device and an 8-device Trainer step by step);
    `train_and_evaluate` drives it with checkpoints and logging.
    """

    def __init__(self, task, config, mesh=None):
        self.task, self.config = task, config
        self.mesh = mesh if mesh is not None else make_mesh(config.mesh)
        root = jax.random.key(int(config.seed))
        self.init_key, self.train_key = jax.random.split(root)
        self.abstract_state = jax.eval_shape(task.init_state, self.init_key)
        self.shardings = state_shardings(self.abstract_state, self.mesh,
                                         int(config.mesh.min_fsdp_size))
        repl = replicated(self.mesh)
        self.constants = jax.device_put(task.constants(), repl)
        self._init = jax.jit(task.init_state, out_shardings=self.shardings)
        self._step = jax.jit(functools.partial(_checked_step, task.train_step),
                             out_shardings=(self.shardings, repl), donate_argnums=0)
        self._eval = jax.jit(task.eval_step, out_shardings=repl)
        self._preview = jax.jit(task.preview_step, out_shardings=repl)

    def init(self):
        return self._init(self.init_key)

    def step(self, state, local_batch: dict, step: int, *, poison: bool = False):
        """One training step on the global batch made of every process's `local_batch`;
        `step` is the number of steps done before it (selects the step's random key)."""
        batch = global_batch(local_batch, self.mesh)
        key = jax.random.fold_in(self.train_key, step)
        return self._step(state, batch, key, self.constants, jnp.bool_(poison))

    def evaluate(self, state, batches) -> dict:
        """Means over every real example of `batches` (an iterable of local batches), then the
        task's `finalize_eval(means)` when it has one (metrics that are not means of per-example
        values, e.g. a correlation from accumulated moments)."""
        totals: dict[str, float] = {}
        for local in batches:
            sums = jax.device_get(self._eval(state, global_batch(local, self.mesh),
                                             self.constants))
            for key, value in sums.items():
                totals[key] = totals.get(key, 0.0) + float(value)
        count = totals.pop("count", 0.0)
        means = {key: value / max(count, 1.0) for key, value in totals.items()}
        finish = getattr(self.task, "finalize_eval", None)
        return finish(means) if finish else means

    def preview(self, state, local_batch: dict) -> np.ndarray:
        """uint8 image grid (examples stacked vertically) of the task's preview_step."""
        images = np.asarray(jax.device_get(
            self._preview(state, global_batch(local_batch, self.mesh), self.constants)))
        images = images[: int(self.config.preview_examples)]
        grid = np.concatenate(list(images), axis=0)
        return np.clip(np.round(grid * 255.0), 0, 255).astype(np.uint8)


def _checked_step(train_step, state, batch, key, constants, poison):
    """The task's step, plus `state_finite` (1.0 when every float leaf of the new state is
    finite), computed on the device so the check costs no extra transfer. poison: a bool
    scalar; True replaces the new parameters with NaN (config.debug.nan_at_step, for tests)."""
    state, metrics = train_step(state, batch, key, constants)
    state = jax.tree.map(
        lambda x: jnp.where(poison, jnp.nan, x) if jnp.issubdtype(x.dtype, jnp.floating) else x,
        state)
    leaves = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
    return state, {**metrics, "state_finite": finite.astype(jnp.float32)}


def _write_config(workdir: str, config) -> None:
    """workdir/config.json: the resolved config of the run (a local dir or a gs:// bucket)."""
    text = json.dumps(json.loads(config.to_json_best_effort()), indent=2, sort_keys=True)
    if "://" in workdir:
        from etils import epath
        path = epath.Path(workdir)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(text)
    else:
        os.makedirs(workdir, exist_ok=True)
        write_json(os.path.join(workdir, "config.json"), json.loads(text))


def _first(iterable):
    for item in iterable:
        return item
    raise ValueError("the evaluation split is empty")


def train_and_evaluate(config, workdir: str, task=None, *, log=print) -> RunResult:
    """Trains `task` (default: from config.task) for config.total_steps steps in `workdir`,
    resuming from its latest checkpoint. Returns how far it got; raises NonFiniteError."""
    from metatalk_jax.subject.trained_on import check_run_subject
    from metatalk_jax.train.tasks import make_task
    task = task if task is not None else make_task(config)
    pid, nproc = jax.process_index(), jax.process_count()
    check_run_subject(config, workdir, write=pid == 0, log=log)   # before the work dir is touched
    trainer = Trainer(task, config)
    writer = MetricWriter(workdir, enabled=pid == 0)
    if pid == 0:
        _write_config(workdir, config)
    checkpoints = Checkpoints(workdir, every_steps=config.checkpoint_every_steps,
                              keep=config.keep_checkpoints, async_save=config.async_checkpoints)
    data = iter(task.train_batches(seed=int(config.seed), process_index=pid, process_count=nproc))
    start = checkpoints.latest_step()
    if start is not None:
        try:
            state, data = checkpoints.restore(start, trainer.abstract_state, trainer.shardings,
                                              data)
        except Exception as err:  # orbax raises many types for a tree or shape mismatch
            detail = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(
                f"{checkpoints.manager.directory}/{start}: this checkpoint does not match the "
                f"config's model or data ({detail[:200]}); resume with the run's own config "
                f"({os.path.join(workdir, 'config.json')}) or use a new --workdir") from None
        log(f"resumed from {checkpoints.manager.directory} step {start}")
    else:
        start = 0
        state = trainer.init()
    total = int(config.total_steps)
    eval_batches = lambda: task.eval_batches(process_index=pid, process_count=nproc)  # noqa: E731
    preview_batch = _first(eval_batches()) if config.preview_every_steps else None
    eval_metrics: dict = {}

    def run_eval(step):
        nonlocal eval_metrics
        eval_metrics = trainer.evaluate(state, eval_batches())
        writer.write_scalars(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
        log(f"eval step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()))

    if start == 0 and config.eval_at_start:
        run_eval(0)
    watch = PreemptionWatch()
    progress = Progress("train", total - start, enabled=pid == 0)
    nan_at = int(config.debug.nan_at_step)
    sums: dict[str, float] = {}
    tick, images_per_step = time.perf_counter(), int(config.batch_size)
    metrics: dict = {}
    step = start
    try:
        while step < total:
            batch = next(data)
            state, metrics = trainer.step(state, batch, step, poison=step + 1 == nan_at)
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            state_finite = metrics.pop("state_finite") == 1.0
            step += 1
            if not (state_finite and all(np.isfinite(v) for v in metrics.values())):
                bad = ", ".join(f"{k}={v}" for k, v in metrics.items() if not np.isfinite(v))
                last = checkpoints.latest_step()
                raise NonFiniteError(
                    f"non-finite values at step {step} ({bad or 'parameters'}); stopped without "
                    f"saving. Last good checkpoint: step {last} in {checkpoints.manager.directory}")
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            progress.update(1)
            if step % int(config.log_every_steps) == 0 or step == total:
                n = step % int(config.log_every_steps) or int(config.log_every_steps)
                elapsed = time.perf_counter() - tick
                scalars = {k: v / n for k, v in sums.items()}
                scalars["steps_per_s"] = n / max(elapsed, 1e-9)
                scalars["images_per_s"] = scalars["steps_per_s"] * images_per_step
                writer.write_scalars(step, scalars)
                sums, tick = {}, time.perf_counter()
            if watch.reached(step):
                checkpoints.save(step, state, data, force=True)
                checkpoints.wait()
                log(f"preempted: saved step {step} in {checkpoints.manager.directory}; "
                    "run the same command to resume")
                return RunResult(step, "preempted", metrics, eval_metrics)
            checkpoints.save(step, state, data, force=step == total)
            if config.eval_every_steps and (step % int(config.eval_every_steps) == 0
                                            or step == total):
                run_eval(step)
            if preview_batch is not None and (step % int(config.preview_every_steps) == 0
                                              or step == total):
                writer.write_images(step, {"preview": trainer.preview(state, preview_batch)})
        if start == total and config.eval_every_steps:
            run_eval(step)
        return RunResult(step, "finished", metrics, eval_metrics)
    finally:
        progress.close()
        watch.close()
        checkpoints.close()
        writer.close()
        sys.stdout.flush()
