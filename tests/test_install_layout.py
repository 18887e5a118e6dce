"""The repository's layout is the design card's (metatalk_jax/, configs/, data_pipelines/, tests/,
launch/, requirements.txt, README.md at the top level), and configs/ and data_pipelines/ are
still metatalk_jax.configs and metatalk_jax.data_pipelines however the package is run:

- installed (`pip install .`, non-editable, in a fresh venv): pyproject.toml's package-dir puts
  them inside the installed package, and `--config renderer:gpu` resolves from any directory;
- `make setup`'s editable install: setuptools' editable finder maps the two folders;
- a checkout imported as it is (`python -m metatalk_jax.<stage>` from the repository root, which
  shadows an installed copy): metatalk_jax/__init__.py's _CheckoutFolders finds them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

import metatalk_jax
from tests.support.package_sources import REPO, module_name, package_folders, \
    package_source_files

DESIGN_CARD_TOP_LEVEL = ("metatalk_jax", "configs", "data_pipelines", "tests", "launch",
                         "requirements.txt", "README.md")

# What the runs below print: where each package came from, and a config resolved by name.
WHERE = ("import json, metatalk_jax, metatalk_jax.configs as c, metatalk_jax.data_pipelines as d\n"
         "out = {'package': metatalk_jax.__file__, 'configs': c.__file__,"
         " 'data_pipelines': d.__file__}\n"
         "if 'resolve' in __import__('sys').argv:\n"
         "    from metatalk_jax.config_loading import load_config\n"
         "    config = load_config('renderer:gpu')\n"
         "    out['config'] = [config.data.resolution, config.model.arch]\n"
         "print(json.dumps(out))\n")


def _environment() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _where(python: str, cwd, *args: str) -> dict:
    done = subprocess.run([python, "-c", WHERE, *args], capture_output=True, text=True, cwd=cwd,
                          env=_environment(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _inside(path: str, folder) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(folder) + os.sep)


def test_the_top_level_is_the_design_cards():
    for name in DESIGN_CARD_TOP_LEVEL:
        assert os.path.exists(os.path.join(REPO, name)), name
    for name in metatalk_jax.TOP_LEVEL_SUBPACKAGES:
        assert os.path.isfile(os.path.join(REPO, name, "__init__.py")), name
        assert not os.path.exists(os.path.join(REPO, "metatalk_jax", name, "__init__.py")), name


def test_pyproject_installs_every_package_of_the_source_tree_and_maps_the_top_level_folders():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        setuptools_table = tomllib.load(f)["tool"]["setuptools"]
    packages = {module_name(inside) for inside in package_source_files()
                if inside.endswith("__init__.py")}
    assert sorted(setuptools_table["packages"]) == sorted(packages)
    assert setuptools_table["package-dir"] == {
        f"metatalk_jax.{name}": name for name in metatalk_jax.TOP_LEVEL_SUBPACKAGES}
    assert set(package_folders()) == {"", *metatalk_jax.TOP_LEVEL_SUBPACKAGES}


def test_this_environment_finds_the_top_level_folders_from_any_directory(tmp_path):
    """The test environment's own install (`make setup`: pip install -e), from a directory that
    is not the repository; and setuptools' editable finder, where there is one, maps both."""
    where = _where(sys.executable, tmp_path)
    assert where["package"] == os.path.join(REPO, "metatalk_jax", "__init__.py")
    assert where["configs"] == os.path.join(REPO, "configs", "__init__.py")
    assert where["data_pipelines"] == os.path.join(REPO, "data_pipelines", "__init__.py")
    editable = [f for f in sys.meta_path
                if getattr(f, "__module__", "").startswith("__editable___metatalk_jax")]
    for finder in editable:
        for name in metatalk_jax.TOP_LEVEL_SUBPACKAGES:
            spec = finder.find_spec(f"metatalk_jax.{name}")
            assert spec is not None and spec.origin == os.path.join(REPO, name, "__init__.py")


