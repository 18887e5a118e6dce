"""Trained A2E and renderer checkpoints -> jit-compiled inference functions.

A checkpoint is named by the training work dir (its newest step is used) or by one step
directory `WORKDIR/checkpoints/<step>`; the model is rebuilt from the run's `config.json` and
only the parts inference needs are read (the renderer's generator parameters and BatchNorm
statistics, not the discriminator or the optimiser moments, which are 3-5x larger). Every
parameter's name and shape is checked against the model the config describes, so a checkpoint
of another task, architecture or size fails with one line naming the first difference.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from metatalk_jax.errors import InputError
from metatalk_jax.subject.conditioning import stack_window, with_reference
from metatalk_jax.train import workdir as workdir_lib
from metatalk_jax.train.checkpointing import CHECKPOINT_DIR, absl_warnings_held, complete_steps

CONFIG_JSON = "config.json"


class CheckpointError(InputError):
    """A checkpoint that cannot be used (one line: path and problem)."""


@dataclasses.dataclass(frozen=True)
class LocatedCheckpoint:
    step_dir: str          # .../checkpoints/<step>
    step: int
    config: ml_collections.ConfigDict


def locate_checkpoint(path: str, task: str) -> LocatedCheckpoint:
    """The step directory and training config of `path` (a work dir or a step dir, local or a
    bucket URL such as gs://bucket/run), which must be a run of `task` ("a2e" or "renderer")."""
    path = workdir_lib.resolve(path)          # a URL stays a URL (never a local `gs:` folder)
    workdir_lib.check_client(path)
    here = workdir_lib.epath_of(path)
    if not workdir_lib.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint (pass a training work dir or its "
                              f"{CHECKPOINT_DIR}/<step> directory)")
    if (here / CHECKPOINT_DIR).is_dir():
        workdir = path
        steps = complete_steps(path)      # a save a killed run left half-written is skipped
        if not steps:
            raise CheckpointError(f"{path}: the work dir has no finished checkpoint")
        step = steps[-1]
        step_dir = workdir_lib.join(path, CHECKPOINT_DIR, str(step))
    elif here.name.isdigit() and here.parent.name == CHECKPOINT_DIR:
        step_dir, step = path, int(here.name)
        workdir = os.fspath(here.parent.parent)
    else:
        raise CheckpointError(f"{path}: not a training work dir or checkpoint step directory")
    config_path = workdir_lib.join(workdir, CONFIG_JSON)
    if not workdir_lib.exists(config_path):
        raise CheckpointError(f"{config_path}: missing; the model cannot be rebuilt without the "
                              "run's config")
    config = ml_collections.ConfigDict(json.loads(workdir_lib.read_bytes(config_path)))
    if config.get("task") != task:
        raise CheckpointError(f"{path}: a {config.get('task')!r} checkpoint, not {task!r}")
    if not workdir_lib.epath_of(workdir_lib.join(step_dir, "state")).is_dir():
        raise CheckpointError(f"{step_dir}: not a complete checkpoint (no state/)")
    return LocatedCheckpoint(step_dir, step, config)


def read_parts(step_dir: str, names: tuple[str, ...]) -> dict:
    """{name: nested dict of numpy arrays} of the top-level state entries `names` only."""
    import orbax.checkpoint as ocp
    directory = workdir_lib.join(step_dir, "state")
    checkpointer = ocp.PyTreeCheckpointer()
    # orbax logs "WARNING:absl:Metadata file does not exist" when it opens an item of a
    # composite checkpoint on its own (the metadata file sits one level up): harmless.
    with absl_warnings_held():
        return _read_entries(checkpointer, directory, step_dir, names)


def _read_entries(checkpointer, directory, step_dir, names):
    import orbax.checkpoint as ocp
    try:
        tree = checkpointer.metadata(directory).item_metadata
        tree = getattr(tree, "tree", tree)
        missing = [n for n in names if n not in tree]
        if missing:
            raise CheckpointError(f"{step_dir}: the checkpoint has no {missing[0]!r} entry")
        wanted = {n: tree[n] for n in names}
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted,
                            is_leaf=lambda x: not isinstance(x, (dict, list, tuple)))
        return checkpointer.restore(directory, args=ocp.args.PyTreeRestore(
            item=wanted, restore_args=args, partial_restore=True))
    except CheckpointError:
        raise
    except Exception as err:  # orbax raises many types for unreadable or foreign directories
        raise CheckpointError(f"{step_dir}: unreadable checkpoint "
                              f"({str(err).splitlines()[0] if str(err) else type(err).__name__})"
                              ) from None


def check_tree(path: str, got, expected, what: str) -> None:
    """Raises CheckpointError naming the first key or shape where `got` (numpy leaves) differs
    from `expected` (ShapeDtypeStructs of the config's model)."""
    flat_got = {jax.tree_util.keystr(k): v for k, v in
                jax.tree_util.tree_flatten_with_path(got)[0]}
    flat_expected = {jax.tree_util.keystr(k): v for k, v in
                     jax.tree_util.tree_flatten_with_path(expected)[0]}
    for key, leaf in flat_expected.items():
        if key not in flat_got:
            raise CheckpointError(f"{path}: not a usable {what} checkpoint (no {key})")
        if tuple(np.shape(flat_got[key])) != tuple(leaf.shape):
            raise CheckpointError(f"{path}: not a usable {what} checkpoint ({key} has shape "
                                  f"{tuple(np.shape(flat_got[key]))}, the run's model "
                                  f"{tuple(leaf.shape)})")
    extra = sorted(set(flat_got) - set(flat_expected))
    if extra:
        raise CheckpointError(f"{path}: not a usable {what} checkpoint (unexpected {extra[0]})")


