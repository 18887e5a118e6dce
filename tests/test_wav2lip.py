"""Wav2Lip generator: the Flax model, its key map and loader against a PyTorch mirror of the
reference (tests/support/torch_wav2lip_reference.py), and the inference input masking."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from metatalk_jax.convert import torch_layouts                         # noqa: E402
from metatalk_jax.convert.wav2lip_keys import convert_wav2lip, load_wav2lip  # noqa: E402
from metatalk_jax.models import wav2lip as w2l                          # noqa: E402
from tests.support.torch_wav2lip_reference import (TorchWav2Lip, randomize,     # noqa: E402
                                           save_wav2lip_style_checkpoint)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Hand-checked against Rudrabha/Wav2Lip models/wav2lip.py + models/conv.py (read, not derived
# from either transcription): torch shapes of a few state_dict entries.
REFERENCE_SHAPES = {
    "face_encoder_blocks.0.0.conv_block.0.weight": (16, 6, 7, 7),      # Conv2d(6,16,7,1,3)
    "face_encoder_blocks.2.3.conv_block.0.weight": (64, 64, 3, 3),     # 4th conv of block 2
    "face_encoder_blocks.6.1.conv_block.0.weight": (512, 512, 1, 1),
    "audio_encoder.3.conv_block.0.weight": (64, 32, 3, 3),             # stride (3,1)
    "audio_encoder.12.conv_block.1.running_var": (512,),
    "face_decoder_blocks.1.0.conv_block.0.weight": (1024, 512, 3, 3),  # ConvTranspose [I,O,k,k]
    "face_decoder_blocks.6.0.conv_block.0.weight": (160, 64, 3, 3),
    "face_decoder_blocks.6.2.conv_block.1.num_batches_tracked": (),
    "output_block.0.conv_block.0.weight": (32, 80, 3, 3),
    "output_block.1.weight": (3, 32, 1, 1),                            # plain conv, no BN
    "output_block.1.bias": (3,),
}
# 50 conv+BN layers x 7 entries (conv w/b, BN w/b/mean/var/num_batches_tracked) + the plain
# conv's 2.
REFERENCE_STATE_DICT_ENTRIES = 50 * 7 + 2


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(torch model in eval mode, its Wav2Lip-style .pth path, audio [2,80,16,1], face
    [2,96,96,6], torch eval output [2,96,96,3])."""
    torch.manual_seed(0)
    model = randomize(TorchWav2Lip(), seed=3).eval()
    path = tmp_path_factory.mktemp("wav2lip") / "wav2lip.pth"
    save_wav2lip_style_checkpoint(model, path)
    rng = np.random.default_rng(7)
    audio = rng.uniform(-4, 4, (2, 80, 16, 1)).astype(np.float32)
    face = rng.uniform(0, 1, (2, 96, 96, 6)).astype(np.float32)
    with torch.inference_mode():
        out = model(torch.from_numpy(audio.transpose(0, 3, 1, 2)),
                    torch.from_numpy(face.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    return model, path, audio, face, out


def assert_close_relative(actual, expected, rtol=1e-4):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    worst = float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), 1e-6)))
    assert worst <= rtol, f"max relative error {worst:.3g} > {rtol}"


# -- the mirror and the architecture tables -----------------------------------------------------

def test_torch_mirror_has_the_reference_state_dict():
    sd = TorchWav2Lip().state_dict()
    assert len(sd) == REFERENCE_STATE_DICT_ENTRIES
    for key, shape in REFERENCE_SHAPES.items():
        assert tuple(sd[key].shape) == shape, key


def test_layer_tables_match_the_mirror_and_parameter_count():
    model = TorchWav2Lip()
    sd = model.state_dict()
    expected_keys = set()
    for path, spec in w2l.reference_layers():
        if spec.batch_norm:
            expected_keys |= {f"{path}.conv_block.0.{n}" for n in ("weight", "bias")}
            expected_keys |= {f"{path}.conv_block.1.{n}" for n in
                              ("weight", "bias", "running_mean", "running_var",
                               "num_batches_tracked")}
        else:
            expected_keys |= {f"{path}.weight", f"{path}.bias"}
    assert expected_keys == set(sd)
    learnable = sum(p.numel() for p in model.parameters())
    assert learnable == w2l.count_parameters() == w2l.REFERENCE_PARAMETER_COUNT == 36_298_035
    buffers = sum(v.numel() for k, v in sd.items() if k.endswith(("running_mean", "running_var")))
    assert w2l.count_parameters(include_batch_norm_stats=True) == learnable + buffers


