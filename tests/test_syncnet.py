"""SyncNet v2: the Flax model and its key map against a PyTorch mirror of syncnet_python's
SyncNetModel.S (tests/support/torch_syncnet_reference.py), through a legacy-format torch.save and
the convert CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from metatalk_jax.convert.syncnet_keys import convert_syncnet, load_syncnet  # noqa: E402
from metatalk_jax.models import syncnet as sn                               # noqa: E402
from tests.support.torch_syncnet_reference import TorchSyncNet, randomize           # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Read off joonson/syncnet_python SyncNetModel.py by hand (torch layouts [O,I,*k]).
REFERENCE_SHAPES = {
    "netcnnaud.0.weight": (64, 1, 3, 3),
    "netcnnaud.4.weight": (192, 64, 3, 3),
    "netcnnaud.18.weight": (512, 256, 5, 4),
    "netcnnaud.19.running_var": (512,),
    "netcnnlip.0.weight": (96, 3, 5, 7, 7),
    "netcnnlip.4.weight": (256, 96, 1, 5, 5),
    "netcnnlip.14.weight": (256, 256, 1, 3, 3),
    "netcnnlip.18.weight": (512, 256, 1, 6, 6),
    "netfcaud.0.weight": (512, 512),
    "netfcaud.1.running_mean": (512,),
    "netfclip.3.weight": (1024, 512),
    "netfclip.3.bias": (1024,),
}
# 2 trunks x 6 (conv w/b + BN w/b/mean/var/num_batches_tracked) + 2 heads x (2 linears x 2 + BN 5)
REFERENCE_STATE_DICT_ENTRIES = 2 * 6 * 7 + 2 * 9


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(torch model in eval mode, legacy-format .model path, audio [2,13,20,1], lips
    [2,5,224,224,3], torch audio features [2,1024], torch lip features [2,1024])."""
    model = randomize(TorchSyncNet(), seed=5).eval()
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
    # syncnet_v2.model is a bare state dict written by an old torch (pre-zip format).
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)
    rng = np.random.default_rng(11)
    audio = (rng.standard_normal((2, 13, 20, 1)) * 8).astype(np.float32)
    lips = rng.uniform(0, 255, (2, 5, 224, 224, 3)).astype(np.float32)
    with torch.inference_mode():
        aud = model.forward_aud(torch.from_numpy(audio.transpose(0, 3, 1, 2))).numpy()
        lip = model.forward_lip(torch.from_numpy(lips.transpose(0, 4, 1, 2, 3))).numpy()
    return model, path, audio, lips, aud, lip


def assert_close_relative(actual, expected, rtol=1e-4):
    """max |actual - expected| <= rtol * max |expected| (per array: embeddings pass through zero,
    so an elementwise ratio would be ill-defined)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    worst = float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))
    assert worst <= rtol, f"max error {worst:.3g} of the largest value > {rtol}"


def test_mirror_has_the_reference_state_dict():
    sd = TorchSyncNet().state_dict()
    assert len(sd) == REFERENCE_STATE_DICT_ENTRIES
    for key, shape in REFERENCE_SHAPES.items():
        assert tuple(sd[key].shape) == shape, key


def test_tables_count_the_reference_parameters_and_variables():
    model = TorchSyncNet()
    learnable = sum(p.numel() for p in model.parameters())
    assert learnable == sn.count_parameters() == sn.REFERENCE_PARAMETER_COUNT
    # The converted tree has exactly the shapes Flax's own init makes.
    variables, _ = convert_syncnet({k: v.numpy() for k, v in model.state_dict().items()})
    shapes = jax.eval_shape(sn.init_variables)
    assert jax.tree.map(lambda a: tuple(a.shape), shapes) == \
        jax.tree.map(lambda a: tuple(np.shape(a)), variables)


def test_converted_checkpoint_matches_torch_features(reference, tmp_path):
    _, path, audio, lips, expected_aud, expected_lip = reference
    out_dir = tmp_path / "converted"
    done = subprocess.run([sys.executable, "-m", "metatalk_jax.convert", "syncnet", str(path),
                           str(out_dir)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    model, variables = load_syncnet(str(out_dir))
    got_aud = jax.jit(lambda v, x: model.apply(v, x, method=sn.SyncNet.forward_aud))(
        variables, audio)
    got_lip = jax.jit(lambda v, x: model.apply(v, x, method=sn.SyncNet.forward_lip))(
        variables, lips)
    assert got_aud.shape == got_lip.shape == (2, sn.EMBEDDING_SIZE)
    # Distinct inputs give distinct embeddings (a degenerate net would pass trivially).
    assert np.abs(expected_lip[0] - expected_lip[1]).max() > 0.01 * np.abs(expected_lip).max()
    assert_close_relative(got_aud, expected_aud)
    assert_close_relative(got_lip, expected_lip)

    # the .model file read directly (no torch) gives identical variables
    _, direct = load_syncnet(str(path))
    for a, b in zip(jax.tree.leaves(direct), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(a, b)


def test_wrong_checkpoint_is_reported_with_the_key(reference, tmp_path):
    model = reference[0]
    sd = {k: v for k, v in model.state_dict().items() if k != "netcnnlip.8.weight"}
    bad = tmp_path / "bad.model"
    torch.save(sd, bad)
    with pytest.raises(ValueError, match=r"bad\.model: not a usable SyncNet checkpoint "
                                         r"\(.*netcnnlip\.8\.weight"):
        load_syncnet(str(bad))
    extra = dict(model.state_dict(), **{"netextra.0.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match="left weights unused: netextra.0.weight"):
        convert_syncnet({k: v.numpy() for k, v in extra.items()})
    with pytest.raises(FileNotFoundError, match="no SyncNet checkpoint"):
        load_syncnet(str(tmp_path / "missing.model"))


def test_input_shapes_are_checked():
    variables = jax.eval_shape(sn.init_variables)
    with pytest.raises(ValueError, match=r"lips must be \[B,5,224,224,3\]"):
        jax.eval_shape(lambda v: sn.SyncNet().apply(v, np.zeros((1, 5, 96, 96, 3), np.float32),
                                                    method=sn.SyncNet.forward_lip), variables)