def _output_width(params: dict, path: str) -> int:
    """E, the width of the A2E's output layer (metatalk: head; audiodvp: a2e/fc)."""
    for keys in (("head",), ("a2e", "fc")):
        node = params
        for key in keys:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and "kernel" in node:
            return int(np.shape(node["kernel"])[-1])
    raise CheckpointError(f"{path}: not a usable A2E checkpoint (no output layer)")


@dataclasses.dataclass
class TrainedA2E:
    """apply(mel [B, W, 80, M], valid [B, W]) -> expressions [B, W, E] (jit-compiled)."""

    checkpoint: LocatedCheckpoint
    model: object
    params: dict
    window: int
    mel_columns: int
    expression_dim: int

    def __post_init__(self):
        model = self.model
        self._apply = jax.jit(lambda params, mel, valid: model.apply(
            {"params": params}, mel, valid, train=False))

    def __call__(self, mel, valid) -> jax.Array:
        return self._apply(self.params, jnp.asarray(mel), jnp.asarray(valid))


def load_a2e(path: str) -> TrainedA2E:
    """The A2E of a training run (configs/a2e.py) at `path`."""
    from metatalk_jax.models.a2e import make_a2e
    found = locate_checkpoint(path, "a2e")
    params = read_parts(found.step_dir, ("params",))["params"]
    expression_dim = _output_width(params, path)
    data = found.config.data
    model = make_a2e(found.config.model, expression_dim)
    window, columns = int(data.window), int(data.mel_columns)
    expected = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((1, window, 80, columns)), jnp.ones((1, window), bool)))
    check_tree(path, params, expected["params"], "A2E")
    return TrainedA2E(found, model, jax.device_put(params), window, columns, expression_dim)


@dataclasses.dataclass
class TrainedRenderer:
    """faces(renders, masks, valid[, references]) -> generated face crops (jit-compiled, eval
    mode: BatchNorm running statistics, no dropout). conditioning: how its input renders are
    drawn (subject.conditioning.CONDITIONINGS; runs from before the field are "audiodvp");
    mouth_reference: whether it also reads each frame's mouth reference (configs/renderer.py
    data.mouth_reference); reference_gap_s: the gap its training references kept."""

    checkpoint: LocatedCheckpoint
    generator: object
    variables: dict
    resolution: int
    window: int
    conditioning: str = "audiodvp"
    mouth_reference: bool = False

    def __post_init__(self):
        generator, half = self.generator, self.window // 2

        def faces(variables, renders, masks, valid, references):
            masks = masks.astype(jnp.float32) / 255.0
            inputs = stack_window(renders.astype(jnp.float32) / 255.0, masks, valid)
            if references is not None:
                inputs = with_reference(inputs, references.astype(jnp.float32) / 255.0,
                                        masks[:, half])
            out = generator.apply(variables, inputs, train=False).astype(jnp.float32)
            return jnp.clip(jnp.round((out + 1.0) * 127.5), 0, 255).astype(jnp.uint8)

        self._faces = jax.jit(faces)

    def faces(self, renders, masks, valid, references=None) -> jax.Array:
        """renders uint8 [B, W, R, R, 3], dilated mouth masks uint8 [B, W, R, R] ({0, 255}),
        valid bool [B, W] (window positions inside the video), references uint8 [B, R, R, 3]
        (the centre frames' mouth references; required exactly when mouth_reference) -> uint8
        [B, R, R, 3] faces, the training's input convention (subject/conditioning)."""
        if (references is not None) != self.mouth_reference:
            raise ValueError(f"this renderer {'needs' if self.mouth_reference else 'takes no'} "
                             "mouth references")
        return self._faces(self.variables, jnp.asarray(renders), jnp.asarray(masks),
                           jnp.asarray(valid),
                           None if references is None else jnp.asarray(references))


def load_renderer(path: str) -> TrainedRenderer:
    """The generator of a renderer training run (configs/renderer.py) at `path`."""
    from metatalk_jax.models.renderer import make_renderer
    found = locate_checkpoint(path, "renderer")
    parts = read_parts(found.step_dir, ("g_params", "g_stats"))
    data = found.config.data
    reference = bool(data.get("mouth_reference", False))
    generator, _ = make_renderer(found.config.model, reference=reference)
    resolution, window = int(data.resolution), int(data.window)
    channels = 3 * window + (3 if reference else 0)
    expected = jax.eval_shape(lambda: generator.init(
        jax.random.key(0), jnp.zeros((1, resolution, resolution, channels)), train=False))
    check_tree(path, parts["g_params"], expected["params"], "renderer")
    check_tree(path, parts["g_stats"], expected.get("batch_stats", {}), "renderer")
    variables = {"params": parts["g_params"], "batch_stats": parts["g_stats"]}
    return TrainedRenderer(found, generator, jax.device_put(variables), resolution, window,
                           data.get("conditioning", "audiodvp"), reference)
