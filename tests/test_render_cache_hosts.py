"""Render caches are per host and versioned by the code that rendered them
(subject/render_cache.py): the key holds a digest of the rendering modules' source, so editing
any of them gives a new cache file; the default directory is this host's. The multi-host
behaviour (each process renders on its own devices into its own cache dir) is exercised by
tests/test_gcs_pod_run.py. <1 s.
"""

from __future__ import annotations

import os
import socket

from metatalk_jax.subject import render_cache


def test_code_version_follows_the_source(tmp_path):
    module = tmp_path / "render.py"
    module.write_text("def render(): return 1\n")
    files = (str(module),)          # absolute: os.path.join keeps it
    before = render_cache.code_version(files)
    module.write_text("def render(): return 2\n")
    changed = render_cache.code_version(files)
    module.write_text("def render(): return 1\n")
    assert changed != before and render_cache.code_version(files) == before
    # every listed module exists in the package (a renamed file would silently drop out)
    package = os.path.dirname(os.path.dirname(os.path.abspath(render_cache.__file__)))
    assert all(os.path.exists(os.path.join(package, f)) for f in render_cache.RENDER_CODE)


class _Subject:
    def __init__(self, path):
        self.path, self.meta = str(path), {"model": {"sha256": "abc"}}


class _Model:
    name = "procedural"


def test_cache_key_holds_the_code_version_and_the_host(tmp_path, monkeypatch):
    from metatalk_jax.subject import layout
    for name in (layout.COEFFICIENTS, layout.CROPS):
        (tmp_path / name).write_bytes(b"x" * 10)
    monkeypatch.setenv("METATALK_CACHE", str(tmp_path / "cache"))
    subject, model = _Subject(tmp_path), _Model()
    path = render_cache.cache_path(subject, model, 32)
    assert os.path.dirname(path) == str(tmp_path / "cache" / "render_cache" / socket.gethostname())
    monkeypatch.setattr(render_cache, "code_version", lambda files=(): "other code")
    assert render_cache.cache_path(subject, model, 32) != path
