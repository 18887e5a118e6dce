"""Safe PyTorch checkpoint import: files written by torch itself are read back bit-exactly
without torch, malicious files are refused before they run, layouts match torch's own layers."""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from metatalk_jax.convert import converted, registry, torch_layouts
from metatalk_jax.convert.__main__ import convert_file
from metatalk_jax.convert.torch_pickle import (UnsafeCheckpointError, read_state_dict,
                                               read_torch_checkpoint)

torch = pytest.importorskip("torch")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMATS = {"zip": True, "legacy": False}


def save(obj, path, fmt: str) -> str:
    torch.save(obj, path, _use_new_zipfile_serialization=FORMATS[fmt])
    return str(path)


def reference_numpy(t) -> np.ndarray:
    """What the reader must return for tensor t: its values, bfloat16 widened to float32."""
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).contiguous().numpy()


def assert_bit_equal(got: np.ndarray, t) -> None:
    want = reference_numpy(t)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.flags.c_contiguous
    assert got.tobytes() == want.tobytes()


def mixed_tensors() -> dict:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    base[0, 0], base[0, 1], base[0, 2] = float("nan"), float("inf"), -0.0
    shared = torch.arange(24, dtype=torch.float32)
    return {
        "f32": base,
        "f16": torch.randn(3, 5, generator=g).half(),
        "bf16": torch.randn(7, generator=g).bfloat16(),
        "f64": torch.randn(2, 2, generator=g).double(),
        "i64": torch.arange(-5, 5, dtype=torch.int64).reshape(2, 5),
        "i32": torch.tensor([1, -2, 2**31 - 1], dtype=torch.int32),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 200, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "transposed": base.t(),                       # stride (1, 6)
        "stepped": base[1:, ::2],                     # offset 6, stride (6, 2)
        "bf16_view": torch.randn(4, 4, generator=g).bfloat16().t()[1:],
        "shared_a": shared[2:14].view(3, 4),          # two views of one storage
        "shared_b": shared.view(4, 6)[:, 3],
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        "conv": torch.nn.Conv2d(3, 4, 3).weight,      # a Parameter
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_tensors_read_back_bit_exactly(tmp_path, fmt):
    tensors = mixed_tensors()
    got = read_torch_checkpoint(save(tensors, tmp_path / "t.pth", fmt))
    assert set(got) == set(tensors)
    for name, t in tensors.items():
        assert_bit_equal(got[name], t)


@pytest.mark.parametrize("fmt", FORMATS)
def test_wav2lip_style_checkpoint_unwraps_to_state_dict(tmp_path, fmt):
    model = torch.nn.Sequential(torch.nn.Conv2d(6, 8, 3), torch.nn.BatchNorm2d(8),
                                torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model(torch.randn(2, 6, 3, 3)).sum().backward()
    optimizer.step()
    checkpoint = {"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "global_step": 1234, "global_epoch": 7,
                  "extra": {"dtype": torch.bfloat16, "shape": torch.Size([2, 3]), "tag": b"\x00a",
                            "ids": {1, 2}, "z": 1 + 2j, "none": None}}
    path = save(checkpoint, tmp_path / "w.pth", fmt)

    whole = read_torch_checkpoint(path)
    assert whole["global_step"] == 1234 and whole["global_epoch"] == 7
    extra = whole["extra"]
    assert repr(extra["dtype"]) == "torch.bfloat16" and extra["shape"] == (2, 3)
    assert (extra["tag"], extra["ids"], extra["z"], extra["none"]) == (b"\x00a", {1, 2}, 1 + 2j,
                                                                        None)
    groups = whole["optimizer"]["param_groups"]
    assert groups[0]["lr"] == 1e-4 and groups[0]["betas"] == (0.9, 0.999)
    exp_avg = optimizer.state_dict()["state"][0]["exp_avg"]
    assert_bit_equal(whole["optimizer"]["state"][0]["exp_avg"], exp_avg)

    state_dict = read_state_dict(path)
    reference = model.state_dict()
    assert list(state_dict) == list(reference)  # order kept, num_batches_tracked included
    for key, t in reference.items():
        assert_bit_equal(state_dict[key], t)


def test_state_dict_reading_skips_the_optimizer_bytes(tmp_path):
    """read_state_dict reads only the state dict's storages: with the optimizer's storage file
    removed from the archive it still works, while reading the whole object fails."""
    weight = torch.randn(3, 3)
    full = save({"state_dict": {"w": weight}, "optimizer": {"m": torch.randn(5)}},
                tmp_path / "full.pth", "zip")
    source = zipfile.ZipFile(full)
    path = tmp_path / "no_optimizer_bytes.pth"
    with zipfile.ZipFile(path, "w") as out:
        for name in source.namelist():
            if not name.endswith("/data/1"):  # storage '1' is the optimizer's tensor
                out.writestr(name, source.read(name))
    assert_bit_equal(read_state_dict(path)["w"], weight)
    with pytest.raises(ValueError, match="no storage file .*data/1"):
        read_torch_checkpoint(path)


def test_plain_state_dict_and_data_parallel_prefix(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = save({f"module.{k}": v for k, v in model.state_dict().items()},
                tmp_path / "dp.pth", "zip")
    stripped = torch_layouts.strip_prefix(read_state_dict(path))
    assert sorted(stripped) == ["bias", "weight"]
    assert_bit_equal(stripped["weight"], model.weight)
    # Only a prefix shared by every key is a DataParallel wrapper.
    mixed = {"module.a": 1, "b": 2}
    assert torch_layouts.strip_prefix(mixed) == mixed


class _LegacyStorage:
    """Pickled as a legacy persistent id for one view of a root storage."""


class _ViewTensor:
    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                (_LegacyStorage(), 1, (2, 2), (1, 2), False, collections.OrderedDict()))


def test_legacy_storage_view_metadata(tmp_path):
    """Old legacy files name views of a root storage (view_key, offset, size); torch >= 1.x
    no longer writes them, so the file is assembled here and checked against torch.load."""
    root = np.arange(8, dtype=np.float32) * 1.5
    path = tmp_path / "view.pth"
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001,
                       {"protocol_version": 1001, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 8}}):
            pickle.dump(header, f, protocol=2)

        class ViewPickler(pickle.Pickler):
            def persistent_id(self, obj):
                if isinstance(obj, _LegacyStorage):
                    return ("storage", torch.FloatStorage, "root", "cpu", 8, ("v", 3, 5))
                return None

        ViewPickler(f, protocol=2).dump({"w": _ViewTensor()})
        pickle.dump(["root"], f, protocol=2)
        f.write(struct.pack("<q", 8) + root.tobytes())
    expected = torch.load(path, weights_only=False)["w"]  # elements 3..7 of root, viewed
    got = read_torch_checkpoint(path)["w"]
    assert_bit_equal(got, expected)
    np.testing.assert_array_equal(got, [[root[4], root[6]], [root[5], root[7]]])


