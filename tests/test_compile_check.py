"""TPU fit check without a TPU (train/compile_check.py, `python -m metatalk_jax.train
--compile-only`): libtpu compiles for a described topology on this CPU machine.

- the report's accounting against analytic figures: a sharded matmul's FLOPs per chip
  (2 M N K / chips) and argument bytes per chip (its shards), and the roofline arithmetic;
- its task comes from the engine's one dispatch: an unknown task is the engine's error (that a
  shapes-only task gives the steps the real task's shapes: tests/test_task_construction.py);
- the tiny renderer and A2E configs compile for v5e:2x2 through the CLI with the plain `lax`
  convolutions, fit, and `--min-headroom 1` (impossible) exits 1; bad topologies exit 2.
~2-3 min on 2 cores (two TPU compiles of tiny train and eval steps).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

pytest.importorskip("libtpu", reason="libtpu (the dev extra) compiles for TPU topologies")

from metatalk_jax.train import compile_check  # noqa: E402
from tests.support.train_runs import REPO, cli_env  # noqa: E402

os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


def _sharded_matmul(m, k, n):
    """A bf16 matmul with its rows split over a v5e:2x2 topology: (jitted, x, w)."""
    devices = compile_check.topology_devices("v5e:2x2")
    assert len(devices) == 4 and devices[0].platform == "tpu"
    mesh = jax.sharding.Mesh(np.array(devices), ("data",))
    rows, full = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    x = jax.ShapeDtypeStruct((m, k), jnp.bfloat16, sharding=rows)
    w = jax.ShapeDtypeStruct((k, n), jnp.bfloat16, sharding=full)
    return jax.jit(lambda x, w: x @ w, out_shardings=rows), x, w


def test_report_accounting_matches_a_sharded_matmul():
    m, k, n = 4096, 2048, 1024
    jitted, x, w = _sharded_matmul(m, k, n)
    compiled, oom = compile_check._compile(jitted, x, w)
    assert oom is None
    chip = compile_check.CHIPS["v5e"]
    r = compile_check.step_report(compiled, chip, chips=4, batch_size=m)
    assert r["tflop_per_chip"] * 1e12 == pytest.approx(2 * (m // 4) * n * k, rel=0.01)
    assert r["tflop_per_step"] == pytest.approx(4 * r["tflop_per_chip"])
    assert r["arguments_gib"] * 2 ** 30 == (m // 4) * k * 2 + k * n * 2      # bf16 shards
    assert r["outputs_gib"] * 2 ** 30 == (m // 4) * n * 2
    assert r["roofline_s"] == max(r["tflop_per_chip"] * 1e12 / 197e12,
                                  r["gb_accessed_per_chip"] * 1e9 / 819e9)
    assert r["ridge_flop_per_byte"] == pytest.approx(197e12 / 819e9)


def test_repeated_topology_compiles_with_the_persistent_cache_on_do_not_warn(tmp_path):
    """The persistent cache on (as the tests and the training CLI have it), the same step
    compiled for a topology twice with the cache reset between (a second process): no
    "Error reading persistent compilation cache entry" warning, no entry written, and the
    cache setting as it was afterwards. Without persistent_cache_off the second compile warns."""
    import warnings
    from jax.experimental.compilation_cache import compilation_cache
    folder, min_s = jax.config.jax_compilation_cache_dir, \
        jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_compilation_cache_dir", str(tmp_path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    try:
        for _ in range(2):
            compilation_cache.reset_cache()
            jitted, x, w = _sharded_matmul(512, 256, 128)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                assert compile_check._compile(jitted, x, w)[1] is None
            assert not [c for c in caught if "compilation cache" in str(c.message)]
        assert list(tmp_path.iterdir()) == []
        assert jax.config.jax_enable_compilation_cache
    finally:
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_s)
        compilation_cache.reset_cache()


def test_an_unknown_task_is_the_engines_one_error():
    """The compile check builds its task through train/tasks.py, as the engine does."""
    import ml_collections

    from metatalk_jax.errors import InputError
    with pytest.raises(InputError, match="unknown training task 'nope' "
                                         r"\(known: renderer, a2e\)"):
        compile_check.compile_for_topology(ml_collections.ConfigDict({"task": "nope"}),
                                           "v5e:2x2")


def run_compile_only(spec, *args):
    return subprocess.run([sys.executable, "-m", "metatalk_jax.train", "--config", spec,
                           "--compile-only", *args], capture_output=True, text=True, cwd=REPO,
                          env={**cli_env(os.environ["METATALK_JAX_CACHE"]),
                               "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}, timeout=900)


@pytest.mark.slow  # ~1.5 min on 2 cores (libtpu compiles two tiny steps each): `make test-slow`
@pytest.mark.parametrize("spec", ["renderer:tiny", "a2e:tiny"])
def test_tiny_configs_compile_and_fit_a_small_topology(spec, tmp_path):
    report = tmp_path / "fit.json"
    done = run_compile_only(spec, "--topology", "v5e:2x2", "--report-json", str(report))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fits v5e:2x2: yes" in done.stdout
    result = json.loads(report.read_text())
    assert result["fits"] and result["chips"] == 4 and result["platform"] == "tpu"
    for step in ("train", "eval"):
        r = result[step]
        assert 0 < r["used_gib"] < r["hbm_gib"] and r["tflop_per_chip"] > 0
        assert r["used_gib"] == pytest.approx(r["arguments_gib"] + r["outputs_gib"]
                                              - r["aliased_gib"] + r["temporaries_gib"])
    # the train step donates its state: most of the arguments are aliased to the outputs
    assert result["train"]["aliased_gib"] > 0.5 * result["train"]["outputs_gib"]


@pytest.mark.slow  # ~30 s on 2 cores (a libtpu compile): `make test-slow`
def test_a_step_without_the_asked_headroom_exits_1():
    impossible = run_compile_only("a2e:tiny", "--topology", "v5e:2x2", "--min-headroom", "1.0")
    assert (impossible.returncode == 1
            and "fits v5e:2x2 with >= 100% HBM free: NO" in impossible.stdout)


def test_an_unknown_topology_is_one_line_exit_2():
    unknown = run_compile_only("a2e:tiny", "--topology", "v9z:2x2")
    assert unknown.returncode == 2 and "unknown TPU version" in unknown.stderr
    none = run_compile_only("a2e:tiny")
    assert none.returncode == 2 and "names none" in none.stderr
