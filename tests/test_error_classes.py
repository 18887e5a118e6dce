"""Errors tell the truth (metatalk_jax/errors.py, cli_errors.py):

- bad input (an InputError, raised only by the checks of what the user gave) is one `error:`
  line on stderr and exit status 2, from every CLI;
- anything else (a ValueError, KeyError, OSError or RuntimeError from inside the project: a bug)
  is not reported as bad input: it leaves main() with its traceback, so the process exits 1;
- resuming a work dir with a config that builds another model names the key path and both
  shapes or dtypes, before orbax gets to fail somewhere inside a restore; any other restore
  failure keeps its own type.
~40 s on 2 cores (two tiny compiled training runs per resume test).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from metatalk_jax.errors import InputError, MissingInputError

# -- the error types ---------------------------------------------------------------------------


def test_user_facing_error_classes_are_input_errors():
    from metatalk_jax.checksums import ChecksumError
    from metatalk_jax.convert.torch_pickle import UnsafeCheckpointError
    from metatalk_jax.inference.trained_models import CheckpointError
    from metatalk_jax.media.ffmpeg_tools import MediaError
    from metatalk_jax.media.speech import SpeechUnavailable
    from metatalk_jax.tracking.track import NoFaceYet, TrackingError
    for cls in (ChecksumError, UnsafeCheckpointError, CheckpointError, MediaError,
                SpeechUnavailable, TrackingError, NoFaceYet, MissingInputError):
        assert issubclass(cls, InputError) and issubclass(cls, ValueError), cls
    # A missing file stays a FileNotFoundError for callers that catch OSError.
    assert issubclass(MissingInputError, FileNotFoundError)
    from metatalk_jax.train.step_metrics import NonFiniteError
    assert not issubclass(NonFiniteError, InputError)


def test_input_checks_raise_input_error_and_internal_checks_do_not(tmp_path):
    from metatalk_jax.config_loading import load_config
    from metatalk_jax.media.audio_features import wav2lip_mel
    from metatalk_jax.subject.layout import load_subject
    with pytest.raises(InputError, match="unknown variant 'nosuch'"):
        load_config("renderer:nosuch")
    with pytest.raises(InputError, match="config has no key 'data.nosuch'"):
        load_config("renderer:tiny", ["data.nosuch=1"])
    with pytest.raises(InputError, match="'data.subject' takes a str, got 5"):
        load_config("renderer:tiny", ["data.subject=5"])
    with pytest.raises(InputError, match="not a subject directory"):
        load_subject(str(tmp_path))
    (tmp_path / "subject.json").write_text("{not json")
    with pytest.raises(InputError, match="subject.json: not valid JSON"):
        load_subject(str(tmp_path))
    # A 2-D array handed to the mel code is the caller's bug, not the user's input.
    with pytest.raises(ValueError) as err:
        wav2lip_mel(np.zeros((2, 16000), np.float32), 16000)
    assert not isinstance(err.value, InputError)


# -- CLIs: bad input is exit 2 with one line ----------------------------------------------------

def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def _train_main(argv):
    from metatalk_jax.train.__main__ import main
    return main(argv)


def _convert_main(argv):
    from metatalk_jax.convert.__main__ import main
    return main(argv)


def _infer_main(argv):
    from metatalk_jax.infer import main
    return main(argv)


def _evaluate_main(argv):
    from metatalk_jax.evaluate import main
    return main(argv)


def _prepare_main(argv):
    from metatalk_jax.prepare import main
    return main(argv)


def _pseudo_main(argv):
    from metatalk_jax.pseudo import main
    return main(argv)


def _demo_main(argv):
    from metatalk_jax.demo import main
    return main(argv)


def _assets_main(argv):
    from metatalk_jax.face3d.assets import main
    return main(argv)


def _export_main(argv):
    from metatalk_jax.export import main
    return main(argv)


def _export_args(tmp_path):
    return ["--subject", str(tmp_path / "no_subject"), "--a2e", str(tmp_path / "a2e"),
            "--renderer", str(tmp_path / "renderer"), "--out", str(tmp_path / "me.talker")]


def _infer_args(tmp_path, subject="no_subject"):
    return ["--subject", str(tmp_path / subject), "--a2e", str(tmp_path / "a2e"),
            "--renderer", str(tmp_path / "renderer"), "--audio", str(tmp_path / "a.wav"),
            "--out", str(tmp_path / "out.mp4")]


BAD_INPUTS = {
    "train: unknown config variant": (
        _train_main, lambda t: ["--config", "renderer:nosuch", "--workdir", str(t / "w")],
        "unknown variant 'nosuch'"),
    "train: unknown config key": (
        _train_main, lambda t: ["--config", "a2e:tiny", "--workdir", str(t / "w"),
                                "--config.nosuch=1"], "config has no key 'nosuch'"),
    "convert: no such checkpoint": (
        _convert_main, lambda t: ["wav2lip", str(t / "missing.pth"), str(t / "out")],
        "missing.pth: no such checkpoint file"),
    "convert: unknown model": (
        _convert_main, lambda t: ["nosuch", str(t / "missing.pth"), str(t / "out")],
        "unknown model 'nosuch'"),
    "infer: not a subject": (
        _infer_main, lambda t: _infer_args(t), "no_subject: not a subject directory"),
    "infer: not a talker bundle": (
        _infer_main, lambda t: ["--talker", str(t), "--audio", str(t / "a.wav"), "--out",
                                str(t / "o.mp4")], "not a talker bundle"),
    "export: not a subject": (
        _export_main, lambda t: _export_args(t), "no_subject: not a subject directory"),
    "evaluate: no metric asked for": (
        _evaluate_main, lambda t: ["--videos", str(t / "none.mp4"), "--out", str(t / "r")],
        "nothing to compute: give --syncnet"),
    "prepare: missing video": (
        _prepare_main, lambda t: ["--video", str(t / "none.mp4"), "--out", str(t / "s")],
        "none.mp4: no such file"),
    "pseudo: flags of another teacher": (
        _pseudo_main, lambda t: ["--teacher", "visemes", "--subject", str(t), "--out",
                                 str(t / "p"), "--batch-size", "4"],
        "--batch-size is for --teacher wav2lip"),
    "demo: missing --audio": (
        _demo_main, lambda t: ["--audio", str(t / "none.wav"), "--out", str(t / "d")],
        "none.wav: no such file"),
    "assets: missing --wheel": (
        _assets_main, lambda t: ["--wheel", str(t / "none.whl"), "--cache-dir", str(t / "c")],
        "none.whl: file not found"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_error_line_and_exit_2(case, tmp_path, capsys):
    main, argv, expected = BAD_INPUTS[case]
    assert main(argv(tmp_path)) == 2
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert len(lines) == 1 and expected in lines[0], err
    assert "Traceback" not in err


# -- CLIs: a bug inside is not bad input --------------------------------------------------------

def _fake_video(tmp_path) -> str:
    path = tmp_path / "talk.mp4"
    path.write_bytes(b"not decoded: the library call that would read it is replaced")
    return str(path)


# name: (main, argv, module whose attribute the CLI calls, attribute)
CALLS = {
    "train": (_train_main, lambda t: ["--config", "a2e:tiny", "--workdir", str(t / "w")],
              "metatalk_jax.train.loop", "train_and_evaluate"),
    "train --compile-only": (
        _train_main, lambda t: ["--config", "a2e:tiny", "--compile-only", "--topology", "v5e:2x2"],
        "metatalk_jax.train.compile_check", "main_compile_only"),
    "convert": (_convert_main, lambda t: ["wav2lip", _fake_video(t), str(t / "out")],
                "metatalk_jax.convert.torch_pickle", "read_state_dict"),
    "infer": (_infer_main, lambda t: _infer_args(t), "metatalk_jax.inference.pipeline",
              "run_inference"),
    "export": (_export_main, lambda t: _export_args(t), "metatalk_jax.inference.talker_bundle",
               "export_talker"),
    "evaluate": (_evaluate_main, lambda t: ["--videos", "x.mp4", "--out", str(t / "r")],
                 "metatalk_jax.eval.evaluate_videos", "evaluate_videos"),
    "prepare": (_prepare_main, lambda t: ["--video", _fake_video(t), "--out", str(t / "s")],
                "metatalk_jax.subject.face_model", "load_morphable"),
    "pseudo": (_pseudo_main, lambda t: ["--teacher", "visemes", "--subject", str(t), "--out",
                                        str(t / "p")],
               "metatalk_jax.pseudo_video.viseme_teacher", "generate_viseme_corpus"),
    "demo": (_demo_main, lambda t: ["--out", str(t / "d")], "metatalk_jax.demo", "run_demo"),
    "assets": (_assets_main, lambda t: ["--cache-dir", str(t / "c")],
               "metatalk_jax.face3d.assets", "ensure_offline_model"),
    "staging": (lambda argv: __import__("metatalk_jax.train.staging",
                                        fromlist=["main"]).main(argv),
                lambda t: [str(t), str(t / "copy")], "metatalk_jax.train.staging", "copy_tree"),
}


def _patch(monkeypatch, module: str, attribute: str, error: BaseException) -> None:
    def fails(*args, **kwargs):
        raise error
    monkeypatch.setattr(__import__(module, fromlist=[attribute]), attribute, fails)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_an_input_error_from_the_library_is_exit_2(name, tmp_path, capsys, monkeypatch):
    main, argv, module, attribute = CALLS[name]
    _patch(monkeypatch, module, attribute, InputError("some/file: not usable"))
    assert main(argv(tmp_path)) == 2
    assert _error_lines(capsys.readouterr().err) == ["error: some/file: not usable"]


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("bug", [ValueError("bug"), KeyError("bug"), OSError("bug"),
                                 RuntimeError("bug")], ids=lambda e: type(e).__name__)
def test_a_bug_inside_propagates_with_its_traceback(name, bug, tmp_path, capsys, monkeypatch):
    main, argv, module, attribute = CALLS[name]
    _patch(monkeypatch, module, attribute, bug)
    with pytest.raises(type(bug)) as raised:
        main(argv(tmp_path))
    assert raised.value is bug and not isinstance(raised.value, InputError)
    assert _error_lines(capsys.readouterr().err) == []


def test_a_bug_exits_1_with_a_traceback_as_a_process(tmp_path):
    # main() lets the exception go; Python then prints the traceback and exits 1.
    script = ("import sys, metatalk_jax.train.__main__ as cli\n"
              "def fails(*a, **k):\n    raise KeyError('bug in the project')\n"
              "cli.load_config = fails\n"
              f"sys.exit(cli.main(['--config', 'a2e:tiny', '--workdir', {str(tmp_path)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "KeyError: 'bug in the project'" in done.stderr
    assert _error_lines(done.stderr) == []


# -- resuming a work dir with another model ------------------------------------------------------

class TinyTask:
    """A linear model whose state's leaves are given: {name: (shape, dtype)}; plain SGD on
    random data (what it learns does not matter here, only what it saves)."""
    name = "tiny"

    def __init__(self, leaves: dict):
        self.leaves = leaves

    def constants(self):
        return {}

    def init_state(self, rng):
        state = {name: jnp.zeros(shape, dtype) for name, (shape, dtype) in self.leaves.items()}
        return {**state, "step": jnp.zeros((), jnp.int32)}

    def train_batches(self, *, seed, process_index, process_count):
        def example(i):
            return {"x": np.random.default_rng(int(i)).normal(size=3).astype(np.float32)}
        return iter(grain.MapDataset.range(1000).map(example).batch(4).to_iter_dataset())

    def eval_batches(self, *, process_index, process_count):
        return iter([])

    def train_step(self, state, batch, rng, constants):
        loss = jnp.mean(batch["x"])
        new = {k: (v - 0.1 * loss).astype(v.dtype) if k != "step" else v + 1
               for k, v in state.items()}
        return new, {"loss": loss}

    def eval_step(self, state, batch, constants):
        return {}

    def preview_step(self, state, batch, constants):
        return jnp.zeros((1, 2, 2, 3))


def _config(total: int) -> ml_collections.ConfigDict:
    from metatalk_jax.train.engine_config import add_engine_fields
    config = ml_collections.ConfigDict({"seed": 0, "total_steps": total, "batch_size": 4})
    add_engine_fields(config, log_every_steps=1, eval_every_steps=0, preview_every_steps=0)
    config.eval_at_start = False
    config.mesh.num_devices = 1
    config.checkpoint_every_steps = 1
    config.async_checkpoints = False
    return config


RUN = {"kernel": ((3, 4), jnp.float32), "bias": ((4,), jnp.float32)}


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    """A work dir holding checkpoints 1 and 2 of a TinyTask with the leaves RUN."""
    from metatalk_jax.train.loop import train_and_evaluate
    workdir = tmp_path_factory.mktemp("run")
    result = train_and_evaluate(_config(2), str(workdir), task=TinyTask(RUN), log=lambda *_: None)
    assert result.step == 2
    return workdir


def _resume(workdir, leaves, total=3):
    from metatalk_jax.train.loop import train_and_evaluate
    return train_and_evaluate(_config(total), str(workdir), task=TinyTask(leaves),
                              log=lambda *_: None)


@pytest.mark.parametrize("leaves, expected", [
    ({"kernel": ((3, 5), jnp.float32), "bias": ((4,), jnp.float32)},
     "kernel has shape (3, 4) in the checkpoint, (3, 5) in the config's model"),
    ({"kernel": ((3, 4), jnp.bfloat16), "bias": ((4,), jnp.float32)},
     "kernel has dtype float32 in the checkpoint, bfloat16 in the config's model"),
    ({"kernel": ((3, 4), jnp.float32), "bias": ((4,), jnp.float32), "gain": ((4,), jnp.float32)},
     "gain is missing from the checkpoint"),
    ({"kernel": ((3, 4), jnp.float32)}, "bias is in the checkpoint but not in the config's state"),
], ids=["shape", "dtype", "missing", "unexpected"])
def test_resuming_another_model_names_what_differs(trained_workdir, leaves, expected):
    config_json = (trained_workdir / "config.json").read_text()
    with pytest.raises(InputError) as err:
        _resume(trained_workdir, leaves)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{trained_workdir}/checkpoints/2: {expected};"), message
    assert "resume with that config or use a new --workdir" in message
    assert (trained_workdir / "config.json").read_text() == config_json   # left as it was


def test_the_message_counts_the_differences(trained_workdir):
    leaves = {"kernel": ((2, 4), jnp.bfloat16), "gain": ((1,), jnp.float32)}
    with pytest.raises(InputError) as err:
        _resume(trained_workdir, leaves)
    # gain missing, bias unexpected, kernel's shape and its dtype: four differences
    assert "gain is missing from the checkpoint (the first of 4 differences)" in str(err.value)


def test_tree_differences_lists_every_kind_in_order():
    from metatalk_jax.train.checkpointing import tree_differences
    sds = jax.ShapeDtypeStruct
    stored = {"a": sds((2, 3), jnp.float32), "b": {"c": sds((4,), jnp.float32)},
              "old": sds((), jnp.int32)}
    wanted = {"a": sds((2, 4), jnp.int8), "b": {"c": sds((4,), jnp.float32)},
              "new": [sds((1,), jnp.float32)]}
    assert tree_differences(stored, wanted) == [
        "new.0 is missing from the checkpoint",
        "old is in the checkpoint but not in the config's state",
        "a has shape (2, 3) in the checkpoint, (2, 4) in the config's model",
        "a has dtype float32 in the checkpoint, int8 in the config's model"]
    assert tree_differences(stored, stored) == []


@pytest.mark.parametrize("damage", [("d",), ("d", "ocdbt.process_0", "manifest.ocdbt")],
                         ids=["array chunks", "array store and its index"])
def test_the_same_model_resumes_and_a_corrupt_checkpoint_is_not_input(tmp_path, damage):
    from metatalk_jax.train.loop import train_and_evaluate
    assert train_and_evaluate(_config(1), str(tmp_path), task=TinyTask(RUN),
                              log=lambda *_: None).step == 1
    assert _resume(tmp_path, RUN, total=2).step == 2            # the same model: resumes
    # Checkpoint 2 damaged: its chunks gone (the tree metadata still reads and fits), or its
    # whole array store (no metadata to compare). Neither is a config of another model, so
    # orbax's (tensorstore's) own error comes through, not "missing" keys.
    state_dir = tmp_path / "checkpoints" / "2" / "state"
    for name in damage:
        path = state_dir / name
        shutil.rmtree(path) if path.is_dir() else os.remove(path)
    with pytest.raises(ValueError) as err:
        _resume(tmp_path, RUN, total=3)
    assert not isinstance(err.value, InputError), err.value
    assert "NOT_FOUND" in str(err.value)
