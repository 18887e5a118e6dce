"""The training loop shared by every model: `train_and_evaluate(config, workdir)`.

A task (the `Task` of train/task_protocol.py, built from config.task by train/tasks.py) supplies
the pure pieces: `init_state(rng)`, `train_step(state, batch, rng, constants)`, `eval_step`,
`preview_step`, its data iterators and replicated constants. This module adds everything that is
the same for all models:

  mesh + shardings    state built as eval_shape -> shardings -> jit(init, out_shardings), so no
                      process ever materialises unsharded parameters; steps jitted with donated
                      state; the per-process batch assembled into one global array
  randomness          typed key from config.seed, folded with the step number (a resumed run
                      draws the same numbers as an uninterrupted one)
  checkpoints         orbax: train state + grain iterator state, every N steps, keep-last-K,
                      a save on SIGTERM (preemption), automatic resume from the work dir
  safety              a non-finite loss or parameter stops the run with NonFiniteError naming
                      the steps where it happened; every state is checked before it is saved,
                      so the last checkpoint is good
  logging             metrics.jsonl + TensorBoard events (process 0 only), image previews,
                      a progress line with ETA; the work dir may be a bucket URL (gs://...)
  throughput          no host sync per step: metrics stay on the devices until a log or save
                      step (train/step_metrics.py), and the next batch is read and transferred
                      while the dispatched step runs
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from metatalk_jax.errors import InputError
from metatalk_jax.media.labelled_images import enlarge_to, label_columns
from metatalk_jax.compile_target import compiling_for
from metatalk_jax.progress import Progress
from metatalk_jax.train.checkpointing import Checkpoints
from metatalk_jax.train.mesh import global_batch, make_mesh, replicated, state_shardings
from metatalk_jax.train.metric_writers import MetricWriter
from metatalk_jax.train.preemption import PreemptionWatch
from metatalk_jax.train.step_metrics import NonFiniteError, PendingMetrics
from metatalk_jax.train.task_protocol import Task
from metatalk_jax.train import workdir as workdir_lib

PREVIEW_MIN_HEIGHT = 256     # px per example in the training previews


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

    def __init__(self, task: Task, config, mesh=None, *, compile_only: bool = False):
        """compile_only: the mesh's devices are compile-only ones (a TPU topology described on
        a CPU host, train/compile_check.py): constants stay abstract and nothing is placed."""
        self.task, self.config = task, config
        self.mesh = mesh if mesh is not None else make_mesh(config.mesh)
        # The platform the steps are compiled for: the renderer's convolutions take their
        # CPU-tuned forms only for XLA:CPU (models/renderer_layers.py).
        self.platform = self.mesh.devices.flat[0].platform
        root = jax.random.key(int(config.seed))
        self.init_key, self.train_key = jax.random.split(root)
        self.abstract_state = jax.eval_shape(task.init_state, self.init_key)
        self.shardings = state_shardings(self.abstract_state, self.mesh,
                                         int(config.mesh.min_fsdp_size))
        repl = replicated(self.mesh)
        constants = task.constants()
        self.constants = (jax.tree.map(lambda x: jax.ShapeDtypeStruct(
            np.shape(x), jnp.asarray(x).dtype, sharding=repl), constants) if compile_only
            else jax.device_put(constants, repl))
        traced = functools.partial(_traced_for, self.platform)
        self._init = jax.jit(traced(task.init_state), out_shardings=self.shardings)
        self._step = jax.jit(traced(task.train_step), out_shardings=(self.shardings, repl),
                             donate_argnums=0)
        self._eval = jax.jit(traced(task.eval_step), out_shardings=repl)
        self._preview = jax.jit(traced(task.preview_step), out_shardings=repl)
        self._all_finite = jax.jit(_all_finite, out_shardings=repl)
        self._poison = jax.jit(_poisoned, out_shardings=self.shardings, donate_argnums=0)

    def init(self):
        return self._init(self.init_key)

    def device_batch(self, local_batch: dict) -> dict:
        """Every process's numpy `local_batch` [L, ...] as one global batch on the mesh (the
        transfer starts now; the caller may go on while it runs)."""
        return global_batch(local_batch, self.mesh)

    def step(self, state, batch: dict, step: int):
        """One training step on `batch`: a global batch from `device_batch`, or this process's
        numpy rows of it. `step` is the number of steps done before it (selects the step's random
        key). Returns (state, metrics) as device arrays; nothing waits for the device."""
        if not all(isinstance(x, jax.Array) for x in jax.tree.leaves(batch)):
            batch = self.device_batch(batch)
        key = jax.random.fold_in(self.train_key, step)
        return self._step(state, batch, key, self.constants)

    def state_is_finite(self, state) -> bool:
        """Whether every floating leaf of `state` is finite (waits for the state)."""
        return bool(jax.device_get(self._all_finite(state)))

    def poisoned(self, state):
        """`state` with every floating leaf NaN: config.debug.nan_at_step's test hook, applied
        between steps so the production step holds no trace of it."""
        return self._poison(state)

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
        """uint8 image grid of the task's preview_step: examples stacked vertically, each
        enlarged to at least PREVIEW_MIN_HEIGHT px, under a band naming the task's
        `preview_labels` columns."""
        images = np.asarray(jax.device_get(
            self._preview(state, global_batch(local_batch, self.mesh), self.constants)))
        images = images[: int(self.config.preview_examples)]
        grid = np.clip(np.round(np.concatenate(list(images), axis=0) * 255.0), 0, 255)
        grid = enlarge_to(grid.astype(np.uint8), PREVIEW_MIN_HEIGHT, rows=len(images))
        return label_columns(grid, getattr(self.task, "preview_labels", ("preview",)))


def _traced_for(platform: str, fn):
    """`fn` traced with the model layers' forms for `platform` (compile_target.compiling_for)."""
    @functools.wraps(fn)
    def traced(*args):
        with compiling_for(platform):
            return fn(*args)
    return traced


