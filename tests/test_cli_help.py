"""Every CLI that takes --config explains `--config.KEY=VALUE` in its --help, and the packaged
configs resolve by name from a directory that is not the repository (a user's own folder)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from metatalk_jax.config_loading import load_config
from tests.support.package_sources import REPO


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


def test_the_packaged_files_path_in_the_repository_is_the_packaged_config(tmp_path, monkeypatch):
    """`configs/renderer.py:gpu` in the repository's root names the top-level file itself: the
    packaged module is imported (as from any other directory), while a file of the user's own
    with that path is loaded as a file."""
    from metatalk_jax import config_loading
    monkeypatch.chdir(REPO)
    assert config_loading._config_module("configs/renderer.py").__name__ == \
        "metatalk_jax.configs.renderer"
    assert load_config("configs/renderer.py:gpu").data.resolution == 1024
    own = tmp_path / "configs" / "renderer.py"
    own.parent.mkdir()
    own.write_text("def get_config(arg=None):\n    return 'mine'\n")
    monkeypatch.chdir(tmp_path)
    assert config_loading._config_module("configs/renderer.py").__name__ == "_metatalk_config"
    assert load_config("configs/renderer.py:gpu") == "mine"