# -- building blocks ----------------------------------------------------------------------------

@pytest.mark.parametrize("k,s,p,op,size", [(3, 2, 1, 1, 3), (3, 2, 1, 1, 6), (3, 1, 0, 0, 1),
                                           (4, 2, 1, 0, 4), (3, 3, 1, 2, 4), (3, 2, 1, 0, 5)])
@pytest.mark.parametrize("by_phases", [True, False])
def test_conv_transpose_equals_torch(k, s, p, op, size, by_phases):
    layer = torch.nn.ConvTranspose2d(5, 4, k, s, p, op, bias=False)
    x = np.random.default_rng(size).standard_normal((2, 5, size, size)).astype(np.float32)
    with torch.no_grad():
        expected = layer(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    kernel = torch_layouts.conv_transpose_kernel(layer.weight.detach().numpy())
    got = w2l.conv_transpose_torch(x.transpose(0, 2, 3, 1), kernel, s, p, op, by_phases=by_phases)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


# -- full model parity --------------------------------------------------------------------------

def test_converted_checkpoint_matches_torch_eval(reference, tmp_path):
    _, pth, audio, face, expected = reference
    out_dir = tmp_path / "converted"
    done = subprocess.run([sys.executable, "-m", "metatalk_jax.convert", "wav2lip", str(pth),
                           str(out_dir)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert expected.std() > 0.1      # outputs spread over (0,1), not all ~0.5
    model, variables = load_wav2lip(str(out_dir))
    got = jax.jit(model.apply)(variables, audio, face)
    assert got.shape == (2, 96, 96, 3)
    assert_close_relative(got, expected)

    # the .pth read directly (no torch) gives the same variables
    _, direct = load_wav2lip(str(pth))
    for a, b in zip(jax.tree.leaves(direct), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(a, b)

    # transposed convs computed per output phase give the same result
    by_phases = w2l.Wav2Lip(transpose_by_phases=True)
    assert_close_relative(jax.jit(by_phases.apply)(variables, audio, face), expected)


def test_folded_batch_norm_equals_unfolded_and_torch(reference):
    model, _, audio, face, expected = reference
    variables, _ = convert_wav2lip({k: v.numpy() for k, v in model.state_dict().items()})
    folded_model, folded = w2l.Wav2Lip(folded_batch_norm=True), w2l.fold_batch_norm(variables)
    assert "batch_stats" not in folded
    assert all(set(layer) == {"conv"} for layer in folded["params"].values())
    got = jax.jit(folded_model.apply)(folded, audio, face)
    assert_close_relative(got, expected)


@pytest.mark.slow  # ~30 s on 2 cores (the eval-mode parity above stays in the default run)
def test_train_mode_batch_norm_matches_torch_train_forward(reference):
    """use_running_average=False normalises with batch statistics as torch's train mode. At the
    1x1 layers a batch of B gives B values per channel, so fp32 results are ill-conditioned at
    batch 2 (torch fp32 vs fp64 differ by 7e-3 there, 2e-4 at batch 8): batch 8 against torch
    in float64."""
    model, _, _, _, _ = reference
    variables, _ = convert_wav2lip({k: v.numpy() for k, v in model.state_dict().items()})
    rng = np.random.default_rng(8)
    audio = rng.uniform(-4, 4, (8, 80, 16, 1)).astype(np.float32)
    face = rng.uniform(0, 1, (8, 96, 96, 6)).astype(np.float32)
    train_model = TorchWav2Lip().double().train()
    train_model.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = train_model(torch.from_numpy(audio.transpose(0, 3, 1, 2)).double(),
                               torch.from_numpy(face.transpose(0, 3, 1, 2)).double())
    expected = expected.numpy().transpose(0, 2, 3, 1)
    got, updates = jax.jit(lambda v, a, f: w2l.Wav2Lip().apply(
        v, a, f, use_running_average=False, mutable=["batch_stats"]))(variables, audio, face)
    np.testing.assert_allclose(np.asarray(got), expected, atol=2e-3)
    # running means moved towards the batch means as torch's do (momentum 0.1)
    np.testing.assert_allclose(np.asarray(updates["batch_stats"]["audio_encoder_0"]["bn"]["mean"]),
                               train_model.audio_encoder[0].conv_block[1].running_mean.numpy(),
                               rtol=1e-4, atol=1e-6)


# -- bad checkpoints ----------------------------------------------------------------------------

def _numpy_state_dict():
    return {"module." + k: v.numpy() for k, v in TorchWav2Lip().state_dict().items()}


def test_missing_key_is_named():
    sd = _numpy_state_dict()
    del sd["module.face_decoder_blocks.3.1.conv_block.1.running_var"]
    with pytest.raises(KeyError, match=r"face_decoder_blocks\.3\.1\.conv_block\.1\.running_var"):
        convert_wav2lip(sd)


def test_wrong_shape_is_named():
    sd = _numpy_state_dict()
    sd["module.audio_encoder.3.conv_block.0.weight"] = np.zeros((64, 32, 5, 5), np.float32)
    with pytest.raises(ValueError,
                       match=r"audio_encoder\.3\.conv_block\.0\.weight.*\(64, 32, 3, 3\)"):
        convert_wav2lip(sd)


def test_unknown_extra_key_is_named():
    sd = _numpy_state_dict()
    sd["module.face_encoder_blocks.7.0.conv_block.0.weight"] = np.zeros((1,), np.float32)
    with pytest.raises(ValueError, match=r"unused.*face_encoder_blocks\.7\.0"):
        convert_wav2lip(sd)


def test_bad_input_shapes_raise():
    variables = jax.eval_shape(w2l.Wav2Lip().init, jax.random.PRNGKey(0),
                               np.zeros((1, 80, 16, 1), np.float32),
                               np.zeros((1, 96, 96, 6), np.float32))
    with pytest.raises(ValueError, match=r"audio must be \[B,80,16,1\]"):
        jax.eval_shape(w2l.Wav2Lip().apply, variables, np.zeros((1, 1, 80, 16), np.float32),
                       np.zeros((1, 96, 96, 6), np.float32))
    with pytest.raises(ValueError, match=r"face must be \[B,96,96,6\]"):
        jax.eval_shape(w2l.Wav2Lip().apply, variables, np.zeros((1, 80, 16, 1), np.float32),
                       np.zeros((1, 96, 96, 3), np.float32))


# -- inputs and outputs -------------------------------------------------------------------------

def test_wav2lip_inputs_mask_the_lower_half_in_bgr():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    reference = rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    got = np.asarray(w2l.wav2lip_inputs(frames, reference))
    assert got.shape == (3, 96, 96, 6) and got.dtype == np.float32
    # inference.py on cv2 (BGR) frames: img_masked[:, 48:] = 0; concat(masked, ref) / 255
    bgr = frames[..., [2, 1, 0]].astype(np.float64)
    np.testing.assert_allclose(got[:, :48, :, :3], bgr[:, :48] / 255.0, rtol=1e-6)
    assert np.all(got[:, 48:, :, :3] == 0)
    np.testing.assert_allclose(got[..., 3:], reference[..., [2, 1, 0]] / 255.0, rtol=1e-6)
    # a red pixel (RGB 255,0,0) is channel 2 in the BGR input
    red = np.zeros((1, 96, 96, 3), np.uint8)
    red[..., 0] = 255
    assert np.all(np.asarray(w2l.wav2lip_inputs(red, red))[0, 0, 0] == [0, 0, 1, 0, 0, 1])


def test_wav2lip_inputs_reject_bad_frames():
    ok = np.zeros((2, 96, 96, 3), np.uint8)
    with pytest.raises(ValueError, match="frames must be uint8"):
        w2l.wav2lip_inputs(ok.astype(np.float32), ok)
    with pytest.raises(ValueError, match=r"reference must be \[B,96,96,3\]"):
        w2l.wav2lip_inputs(ok, np.zeros((2, 64, 64, 3), np.uint8))


def test_output_frames_are_rgb_uint8():
    pred_bgr = np.zeros((1, 96, 96, 3), np.float32)
    pred_bgr[..., 0] = 1.0          # blue in BGR
    pred_bgr[..., 1] = 0.5
    frames = w2l.wav2lip_output_frames(pred_bgr)
    assert frames.dtype == np.uint8
    # int(0.5 * 255) = 127, as the reference truncates
    assert tuple(frames[0, 0, 0]) == (0, 127, 255)
