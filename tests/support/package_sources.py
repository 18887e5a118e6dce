"""Where the package's source lives in the repository: metatalk_jax/ and the top-level folders
installed inside it (configs/ is metatalk_jax.configs, data_pipelines/ is
metatalk_jax.data_pipelines: metatalk_jax.TOP_LEVEL_SUBPACKAGES, pyproject.toml's package-dir).
The tests that read the package's source (the layering test, the prepared-subject cache's
digest) walk these folders."""

from __future__ import annotations

import os

from metatalk_jax import TOP_LEVEL_SUBPACKAGES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def package_folders() -> dict[str, str]:
    """{path inside the package ("" for metatalk_jax itself, "configs", ...): its folder in the
    repository}."""
    folders = {"": os.path.join(REPO, "metatalk_jax")}
    folders.update({name: os.path.join(REPO, name) for name in TOP_LEVEL_SUBPACKAGES})
    return folders


def package_source_files() -> dict[str, str]:
    """{path inside the package ("subject/layout.py", "configs/renderer.py", "__init__.py"):
    file path} of every .py file of the package, in the order of the paths' folders then names
    (where each file sits once installed, whichever folder of the repository holds it)."""
    found = {}
    for inside, folder in package_folders().items():
        for root, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    relative = os.path.relpath(path, folder).replace(os.sep, "/")
                    found[f"{inside}/{relative}" if inside else relative] = path
    return dict(sorted(found.items(), key=lambda item: os.path.split(item[0])))


def module_name(inside: str) -> str:
    """The dotted module name of a path inside the package ("configs/__init__.py" ->
    "metatalk_jax.configs")."""
    parts = ["metatalk_jax", *inside[:-len(".py")].split("/")]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
