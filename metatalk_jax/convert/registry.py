"""Model name -> key-map function that turns that model's PyTorch state dict into Flax variables.

A key map has the signature

    convert(state_dict: dict[str, np.ndarray]) -> tuple[variables: dict, config: dict]

where `variables` is the Flax variable tree ({"params": ..., "batch_stats": ...}) and `config`
the architecture settings as JSON data (recorded in the converted checkpoint's meta.json). Maps
are named as "module:function" strings and imported only when asked for, so listing the models
(or converting one) does not import every model's Flax code.

Hook for new or experimental maps: `register("name", "package.module:function")` in Python, or
`python -m metatalk_jax.convert --key-map package.module:function NAME IN.pth OUT` on the
command line (the model is then recorded as NAME).
"""

from __future__ import annotations

import importlib
from typing import Callable

from metatalk_jax.errors import InputError

KEY_MAPS: dict[str, str] = {
    "wav2lip": "metatalk_jax.convert.wav2lip_keys:convert_wav2lip",
    "syncnet": "metatalk_jax.convert.syncnet_keys:convert_syncnet",
    "inception": "metatalk_jax.convert.inception_keys:convert_inception",
}

KeyMap = Callable[[dict], tuple[dict, dict]]


def known_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(KEY_MAPS)


def register(model: str, target: str) -> None:
    """Adds (or replaces) the key map for `model`; `target` is "module:function"."""
    _split_target(target)
    KEY_MAPS[model] = target


def _split_target(target: str) -> tuple[str, str]:
    module, sep, function = target.partition(":")
    if not sep or not module or not function:
        raise InputError(f"key map {target!r} must be written 'package.module:function'")
    return module, function


def load_key_map(target: str) -> KeyMap:
    """Imports the function named by a "module:function" string."""
    module_name, function_name = _split_target(target)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InputError(f"key map {target!r}: cannot import {module_name} ({error})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise InputError(f"key map {target!r}: {module_name} has no function {function_name}")
    return function


def key_map_for(model: str) -> KeyMap:
    """The registered key map of `model`; an unknown name lists the known ones."""
    if model not in KEY_MAPS:
        raise InputError(f"unknown model {model!r}; known models: {', '.join(known_models())}")
    return load_key_map(KEY_MAPS[model])
