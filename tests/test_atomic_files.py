"""atomic_files.publishing_dir: a folder is written under a temporary name beside its place and
renamed there when complete; a failure leaves neither a final folder nor a temporary one. Also
its callers' choices: converted checkpoints, subjects and target-video datasets replace what is
there (replace=True); a pseudo-video part and a staged copy never do (replace=False)."""

from __future__ import annotations

import os
import stat

import pytest

from metatalk_jax import atomic_files
from metatalk_jax.atomic_files import current_umask, partial_dir_prefix, publishing_dir
from metatalk_jax.train import staging


def _write(folder, name: str, text: str) -> None:
    with open(os.path.join(folder, name), "w") as f:
        f.write(text)


def _read(folder, name: str) -> str:
    with open(os.path.join(folder, name)) as f:
        return f.read()


@pytest.mark.parametrize("replace", [True, False])
def test_success_publishes_the_folder_with_ordinary_permissions(tmp_path, replace):
    final = tmp_path / "parent" / "out"            # the parent is made too
    with publishing_dir(final, replace=replace) as tmp:
        assert os.path.dirname(tmp) == str(final.parent)
        assert os.path.basename(tmp).startswith(partial_dir_prefix(final))
        assert not final.exists()                    # nothing at the final path while writing
        _write(tmp, "data.txt", "new")
    assert _read(final, "data.txt") == "new"
    assert os.listdir(final.parent) == ["out"]       # no temporary folder left
    assert stat.S_IMODE(os.stat(final).st_mode) == 0o777 & ~current_umask()


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
@pytest.mark.parametrize("replace", [True, False])
def test_a_failure_inside_leaves_no_final_folder_and_no_temporary_one(tmp_path, error, replace):
    final = tmp_path / "out"
    with pytest.raises(type(error)):
        with publishing_dir(final, replace=replace) as tmp:
            _write(tmp, "half.txt", "half")
            raise error
    assert os.listdir(tmp_path) == []


def test_replace_swaps_in_the_new_folder_and_removes_the_old(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    _write(final, "old.txt", "old")
    with publishing_dir(final, replace=True) as tmp:
        _write(tmp, "new.txt", "new")
        assert _read(final, "old.txt") == "old"      # readers see the old one meanwhile
    assert sorted(os.listdir(final)) == ["new.txt"]
    assert os.listdir(tmp_path) == ["out"]           # the parked old one is gone too


def test_a_failure_keeps_the_folder_that_was_there(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    _write(final, "old.txt", "old")
    with pytest.raises(RuntimeError):
        with publishing_dir(final, replace=True) as tmp:
            _write(tmp, "new.txt", "new")
            raise RuntimeError("failed half way")
    assert os.listdir(final) == ["old.txt"] and os.listdir(tmp_path) == ["out"]


def test_a_failed_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    final = tmp_path / "out"
    final.mkdir()
    _write(final, "old.txt", "old")

    def rename_fails(tmp, path, *, directory=False):
        raise OSError("rename failed")
    monkeypatch.setattr(atomic_files, "publish", rename_fails)
    with pytest.raises(OSError, match="rename failed"):
        with publishing_dir(final, replace=True) as tmp:
            _write(tmp, "new.txt", "new")
    assert os.listdir(final) == ["old.txt"] and os.listdir(tmp_path) == ["out"]


def test_without_replace_an_existing_folder_wins(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(FileExistsError, match="out"):
        with publishing_dir(final, replace=False) as tmp:
            _write(tmp, "mine.txt", "mine")
            final.mkdir()                            # another process finished first
            _write(final, "theirs.txt", "theirs")
    assert os.listdir(final) == ["theirs.txt"] and os.listdir(tmp_path) == ["out"]


def test_temporary_names_follow_the_callers_marker(tmp_path):
    final = tmp_path / "target_video" / "1.0.0"
    with publishing_dir(final, replace=True, temp_prefix="incomplete.",
                        temp_suffix="_1.0.0") as tmp:
        name = os.path.basename(tmp)
        assert name.startswith("incomplete.") and name.endswith("_1.0.0")   # tfds skips it
        _write(tmp, "dataset_info.json", "{}")
    assert os.listdir(final.parent) == ["1.0.0"]


def test_an_object_store_path_is_refused(tmp_path):
    with pytest.raises(ValueError, match="object store"):
        with publishing_dir("gs://bucket/out", replace=True):
            pass


# -- callers ---------------------------------------------------------------------------------------

def test_staged_copy_keeps_the_copy_that_finished_first(tmp_path, monkeypatch):
    source = tmp_path / "subject"
    source.mkdir()
    _write(source, "a.txt", "a")
    destination = tmp_path / "cache" / "subject"
    assert staging.copy_tree(str(source), str(destination)) == 1
    assert _read(destination, "a.txt") == "a"
    _write(source, "a.txt", "changed")
    assert staging.copy_tree(str(source), str(destination)) == 1   # no error, nothing replaced
    assert _read(destination, "a.txt") == "a"
    assert os.listdir(destination.parent) == ["subject"]


def test_converted_checkpoint_is_replaced_whole(tmp_path):
    import numpy as np

    from metatalk_jax.convert.converted import load_converted, save_converted
    source = tmp_path / "model.pth"
    source.write_bytes(b"weights")
    out = tmp_path / "converted"
    save_converted(out, "m", {"params": {"w": np.zeros(2, np.float32)}}, {}, source)
    save_converted(out, "m", {"params": {"v": np.ones(3, np.float32)}}, {}, source)
    variables, _ = load_converted(out, "m")
    assert list(variables["params"]) == ["v"]
    assert sorted(os.listdir(tmp_path)) == ["converted", "model.pth"]
