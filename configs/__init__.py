"""The stages' ml_collections configs, shipped with the package.

Each module has `get_config(arg)`, arg naming a variant (`renderer:tiny`, `renderer:gpu`, ...).
Every CLI's `--config` takes a name (`renderer`, `renderer:gpu`; the older spelling
`configs/renderer.py:gpu` works from any directory too) or the path of a config file of your own
(metatalk_jax/config_loading.py).
"""
