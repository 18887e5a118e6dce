"""Helpers for the training-engine tests: the tiny renderer config on a prepared subject, CLI
runs in subprocesses (sharing one JAX compilation cache), and reading checkpoints back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jax
import numpy as np

from metatalk_jax.config_loading import load_config
from metatalk_jax.train.checkpointing import checkpoint_dir, read_state

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = "renderer:tiny"


# Every test run uses the same mesh layout on the 8 forced devices (data 4 x fsdp 2, small
# leaves sharded too), so one compiled step serves them all through the session's compilation
# cache; later overrides win.
MESH = ("mesh.fsdp=2", "mesh.min_fsdp_size=256")


def tiny_config(subject, *overrides):
    return load_config(TINY, [f"data.subject={subject}", *MESH, *overrides])


def cli_command(workdir, subject, *overrides) -> list[str]:
    return [sys.executable, "-m", "metatalk_jax.train", "--config", TINY, "--workdir",
            str(workdir), f"--config.data.subject={subject}",
            *(f"--config.{o}" for o in (*MESH, *overrides))]


def cli_env(cache_dir) -> dict:
    env = dict(os.environ)
    env["METATALK_JAX_CACHE"] = str(cache_dir)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(workdir, subject, *overrides, cache_dir, timeout=600):
    return subprocess.run(cli_command(workdir, subject, *overrides), capture_output=True,
                          text=True, cwd=REPO, env=cli_env(cache_dir), timeout=timeout)


def start_cli(workdir, subject, *overrides, cache_dir, log_path):
    log = open(log_path, "w")
    return subprocess.Popen(cli_command(workdir, subject, *overrides), stdout=log,
                            stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env=cli_env(cache_dir))


def metric_rows(workdir) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def wait_for_step(workdir, step: int, process, timeout: float = 300.0) -> None:
    """Polls metrics.jsonl until a training row with `step` >= step appears."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any("g_total" in r and r["step"] >= step for r in metric_rows(workdir)):
            return
        if process.poll() is not None:
            raise AssertionError(f"training exited early with {process.returncode}")
        time.sleep(0.2)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def checkpoint_steps(workdir) -> list[int]:
    root = checkpoint_dir(str(workdir))
    if not os.path.isdir(root):
        return []
    return sorted(int(n) for n in os.listdir(root) if n.isdigit())


def checkpoint_params(workdir, step: int) -> dict:
    """Generator and discriminator parameters of checkpoint `step` as flat {path: array}."""
    state = read_state(os.path.join(checkpoint_dir(str(workdir)), str(step)))
    return flat_params(state)


def flat_params(state) -> dict:
    """{'g_params/...': array} for the parameter trees of a GanState or its restored dict."""
    out = {}
    for name in ("g_params", "d_params"):
        tree = state[name] if isinstance(state, dict) else getattr(state, name)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            out[name + jax.tree_util.keystr(path)] = np.asarray(jax.device_get(leaf))
    return out


def bn_cancelled(key: str) -> bool:
    """The refine blocks' conv biases (AudioDVP's RefineModule keeps them) feed a train-mode
    BatchNorm, which subtracts the batch mean: their gradient is exactly zero in exact arithmetic,
    so what Adam does with them is normalise float rounding noise into +-lr steps. They differ
    between any two reduction orders (8 devices vs 1, JAX vs PyTorch) and carry no signal."""
    return "refine" in key and key.endswith("['bias']") and "conv_" in key


def relative_difference(a: dict, b: dict) -> float:
    """||a - b|| / ||b|| over all parameters except `bn_cancelled` ones (one global norm)."""
    assert a.keys() == b.keys(), set(a) ^ set(b)
    keys = [k for k in b if not bn_cancelled(k)]
    num = sum(float(np.sum((a[k] - b[k]).astype(np.float64) ** 2)) for k in keys)
    den = sum(float(np.sum(b[k].astype(np.float64) ** 2)) for k in keys)
    return (num / den) ** 0.5


def max_relative_difference(a: dict, b: dict) -> float:
    """max over leaves of ||a - b|| / ||b|| (same keys required)."""
    assert a.keys() == b.keys(), set(a) ^ set(b)
    return max(float(np.linalg.norm(a[k] - b[k]) / max(np.linalg.norm(b[k]), 1e-30)) for k in a)