def test_a_checkout_run_as_it_is_finds_the_top_level_folders_over_a_leftover_old_folder(tmp_path):
    """No install at all (`python -S`: no site-packages), the checkout's root the working
    directory, and a metatalk_jax/configs/__pycache__ left by the old layout (git keeps ignored
    folders): metatalk_jax/__init__.py's finder still maps the top-level folders."""
    checkout = tmp_path / "checkout"
    (checkout / "metatalk_jax" / "configs" / "__pycache__").mkdir(parents=True)
    shutil.copy(os.path.join(REPO, "metatalk_jax", "__init__.py"), checkout / "metatalk_jax")
    for name in metatalk_jax.TOP_LEVEL_SUBPACKAGES:
        shutil.copytree(os.path.join(REPO, name), checkout / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import json, pkgutil, sys; import metatalk_jax.configs as c, "
            "metatalk_jax.data_pipelines as d; print(json.dumps([c.__file__, d.__file__, "
            "sorted(m.name for m in pkgutil.iter_modules(c.__path__)), "
            "[p for p in sys.path if 'site-packages' in p]]))")
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          cwd=checkout, env=_environment(), timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    configs, data_pipelines, names, site_dirs = json.loads(done.stdout)
    assert configs == str(checkout / "configs" / "__init__.py")
    assert data_pipelines == str(checkout / "data_pipelines" / "__init__.py")
    assert {"renderer", "a2e", "prepare"} <= set(names) and site_dirs == []


def _fresh_venv_with_the_package(tmp_path) -> tuple[str, str]:
    """(python, site-packages) of a new venv holding a non-editable install of this checkout's
    source, built as `pip install .` builds it (a wheel; no build isolation, no download). The
    dependencies come from this environment's site-packages through a .pth line, added after the
    install so pip never sees (nor touches) this environment's own metatalk_jax."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), source)
    for name in ("metatalk_jax", *metatalk_jax.TOP_LEVEL_SUBPACKAGES):
        shutil.copytree(os.path.join(REPO, name), source / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                            "--no-build-isolation", "--no-index", "-w", str(wheels),
                            str(source)], capture_output=True, text=True, env=_environment(),
                           timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("metatalk_jax-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for inside in package_source_files():
        assert f"metatalk_jax/{inside}" in names, inside

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = str(venv / "bin" / "python")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install",
                                "--quiet", "--no-deps", "--no-index", str(wheel)],
                               capture_output=True, text=True, env=_environment(), timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    site_packages = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    import site
    with open(os.path.join(site_packages, "dev_dependencies.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    return python, site_packages


def test_pip_install_in_a_fresh_venv_resolves_renderer_gpu_from_another_directory(tmp_path):
    """~4 s: a wheel built, a venv made, three short runs."""
    python, site_packages = _fresh_venv_with_the_package(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    where = _where(python, elsewhere, "resolve")
    for key in ("package", "configs", "data_pipelines"):
        assert _inside(where[key], os.path.join(site_packages, "metatalk_jax")), where
        assert not _inside(where[key], REPO), where
    assert where["config"] == [1024, "hd"]

    # The CLI: `--config renderer:gpu` resolves by name (the key then set is what it refuses).
    done = subprocess.run([python, "-m", "metatalk_jax.train", "--config", "renderer:gpu",
                           "--workdir", str(elsewhere / "run"), "--config.no_such_key=1"],
                          capture_output=True, text=True, cwd=elsewhere, env=_environment(),
                          timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "renderer: config has no key 'no_such_key'" in done.stderr, done.stderr[-3000:]

    # From the checkout's root its own package shadows the installed one, and its configs/ and
    # data_pipelines/ come with it (not a mix of the two copies).
    shadowed = _where(python, REPO, "resolve")
    assert shadowed["package"] == os.path.join(REPO, "metatalk_jax", "__init__.py")
    assert shadowed["configs"] == os.path.join(REPO, "configs", "__init__.py")
    assert shadowed["data_pipelines"] == os.path.join(REPO, "data_pipelines", "__init__.py")
    assert shadowed["config"] == [1024, "hd"]


def test_the_prepared_subject_cache_digest_reads_the_top_level_folders(monkeypatch):
    """tests/support/prepare_runner.py's source digest (the key of the cached prepared subject)
    reads every file of the package, configs/ and data_pipelines/ included."""
    import builtins

    from tests.support import prepare_runner
    read = []
    real_open = builtins.open

    def recording_open(path, *args, **kwargs):
        read.append(os.path.realpath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording_open)
    prepare_runner.source_digest()
    monkeypatch.undo()
    expected = {os.path.realpath(p) for p in package_source_files().values()}
    assert set(read) == expected
    for inside in ("configs/prepare.py", "data_pipelines/subject_frames.py", "prepare.py"):
        assert os.path.realpath(package_source_files()[inside]) in read, inside
    assert os.path.realpath(os.path.join(REPO, "configs", "prepare.py")) in read
