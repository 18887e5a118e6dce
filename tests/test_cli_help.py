"""Every CLI that takes --config explains `--config.KEY=VALUE` in its --help, and the packaged
configs resolve by name from a directory that is not the repository (a user's own folder)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from metatalk_jax.config_loading import load_config


@pytest.mark.parametrize("module", ["prepare", "pseudo", "train", "demo"])
def test_help_explains_config_overrides(module, tmp_path):
    done = subprocess.run([sys.executable, "-m", f"metatalk_jax.{module}", "--help"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--config.KEY=VALUE" in " ".join(done.stdout.split()), done.stdout


@pytest.mark.parametrize("spec", ["a2e:cpu", "renderer:cpu", "prepare:cpu", "configs/a2e.py:cpu"])
def test_packaged_configs_resolve_by_name_outside_the_repository(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(spec, ["seed=7"] if not spec.startswith("prepare") else [])
    assert config is not None and len(config.keys()) > 3