class _Evil:
    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


@pytest.mark.parametrize("fmt", FORMATS)
def test_malicious_checkpoint_is_refused_before_running(tmp_path, fmt):
    sentinel = tmp_path / "pwned"
    path = save({"weight": torch.ones(2), "payload": _Evil(sentinel)}, tmp_path / "evil.pth", fmt)
    with pytest.raises(UnsafeCheckpointError, match=r"refuses to load global (posix|os)\.system"):
        read_torch_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError):
        read_state_dict(path)
    assert not sentinel.exists()
    # The file really is malicious: torch's unrestricted loader runs the payload.
    torch.load(path, weights_only=False)
    assert sentinel.exists()


def test_malicious_legacy_header_and_state_setting_are_refused(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil_header.pth"
    path.write_bytes(pickle.dumps(_Evil(sentinel), protocol=2))  # in place of the magic number
    with pytest.raises(UnsafeCheckpointError, match=str(path)):
        read_torch_checkpoint(path)
    assert not sentinel.exists()
    # BUILD would call __setstate__ / set attributes: allowed only on an OrderedDict.
    build_on_set = b"\x80\x02cbuiltins\nset\n)R}X\x01\x00\x00\x00aK\x01sb."
    path.write_bytes(build_on_set)
    with pytest.raises(UnsafeCheckpointError, match="refuses to set state on a set"):
        read_torch_checkpoint(path)


def _one_line_value_error(path, match: str):
    with pytest.raises(ValueError, match=match) as caught:
        read_torch_checkpoint(path)
    assert not isinstance(caught.value, UnsafeCheckpointError)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_corrupt_truncated_and_foreign_files(tmp_path):
    tensors = {"w": torch.randn(64, 64)}
    zip_bytes = open(save(tensors, tmp_path / "z.pth", "zip"), "rb").read()
    legacy_bytes = open(save(tensors, tmp_path / "l.pth", "legacy"), "rb").read()
    cases = {
        "zip_truncated.pth": (zip_bytes[: len(zip_bytes) // 2], "truncated or corrupt zip"),
        "legacy_truncated.pth": (legacy_bytes[:-100], "file ends inside storage"),
        "legacy_header_only.pth": (legacy_bytes[:40], "the file ends early"),
        "text.pth": (b"hello, this is not a checkpoint\n", "neither a torch zip archive nor"),
        "empty.pth": (b"", "neither a torch zip archive nor"),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        _one_line_value_error(tmp_path / name, expected)
    (tmp_path / "numpy.pth").write_bytes(pickle.dumps(np.zeros(3), protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="numpy"):  # its reconstructor is a global
        read_torch_checkpoint(tmp_path / "numpy.pth")
    # A flipped byte inside a storage fails the zip's CRC check.
    offset = zip_bytes.index(np.float32(tensors["w"][10, 10].item()).tobytes())
    damaged = bytearray(zip_bytes)
    damaged[offset] ^= 0xFF
    (tmp_path / "crc.pth").write_bytes(bytes(damaged))
    _one_line_value_error(tmp_path / "crc.pth", "CRC")
    _one_line_value_error(tmp_path / "missing.pth", "no such checkpoint file")
    # A zip without data.pkl (any other archive).
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "hi")
    _one_line_value_error(tmp_path / "other.zip", "data.pkl")
    # A tensor view running past its storage is refused, never read out of bounds.
    source = zipfile.ZipFile(io.BytesIO(zip_bytes))
    with zipfile.ZipFile(tmp_path / "oob.pth", "w") as out:
        for name in source.namelist():
            data = source.read(name)
            if name.endswith("/data.pkl"):
                patched = data.replace(b"K@K@\x86", b"K@KA\x86")  # size (64, 64) -> (64, 65)
                assert patched != data
                data = patched
            out.writestr(name, data)
    _one_line_value_error(tmp_path / "oob.pth", "runs past its storage")


# ---------------------------------------------------------------- layout helpers vs torch layers

def test_conv_and_linear_kernels_match_torch():
    import flax.linen as nn

    torch.manual_seed(1)
    for dims, conv_cls in ((1, torch.nn.Conv1d), (2, torch.nn.Conv2d), (3, torch.nn.Conv3d)):
        layer = conv_cls(3, 5, kernel_size=3, stride=2, padding=1)
        x = torch.randn(2, 3, *([7] * dims))
        want = layer(x).detach().numpy()
        flax_layer = nn.Conv(5, (3,) * dims, strides=2, padding=[(1, 1)] * dims)
        params = {"kernel": torch_layouts.conv_kernel(layer.weight.detach().numpy()),
                  "bias": layer.bias.detach().numpy()}
        got = flax_layer.apply({"params": params}, np.moveaxis(x.numpy(), 1, -1))
        np.testing.assert_allclose(np.moveaxis(np.asarray(got), -1, 1), want, atol=1e-5)
    linear = torch.nn.Linear(6, 4)
    x = torch.randn(3, 6)
    got = nn.Dense(4).apply({"params": {"kernel": torch_layouts.linear_kernel(
        linear.weight.detach().numpy()), "bias": linear.bias.detach().numpy()}}, x.numpy())
    np.testing.assert_allclose(np.asarray(got), linear(x).detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("transpose_kernel", [False, True])
def test_transposed_conv_kernel_and_padding_match_torch(transpose_kernel):
    import flax.linen as nn

    torch.manual_seed(2)
    # Wav2Lip's decoder uses (k3, s2, p1, output_padding 1) and (k3, s1, p0).
    for k, s, p, op in ((3, 2, 1, 1), (3, 1, 0, 0), (4, 2, 1, 0)):
        layer = torch.nn.ConvTranspose2d(4, 6, k, s, p, output_padding=op)
        x = torch.randn(2, 4, 5, 5)
        want = layer(x).detach().numpy()
        flax_layer = nn.ConvTranspose(6, (k, k), (s, s), transpose_kernel=transpose_kernel,
                                      padding=torch_layouts.conv_transpose_padding((k, k), p, op))
        params = {"kernel": torch_layouts.conv_transpose_kernel(
            layer.weight.detach().numpy(), transpose_kernel=transpose_kernel),
            "bias": layer.bias.detach().numpy()}
        got = flax_layer.apply({"params": params}, np.moveaxis(x.numpy(), 1, -1))
        np.testing.assert_allclose(np.moveaxis(np.asarray(got), -1, 1), want, atol=1e-5)


def test_batch_norm_matches_torch_eval():
    import flax.linen as nn

    bn = torch.nn.BatchNorm2d(5)
    bn.train()
    for _ in range(3):
        bn(torch.randn(4, 5, 3, 3) * 2 + 1)  # give the running statistics real values
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
    bn.eval()
    state_dict = {f"bn.{k}": v.numpy() for k, v in bn.state_dict().items()}
    params, stats = torch_layouts.batch_norm(state_dict, "bn.", features=5)
    x = torch.randn(2, 5, 4, 4)
    got = nn.BatchNorm(use_running_average=True, epsilon=bn.eps).apply(
        {"params": params, "batch_stats": stats}, np.moveaxis(x.numpy(), 1, -1))
    np.testing.assert_allclose(np.moveaxis(np.asarray(got), -1, 1), bn(x).detach().numpy(),
                               atol=1e-5)
    used = {f"bn.{k}" for k in ("weight", "bias", "running_mean", "running_var")}
    torch_layouts.check_all_used(state_dict, used)  # num_batches_tracked needs no consumer
    with pytest.raises(ValueError, match="unused: bn.bias$"):
        torch_layouts.check_all_used(state_dict, used - {"bn.bias"})
    with pytest.raises(ValueError, match=r"'bn.weight' has shape \(5,\), expected \(6,\)"):
        torch_layouts.batch_norm(state_dict, "bn.", features=6)


def test_take_names_missing_keys_and_shape_mismatches():
    state_dict = {"enc.0.weight": np.zeros((4, 3, 3, 3)), "enc.0.bias": np.zeros(4)}
    with pytest.raises(KeyError, match="no key 'enc.1.weight'"):
        torch_layouts.take(state_dict, "enc.1.weight")
    with pytest.raises(KeyError, match=r"'enc.0.kernel'.*enc.0.bias, enc.0.weight"):
        torch_layouts.take(state_dict, "enc.0.kernel")
    with pytest.raises(ValueError, match=r"shape \(4, 3, 3, 3\), expected \(4, 3, 5, 5\)"):
        torch_layouts.take(state_dict, "enc.0.weight", (4, 3, 5, 5))
    tracked = torch_layouts.TrackedStateDict(state_dict)
    torch_layouts.take(tracked, "enc.0.weight", (4, 3, 3, 3))
    assert tracked.unused() == ["enc.0.bias"]


# ---------------------------------------------------------------- converted checkpoint + CLI

def tiny_key_map(state_dict: dict) -> tuple[dict, dict]:
    """Key map of a Linear(3, 2) (test-only model 'tiny'), used in-process and by the CLI."""
    weight = torch_layouts.take(state_dict, "fc.weight", (2, 3))
    bias = torch_layouts.take(state_dict, "fc.bias", (2,))
    torch_layouts.check_all_used(state_dict, {"fc.weight", "fc.bias"})
    return {"params": {"fc": {"kernel": torch_layouts.linear_kernel(weight), "bias": bias}}}, \
        {"features": 2}


def _tiny_checkpoint(tmp_path, fmt="zip") -> tuple[str, torch.nn.Linear]:
    layer = torch.nn.Linear(3, 2)
    state = {"fc.weight": layer.weight.detach(), "fc.bias": layer.bias.detach()}
    return save({"state_dict": state, "global_step": 3}, tmp_path / "tiny.pth", fmt), layer


def test_save_load_round_trip_and_errors(tmp_path):
    source, layer = _tiny_checkpoint(tmp_path)
    variables = {"params": {"fc": {"kernel": np.arange(6, dtype=np.float32).reshape(3, 2),
                                   "bias": np.array([1, 2], np.float16)}},
                 "batch_stats": {"bn": {"mean": np.zeros(4, np.float64)}}}
    out = tmp_path / "models" / "tiny"
    converted.save_converted(out, "tiny", variables, {"features": 2}, source)
    assert sorted(os.listdir(out)) == ["meta.json", "variables.npz"]
    assert not [n for n in os.listdir(out.parent) if n.startswith(".")]  # no temp left
    loaded, meta = converted.load_converted(out, "tiny")
    for path, array in converted.flatten_variables(variables).items():
        got = converted.flatten_variables(loaded)[path]
        assert got.dtype == array.dtype and got.tobytes() == array.tobytes()
    assert meta["format"] == "metatalk_jax.converted" and meta["version"] == 1
    assert meta["config"] == {"features": 2} and meta["model"] == "tiny"
    assert meta["source"] == {"file": "tiny.pth",
                              "sha256": hashlib.sha256(open(source, "rb").read()).hexdigest()}
    assert meta["shapes"]["params/fc/kernel"] == {"shape": [3, 2], "dtype": "float32"}

    with pytest.raises(ValueError, match=r"holds a 'tiny' checkpoint, expected 'wav2lip'"):
        converted.load_converted(out, "wav2lip")
    with pytest.raises(ValueError, match="no converted checkpoint folder"):
        converted.load_converted(tmp_path / "nowhere", "tiny")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="not a converted checkpoint"):
        converted.load_converted(tmp_path / "plain", "tiny")
    # Re-saving replaces a converted checkpoint, but never another folder.
    converted.save_converted(out, "tiny", {"params": {"w": np.ones(2)}}, {}, source)
    assert list(converted.load_converted(out, "tiny")[0]["params"]) == ["w"]
    with pytest.raises(ValueError, match="exists and is not a converted checkpoint"):
        converted.save_converted(tmp_path / "plain", "tiny", variables, {}, source)
    with pytest.raises(ValueError, match="not JSON data"):
        converted.save_converted(tmp_path / "x", "tiny", variables, {"f": np.zeros(1)}, source)
    # A damaged meta.json (arrays disagree) is reported.
    meta_path = out / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["shapes"]["params/w"]["shape"] = [3]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"'params/w' is float64\[2\]"):
        converted.load_converted(out, "tiny")


def test_convert_file_with_registered_map(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.KEY_MAPS, "tiny", "tests.test_convert:tiny_key_map")
    assert registry.KEY_MAPS["wav2lip"] == "metatalk_jax.convert.wav2lip_keys:convert_wav2lip"
    source, layer = _tiny_checkpoint(tmp_path, "legacy")
    summary = convert_file("tiny", source, tmp_path / "out")
    assert summary["tensors"] == 2 and summary["values"] == 8
    variables, meta = converted.load_converted(tmp_path / "out", "tiny")
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    fc = variables["params"]["fc"]
    np.testing.assert_allclose(x @ fc["kernel"] + fc["bias"],
                               layer(torch.from_numpy(x)).detach().numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="unknown model 'nope'; known models: .*wav2lip"):
        convert_file("nope", source, tmp_path / "out2")


def run_cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, **kwargs)


def test_cli_exit_codes(tmp_path):
    source, _ = _tiny_checkpoint(tmp_path)
    key_map = "tests.test_convert:tiny_key_map"
    ok = run_cli("-m", "metatalk_jax.convert", "tiny", source, str(tmp_path / "out"),
                 "--key-map", key_map)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("\n") == 1 and ok.stdout.startswith("converted tiny: 2 arrays, 8 ")
    assert converted.load_converted(tmp_path / "out", "tiny")[1]["config"] == {"features": 2}

    other = tmp_path / "other.pth"
    save({"conv.weight": torch.zeros(2, 3)}, other, "zip")
    evil = save({"w": torch.ones(1), "x": _Evil(tmp_path / "pwned")}, tmp_path / "evil.pth", "zip")
    failures = {
        "unknown model": (["nope", source, str(tmp_path / "o1")],
                          "known models: inception, syncnet, wav2lip"),
        "wrong architecture": (["tiny", str(other), str(tmp_path / "o2"), "--key-map", key_map],
                               "not a tiny checkpoint: checkpoint has no key 'fc.weight'"),
        "malicious": (["tiny", evil, str(tmp_path / "o3"), "--key-map", key_map],
                      "refuses to load global"),
        "missing file": (["tiny", str(tmp_path / "no.pth"), str(tmp_path / "o4"), "--key-map",
                          key_map], "no such checkpoint file"),
        "missing argument": (["tiny"], "the following arguments are required"),
    }
    for case, (args, expected) in failures.items():
        done = run_cli("-m", "metatalk_jax.convert", *args)
        assert done.returncode == 2, (case, done.stdout, done.stderr)
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, case
        assert expected in done.stderr, (case, done.stderr)
    assert not (tmp_path / "pwned").exists()
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))


def test_conversion_never_imports_torch(tmp_path):
    source, _ = _tiny_checkpoint(tmp_path)
    script = (
        "import sys\n"
        "from metatalk_jax.convert import registry, torch_layouts\n"
        "from metatalk_jax.convert.__main__ import convert_file\n"
        "def tiny(sd):\n"
        "    return {'params': {'fc': {'kernel': torch_layouts.linear_kernel(sd['fc.weight']),\n"
        "                              'bias': sd['fc.bias']}}}, {}\n"
        "registry.register('tiny', '__main__:tiny')\n"
        f"convert_file('tiny', {source!r}, {str(tmp_path / 'out')!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = run_cli("-c", script)
    assert done.returncode == 0, done.stderr
