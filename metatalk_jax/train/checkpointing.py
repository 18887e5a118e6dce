"""Checkpoints: orbax CheckpointManager saving the train state and the data iterator together.

    WORKDIR/checkpoints/<step>/state/   the train state pytree (orbax StandardSave; sharded
                                        arrays are written by the processes that hold them)
    WORKDIR/checkpoints/<step>/data/    process_<i>-of-<n>.json: each process's grain iterator
                                        state, so a restarted run reads the same batches next

WORKDIR may be a local path or a URL (gs://bucket/run): orbax writes through epath and
tensorstore, so every host of a pod writes its shards into the same bucket. Locally, orbax writes
each step into a temporary directory and renames it when every process has finished (on GCS,
which has no rename, it writes a commit marker last), so a run killed mid-save (SIGKILL, preemption)
leaves the previous step as the latest complete checkpoint. Only the newest `keep` checkpoints are
kept.
"""

from __future__ import annotations

import contextlib
import logging

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from metatalk_jax.train import workdir as workdir_lib

CHECKPOINT_DIR = "checkpoints"


def checkpoint_dir(workdir: str) -> str:
    """`workdir`/checkpoints: absolute for a local work dir, the same URL scheme for a bucket
    (gs://b/r/checkpoints; never os.path.abspath'd into a local `gs:` folder)."""
    return workdir_lib.join(workdir_lib.resolve(workdir), CHECKPOINT_DIR)


@contextlib.contextmanager
def absl_warnings_held():
    """Holds the absl logger at ERROR inside the block: orbax warns (through absl) about things
    that are expected when a checkpoint is only read: a read-only manager's option changes, an
    item of a composite checkpoint opened on its own without its metadata file one level up."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl_logger.setLevel(level)


def complete_steps(workdir: str) -> list[int]:
    """The steps under `workdir`/checkpoints that a restart would restore from, ascending: only
    complete saves (a step directory that a killed run left mid-write, or whose commit marker is
    missing on GCS, is not one)."""
    workdir_lib.forget_cached_listings(workdir)
    with absl_warnings_held():
        options = ocp.CheckpointManagerOptions(read_only=True)
        manager = ocp.CheckpointManager(checkpoint_dir(workdir), options=options)
        try:
            return sorted(manager.all_steps())
        finally:
            manager.close()


class Checkpoints:
    """Save / restore of (train state, data iterator) under `workdir/checkpoints`.

    every_steps: a save when step % every_steps == 0 (and whenever `save(..., force=True)`);
    keep: how many of the newest checkpoints stay on disk.
    """

    def __init__(self, workdir: str, *, every_steps: int, keep: int, async_save: bool = True):
        self.every_steps = int(every_steps)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=int(keep), create=True, enable_async_checkpointing=async_save)
        workdir_lib.check_client(workdir)
        self.manager = ocp.CheckpointManager(
            checkpoint_dir(workdir), options=options, item_names=("state", "data"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def due(self, step: int) -> bool:
        return self.every_steps > 0 and step % self.every_steps == 0

    def save(self, step: int, state, data_iterator, *, force: bool = False) -> bool:
        """Starts saving `state` (a pytree of jax arrays) and the iterator's state as `step`;
        returns whether a save was started. The device-to-host copy happens before this
        returns, so the caller may donate `state` to the next step right away."""
        if not (force or self.due(step)) or step in self.manager.all_steps():
            return False
        return self.manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          data=grain.checkpoint.CheckpointSave(data_iterator)),
            force=True)

    def state_differences(self, step: int, abstract_state) -> list[str]:
        """How checkpoint `step`'s stored state (orbax's metadata: key paths, shapes, dtypes)
        differs from `abstract_state` (the ShapeDtypeStruct tree the config builds): one line
        per difference (`tree_differences`); [] when the checkpoint fits, and when its metadata
        cannot be read (a damaged checkpoint is no config of another model: the restore then
        fails with orbax's own error)."""
        directory = self.manager.directory / str(step) / "state"
        stored = ocp.PyTreeCheckpointer().metadata(directory).item_metadata
        stored = getattr(stored, "tree", stored)
        return [] if stored is None else tree_differences(stored, abstract_state)

    def restore(self, step: int, abstract_state, shardings, data_iterator):
        """(state, data_iterator) of checkpoint `step`, the state placed with `shardings`
        (a pytree matching `abstract_state`, the ShapeDtypeStruct tree from jax.eval_shape)."""
        target = jax.tree.map(
            lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
            abstract_state, shardings)
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                          data=grain.checkpoint.CheckpointRestore(data_iterator)))
        return restored["state"], restored["data"]

    def wait(self) -> None:
        """Blocks until any save in flight is on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _leaf_table(tree) -> dict[str, tuple[tuple[int, ...], str]]:
    """{"params.dense.kernel": (shape, dtype name)} of every array leaf of `tree`. Dict keys,
    sequence indices and dataclass fields all become dotted names, so orbax's stored tree
    (nested dicts and lists) and the live state (dataclasses, namedtuples) name a leaf alike."""
    def name(entry) -> str:
        for attribute in ("key", "idx", "name"):
            if hasattr(entry, attribute):
                return str(getattr(entry, attribute))
        return str(entry)

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {".".join(name(entry) for entry in path): (
                tuple(int(n) for n in getattr(leaf, "shape", ())),
                str(np.dtype(leaf.dtype)) if hasattr(leaf, "dtype") else type(leaf).__name__)
            for path, leaf in leaves}


def tree_differences(stored, wanted) -> list[str]:
    """How the checkpoint tree `stored` differs from the state `wanted`, one line each: key
    paths `wanted` has and `stored` lacks ("missing"), then those only `stored` has
    ("unexpected"), then leaves whose shape or dtype differ (checkpoint vs config)."""
    have, want = _leaf_table(stored), _leaf_table(wanted)
    lines = [f"{key} is missing from the checkpoint" for key in want if key not in have]
    lines += [f"{key} is in the checkpoint but not in the config's state"
              for key in have if key not in want]
    for key, (shape, dtype) in want.items():
        if key not in have:
            continue
        stored_shape, stored_dtype = have[key]
        if stored_shape != shape:
            lines.append(f"{key} has shape {stored_shape} in the checkpoint, {shape} in the "
                         "config's model")
        if stored_dtype != dtype:
            lines.append(f"{key} has dtype {stored_dtype} in the checkpoint, {dtype} in the "
                         "config's model")
    return lines


def read_state(path: str):
    """The state pytree of one checkpoint step directory (`.../checkpoints/<step>`, a local path
    or a URL such as gs://bucket/run/checkpoints/70000) as nested dicts of numpy arrays on this
    host, whatever devices or processes wrote it (for tests and tools such as export)."""
    workdir_lib.check_client(path)
    workdir_lib.forget_cached_listings(path)         # another process may have written it
    directory = workdir_lib.join(workdir_lib.resolve(path), "state")
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(directory).item_metadata
    tree = getattr(tree, "tree", tree)
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree,
                        is_leaf=lambda x: not isinstance(x, (dict, list, tuple)))
    return checkpointer.restore(directory, args=ocp.args.PyTreeRestore(restore_args=args))
