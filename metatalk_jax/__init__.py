"""metatalk_jax: JAX/Flax implementation of Meta Talk (ICASSP 2022).

Audio-driven, lip-synchronised, high-definition talking faces from ~3 minutes of target video.
Every stage is a module runnable as `python -m metatalk_jax.<stage>`; see README.md.

Two subpackages sit at the repository's top level, as the design card lays it out: configs/ and
data_pipelines/ are metatalk_jax.configs and metatalk_jax.data_pipelines. An install (`pip
install .`, or `-e`) puts them there (pyproject.toml's [tool.setuptools.package-dir]); a
checkout imported as it is (`python -m metatalk_jax.<stage>` from the repository root,
PYTHONPATH=checkout) gets them from _CheckoutFolders below.
"""

import importlib.util
import os
import sys

__version__ = "0.1.0"

# The subpackages whose folders sit beside metatalk_jax/ in the repository (pyproject.toml's
# package-dir maps the same names; tests/test_install_layout.py keeps the two equal).
TOP_LEVEL_SUBPACKAGES = ("configs", "data_pipelines")


class _CheckoutFolders:
    """A meta path finder: metatalk_jax.<name> is the checkout's top-level <name>/ folder.

    First on sys.meta_path, so that a leftover metatalk_jax/<name>/__pycache__ of the old layout
    (git leaves ignored folders behind) is never taken for an empty namespace package."""

    def __init__(self, folders: dict):
        self.folders = folders

    def find_spec(self, fullname, path=None, target=None):
        folder = self.folders.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, os.path.join(folder, "__init__.py"), submodule_search_locations=[folder])


def _map_checkout_folders() -> None:
    """Registers _CheckoutFolders when this package is a checkout's metatalk_jax/ (the
    subpackages are not inside it; an installed package holds them and registers nothing)."""
    here = os.path.dirname(os.path.abspath(__file__))
    folders = {}
    for name in TOP_LEVEL_SUBPACKAGES:
        beside = os.path.join(os.path.dirname(here), name)
        if (not os.path.isfile(os.path.join(here, name, "__init__.py"))
                and os.path.isfile(os.path.join(beside, "__init__.py"))):
            folders[f"{__name__}.{name}"] = beside
    if folders and not any(getattr(f, "folders", None) == folders for f in sys.meta_path):
        sys.meta_path.insert(0, _CheckoutFolders(folders))


_map_checkout_folders()
