"""Loading ml_collections configs: `name[:variant]` or `path/to/config.py[:variant]`, with
`key=value` overrides.

A spec names one of the packaged configs (metatalk_jax.configs, the repository's top-level
configs/: `renderer`, `renderer:gpu`, `renderer.py:tiny`, or `configs/renderer.py:tiny`, from any
directory) or, when the path is an existing file, a config file of the user's own (a copy of a
packaged one, edited).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import pkgutil

from metatalk_jax.errors import InputError

# The packaged configs build on this module (configs/demo.py composes the others with
# load_config), so they are found by name at run time, never imported here by statement.
CONFIGS_PACKAGE = "metatalk_jax.configs"

OVERRIDE_HELP = ("any config key can be set as --config.KEY=VALUE (nested keys with dots, e.g. "
                 "--config.data.resolution=64; values are Python literals or plain strings)")


def _config_module(path: str):
    """The module of a config file path, or of a packaged config name. A path to the packaged
    file itself (`configs/renderer.py` in the repository's root) is the packaged module, as
    from any other directory."""
    name = os.path.splitext(os.path.basename(path))[0]
    packaged = path in (name, name + ".py") or os.path.normpath(os.path.dirname(path)) == "configs"
    if os.path.isfile(path) and not (packaged and _is_packaged_file(path, name)):
        module_spec = importlib.util.spec_from_file_location("_metatalk_config", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module
    names = packaged_config_names()
    if packaged and name in names:
        return importlib.import_module(f"{CONFIGS_PACKAGE}.{name}")
    raise InputError(f"{path}: config file not found (a packaged config is one of "
                     f"{', '.join(names)}, e.g. --config renderer:gpu)")


def _is_packaged_file(path: str, name: str) -> bool:
    """Whether `path` is the file of the packaged config `name`."""
    if name not in packaged_config_names():
        return False
    origin = importlib.util.find_spec(f"{CONFIGS_PACKAGE}.{name}").origin
    return os.path.samefile(path, origin)


def packaged_config_names() -> tuple[str, ...]:
    """Names of the configs shipped in metatalk_jax.configs (its modules), sorted."""
    package = importlib.import_module(CONFIGS_PACKAGE)
    return tuple(sorted(module.name for module in pkgutil.iter_modules(package.__path__)))


def load_config(spec: str, overrides=()):
    """The config of `spec` (module docstring): `get_config(variant)` with the `a.b=value`
    overrides applied.

    Values are parsed as Python literals when possible (numbers, booleans, tuples), else kept as
    strings. A missing file, an unknown variant, an unknown key or a value of the wrong type is
    an InputError naming it.
    """
    path, _, arg = spec.partition(":")
    config = _config_module(path).get_config(arg or None)
    return apply_overrides(config, overrides, where=path)


def apply_overrides(config, overrides, *, where: str = "config"):
    """Sets `a.b=value` strings on `config` in place (values parsed as Python literals when
    possible, else kept as strings); returns it."""
    values = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise InputError(f"config override {item!r} is not key=value")
        try:
            values[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            values[key] = raw
    return set_keys(config, values, where=where)


def set_keys(config, values: dict, *, where: str = "config"):
    """Sets {"a.b": value} on `config` in place; returns it. Every key must exist; an int or
    float key keeps its type (`steps=5.0` stays an int field set to 5)."""
    for key, value in values.items():
        raw = value
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            if p not in node:
                raise InputError(f"{where}: config has no key {key!r}")
            node = node[p]
        if leaf not in node:
            raise InputError(f"{where}: config has no key {key!r}")
        old = node[leaf]
        if isinstance(old, (int, float)) and not isinstance(old, bool):
            try:
                value = type(old)(value)
            except (TypeError, ValueError):
                raise InputError(f"{where}: config key {key!r} takes a number, got {raw!r}"
                                 ) from None
        try:
            node[leaf] = value
        except TypeError:   # ml_collections refuses a value of another type (5 for a str)
            raise InputError(f"{where}: config key {key!r} takes a {type(old).__name__}, got "
                             f"{raw!r}") from None
    return config


def _flat(config, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_keys(config, base) -> dict:
    """{"a.b": value} of the leaves where `config` differs from `base` (the same layout)."""
    mine, theirs = _flat(config), _flat(base)
    return {k: v for k, v in mine.items() if k not in theirs or theirs[k] != v}


def override_arguments(values: dict) -> list[str]:
    """{"a.b": value} -> ["--config.a.b=value", ...], as a shell would pass them."""
    def text(value):
        if isinstance(value, (tuple, list)):
            return "(" + ",".join(text(v) for v in value) + ("," if len(value) == 1 else "") + ")"
        return str(value)
    return [f"--config.{key}={text(value)}" for key, value in values.items()]


def config_overrides(parser, rest) -> list[str]:
    """`--config.a.b=value` arguments left over by argparse -> ["a.b=value", ...]; anything
    else is a usage error (argparse exits with status 2)."""
    overrides = []
    for item in rest:
        if not item.startswith("--config."):
            parser.error(f"unknown argument {item!r} ({OVERRIDE_HELP})")
        overrides.append(item[len("--config."):])
    return overrides
