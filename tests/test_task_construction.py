"""One constructor per task, for the engine and the compile check (train/tasks.py make_task).

A task built with shapes_only=True (what `--compile-only` compiles: from the config alone, no
subject or data read) gives the steps the state, constants and batch of the task the engine
builds from the subject, and every step traces to the same outputs; both are `Task`s
(train/task_protocol.py). An unknown config.task is one InputError, whichever way it is built.
~1 min on 2 cores (the carphone subject's preparation, shared with the training tests, and
tracing the tiny steps).
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np
import pytest

from metatalk_jax.config_loading import load_config
from metatalk_jax.errors import InputError
from metatalk_jax.train.compile_check import global_batch_spec
from metatalk_jax.train.task_protocol import Task
from metatalk_jax.train.tasks import make_task
from tests.support.train_runs import tiny_config


def abstract(tree) -> list:
    """[(path, shape, dtype)] of a pytree's leaves (arrays or ShapeDtypeStructs)."""
    return [(jax.tree_util.keystr(path), tuple(leaf.shape), np.dtype(leaf.dtype))
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def step_outputs(task, batch) -> dict:
    """{step name: abstract outputs} of init_state and every step on the abstract `batch`."""
    key = jax.random.key(0)
    state = jax.eval_shape(task.init_state, key)
    constants = task.constants()
    return {"init_state": abstract(state), "constants": abstract(constants),
            "train_step": abstract(jax.eval_shape(task.train_step, state, batch, key, constants)),
            "eval_step": abstract(jax.eval_shape(task.eval_step, state, batch, constants)),
            "preview_step": abstract(jax.eval_shape(task.preview_step, state, batch, constants))}


def assert_shapes_only_matches_the_engines_task(config) -> None:
    real, shaped = make_task(config), make_task(config, shapes_only=True)
    assert isinstance(real, Task) and isinstance(shaped, Task)
    assert shaped.example_spec() == real.example_spec()
    # The spec is the data pipeline's: one real batch has exactly its keys, shapes and dtypes.
    b = int(config.batch_size)
    rows = next(iter(real.train_batches(seed=0, process_index=0, process_count=1)))
    assert ({k: (v.shape, np.dtype(v.dtype)) for k, v in rows.items()}
            == {k: ((b, *shape), np.dtype(dtype))
                for k, (shape, dtype) in shaped.example_spec().items()})
    # The compile check's abstract batch, given to both tasks' steps.
    batch = global_batch_spec(shaped.example_spec(), b, sharding=None)
    assert step_outputs(shaped, batch) == step_outputs(real, batch)
    assert shaped.preview_labels == real.preview_labels


@pytest.mark.parametrize("reference", [False, True])
def test_shapes_only_renderer_matches_the_engines(carphone_subject, reference):
    assert_shapes_only_matches_the_engines_task(
        tiny_config(str(carphone_subject[0]), f"data.mouth_reference={reference}"))


@pytest.fixture(scope="module")
def a2e_subject(tmp_path_factory) -> str:
    """A synthetic A2E subject (tests/test_a2e.py's): 6 s of speech, E = 4."""
    from tests.test_a2e import write_subject
    path = os.path.join(tmp_path_factory.mktemp("a2e"), "subject")
    write_subject(path, 6.0, np.random.default_rng(0))
    return path


def test_shapes_only_a2e_matches_the_engines(a2e_subject):
    """Without the subject, E is config.model.expression_dim: here the subject's."""
    from tests.test_a2e import E
    config = load_config("a2e:tiny", [f"data.subject={a2e_subject}", "data.model=procedural",
                                      f"model.expression_dim={E}"])
    assert_shapes_only_matches_the_engines_task(config)


@pytest.mark.parametrize("shapes_only", [False, True])
def test_an_unknown_task_is_one_input_error(shapes_only):
    with pytest.raises(InputError,
                       match=r"unknown training task 'nope' \(known: renderer, a2e\)"):
        make_task(ml_collections.ConfigDict({"task": "nope"}), shapes_only=shapes_only)