def _float_leaves(tree) -> list:
    return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]


def _all_finite(state) -> jax.Array:
    """bool scalar: every floating leaf of `state` is finite (one reduction on the devices)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in _float_leaves(state)]))


def _poisoned(state):
    return jax.tree.map(lambda x: jnp.full_like(x, jnp.nan)
                        if jnp.issubdtype(x.dtype, jnp.floating) else x, state)


def _write_config(workdir: str, config) -> None:
    """workdir/config.json: the resolved config of the run (a local dir or a bucket URL; written
    whole under a temporary name, or as one object upload)."""
    text = json.dumps(json.loads(config.to_json_best_effort()), indent=2, sort_keys=True)
    workdir_lib.makedirs(workdir)
    workdir_lib.write_bytes(workdir_lib.join(workdir, "config.json"), (text + "\n").encode())


def _with_staged_subject(config):
    """config with a bucket subject (data.subject=gs://...) replaced by this host's local copy
    (train/staging.py); other configs unchanged."""
    subject = str(config.get("data", {}).get("subject", "") or "")
    if not workdir_lib.is_url(subject):
        return config
    from metatalk_jax.train.staging import staged_copy
    local = config.copy_and_resolve_references()
    local.data.subject = staged_copy(subject)
    return local


def _first(iterable):
    for item in iterable:
        return item
    raise InputError("the evaluation split is empty")


def _check_resumable(checkpoints: Checkpoints, step: int, abstract_state, workdir: str) -> None:
    """InputError naming how checkpoint `step` differs from the state this config builds (the
    first difference and how many there are), before orbax fails somewhere inside a restore."""
    differences = checkpoints.state_differences(step, abstract_state)
    if differences:
        more = f" (the first of {len(differences)} differences)" if len(differences) > 1 else ""
        raise InputError(
            f"{checkpoints.manager.directory}/{step}: {differences[0]}{more}; this config "
            f"builds another model than the run's ({workdir_lib.join(workdir, 'config.json')}): "
            "resume with that config or use a new --workdir")


def train_and_evaluate(config, workdir: str, task: Task | None = None, *,
                       log=print) -> RunResult:
    """Trains `task` (default: from config.task) for config.total_steps steps in `workdir`,
    resuming from its latest checkpoint. Returns how far it got; raises NonFiniteError."""
    from metatalk_jax.train.trained_on import check_run_subject
    from metatalk_jax.train.tasks import make_task
    workdir = workdir_lib.resolve(workdir)     # gs://... stays a URL; a local path absolute
    workdir_lib.check_client(workdir)
    run_config, config = config, _with_staged_subject(config)
    task = task if task is not None else make_task(config)
    pid, nproc = jax.process_index(), jax.process_count()
    check_run_subject(config, workdir, write=pid == 0, log=log)   # before the work dir is touched
    trainer = Trainer(task, config)
    writer = MetricWriter(workdir, enabled=pid == 0)
    checkpoints = Checkpoints(workdir, every_steps=config.checkpoint_every_steps,
                              keep=config.keep_checkpoints, async_save=config.async_checkpoints)
    data = iter(task.train_batches(seed=int(config.seed), process_index=pid, process_count=nproc))
    start = checkpoints.latest_step()
    if start is not None:
        _check_resumable(checkpoints, start, trainer.abstract_state, workdir)
    # Written after that check, so a refused resume leaves the run's own config.json in place.
    if pid == 0:
        _write_config(workdir, run_config)
    if start is not None:
        # Any failure here (a corrupt file, a data iterator of another pipeline) keeps its own
        # type and traceback: the state's tree, shapes and dtypes were just found to fit.
        state, data = checkpoints.restore(start, trainer.abstract_state, trainer.shardings, data)
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
    log_every = int(config.log_every_steps)
    pending = PendingMetrics(good_through=start)
    interval = _LogInterval(int(config.batch_size))
    step = start
    try:
        # The loop never waits for the device except where it must: metrics are fetched at log
        # and save steps (PendingMetrics), and the next batch is read and sent to the devices
        # while the step just dispatched runs.
        batch = trainer.device_batch(next(data)) if step < total else None
        if nproc > 1 and step < total:
            _start_together(trainer, state, batch)
        while step < total:
            state, metrics = trainer.step(state, batch, step)
            step += 1
            if step == nan_at:
                state = trainer.poisoned(state)
            pending.add(step, metrics)
            progress.update(1)
            preempted = watch.reached(step)
            save = preempted or step == total or checkpoints.due(step)
            if step % log_every == 0 or step == total or save:
                interval.add(_fetch(pending, checkpoints))
            if step % log_every == 0 or step == total:
                writer.write_scalars(step, interval.scalars())
            if save:
                _save_checked(trainer, checkpoints, pending, step, state, data)
            if preempted:
                checkpoints.wait()
                log(f"preempted: saved step {step} in {checkpoints.manager.directory}; "
                    "run the same command to resume")
                return RunResult(step, "preempted", interval.last, eval_metrics)
            if config.eval_every_steps and (step % int(config.eval_every_steps) == 0
                                            or step == total):
                run_eval(step)
            if preview_batch is not None and (step % int(config.preview_every_steps) == 0
                                              or step == total):
                writer.write_images(step, {"preview": trainer.preview(state, preview_batch)})
            if step < total:
                batch = trainer.device_batch(next(data))
        if start == total and config.eval_every_steps:
            run_eval(step)
        return RunResult(step, "finished", interval.last, eval_metrics)
    finally:
        progress.close()
        watch.close()
        checkpoints.close()
        writer.close()
        sys.stdout.flush()


class _LogInterval:
    """Per-step metrics between two log lines -> their means, steps/s and images/s."""

    def __init__(self, images_per_step: int):
        self.images_per_step = images_per_step
        self.sums: dict[str, float] = {}
        self.count = 0
        self.last: dict = {}
        self.tick = time.perf_counter()

    def add(self, rows) -> None:
        for _, row in rows:
            for k, v in row.items():
                self.sums[k] = self.sums.get(k, 0.0) + v
            self.count += 1
            self.last = row

    def scalars(self) -> dict:
        n = max(self.count, 1)
        elapsed = time.perf_counter() - self.tick
        out = {k: v / n for k, v in self.sums.items()}
        out["steps_per_s"] = n / max(elapsed, 1e-9)
        out["images_per_s"] = out["steps_per_s"] * self.images_per_step
        self.sums, self.count, self.tick = {}, 0, time.perf_counter()
        return out


def _start_together(trainer, state, batch) -> None:
    """Compiles the train step, then waits for every process: hosts that finish their setup
    (staging, render cache, compile) minutes apart would otherwise meet at the first step's
    collectives, where XLA:CPU's gloo gives a late peer only 30 s."""
    from orbax.checkpoint import multihost
    key = jax.random.fold_in(trainer.train_key, 0)
    trainer._step.lower(state, batch, key, trainer.constants).compile()
    multihost.sync_global_processes("metatalk_first_train_step", timeout=3600)


def _stopped(err: NonFiniteError, checkpoints: Checkpoints) -> NonFiniteError:
    return NonFiniteError(
        f"{err}; stopped without saving. Last good checkpoint: step "
        f"{checkpoints.latest_step()} in {checkpoints.manager.directory}")


def _fetch(pending: PendingMetrics, checkpoints: Checkpoints) -> list:
    """The pending steps' metrics on the host; NonFiniteError naming the last checkpoint."""
    try:
        return pending.fetch()
    except NonFiniteError as err:
        raise _stopped(err, checkpoints) from None


def _save_checked(trainer, checkpoints, pending, step, state, data) -> None:
    """Saves `state` as `step` after checking it is finite (a bad state is never saved)."""
    try:
        pending.state_checked(step, trainer.state_is_finite(state))
    except NonFiniteError as err:
        raise _stopped(err, checkpoints) from None
    checkpoints.save(step, state, data, force=True)
