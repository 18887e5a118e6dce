"""Reading torch.save files without torch and without running code from the file.

A .pth is one or more pickles plus raw tensor storages. Two layouts exist:
- zip (torch >= 1.6): `<root>/data.pkl` holds the object, `<root>/data/<key>` each storage's raw
  bytes, `<root>/byteorder` "little" or "big"; storages appear in the pickle as persistent ids
  ('storage', storage_type, key, location, numel).
- legacy (`_use_new_zipfile_serialization=False`): consecutive pickles of a magic number, the
  protocol version (1001) and a sys_info dict, then the object (persistent ids ('storage',
  storage_type, root_key, location, numel, view_metadata)), then the list of storage keys; after
  that, per key, an int64 element count and the raw bytes.

Every pickle is read with `RestrictedUnpickler`, whose `find_class` hands out only our own
tensor-rebuild functions, storage-type and dtype markers, OrderedDict and a few plain builtins.
Any other global raises `UnsafeCheckpointError` when the pickle names it, i.e. before any call.
Tensors come back as numpy arrays (bfloat16 widened to float32, exactly).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
import os
import pickle
import tarfile
import zipfile
from typing import Any, Callable

import numpy as np

from metatalk_jax.errors import InputError

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
# Top-level keys under which training scripts nest the weights (Wav2Lip saves
# {"state_dict", "optimizer", "global_step", "global_epoch"}).
STATE_DICT_WRAPPERS = ("state_dict", "model")


class UnsafeCheckpointError(InputError):
    """The checkpoint's pickle names a global that could run code; nothing was executed."""


@dataclasses.dataclass(frozen=True)
class StorageType:
    """Marker for a torch storage class (torch.FloatStorage, ...): numpy dtype of its elements.

    bfloat16 has no numpy dtype: it is stored as uint16 and widened when tensors are built.
    """
    name: str
    dtype: str
    bfloat16: bool = False


@dataclasses.dataclass(frozen=True)
class TorchDtype:
    """Marker for a torch dtype object (torch.float32, ...) met as a value in a checkpoint."""
    name: str

    def __repr__(self) -> str:
        return f"torch.{self.name}"


STORAGE_TYPES = {
    "FloatStorage": StorageType("FloatStorage", "f4"),
    "HalfStorage": StorageType("HalfStorage", "f2"),
    "DoubleStorage": StorageType("DoubleStorage", "f8"),
    "BFloat16Storage": StorageType("BFloat16Storage", "u2", bfloat16=True),
    "LongStorage": StorageType("LongStorage", "i8"),
    "IntStorage": StorageType("IntStorage", "i4"),
    "ShortStorage": StorageType("ShortStorage", "i2"),
    "CharStorage": StorageType("CharStorage", "i1"),
    "ByteStorage": StorageType("ByteStorage", "u1"),
    "BoolStorage": StorageType("BoolStorage", "?"),
    "ComplexFloatStorage": StorageType("ComplexFloatStorage", "c8"),
    "ComplexDoubleStorage": StorageType("ComplexDoubleStorage", "c16"),
    # A bare untyped storage (saved on its own, never behind a tensor) holds bytes.
    "UntypedStorage": StorageType("UntypedStorage", "u1"),
}

TORCH_DTYPE_NAMES = ("float32", "float", "float16", "half", "float64", "double", "bfloat16",
                     "int64", "long", "int32", "int", "int16", "short", "int8", "uint8",
                     "bool", "complex64", "complex128")


@dataclasses.dataclass(eq=False)
class Storage:
    """One storage of a checkpoint: `numel` elements of numpy dtype `dtype` (kind.dtype in the
    file's byte order), read from the file by `load` the first time a tensor needs them.

    A legacy view storage shares its root's elements from `offset` on. `users` counts the
    tensors built on it: a tensor alone on its storage may take the storage's buffer as is.
    """
    kind: StorageType
    key: str
    numel: int
    dtype: np.dtype
    load: Callable[["Storage"], np.ndarray] | None = None
    root: "Storage | None" = None
    offset: int = 0
    users: int = 0
    data: np.ndarray | None = None

    def elements(self) -> np.ndarray:
        if self.root is not None:
            return self.root.elements()[self.offset:self.offset + self.numel]
        if self.data is None:
            if self.load is None:
                raise ValueError(f"storage '{self.key}' has no data in the file")
            self.data = self.load(self)
        return self.data


def read_exactly_into(f, array: np.ndarray, what: str) -> None:
    """Fills a fresh contiguous array from the file object, or raises if the file ends."""
    buffer = memoryview(array.reshape(-1).view(np.uint8))
    done = 0
    while done < len(buffer):
        n = f.readinto(buffer[done:])
        if not n:
            raise ValueError(f"file ends inside {what}")
        done += n


def _is_row_major(size: tuple, stride: tuple) -> bool:
    expected = 1
    for n, s in zip(reversed(size), reversed(stride)):
        if n != 1 and s != expected:
            return False
        expected *= n
    return True


@dataclasses.dataclass(eq=False)
class PendingTensor:
    """A tensor named by the pickle, built after unpickling (legacy files put the bytes after
    the pickle, and only the tensors a caller keeps need their bytes read)."""
    storage: Storage
    offset: int
    size: tuple
    stride: tuple

    def build(self) -> np.ndarray:
        """The view of the storage as a C-contiguous native-endian array of its own."""
        storage = self.storage
        count = math.prod(self.size)
        if count == 0:
            out = np.zeros(self.size, storage.dtype)
        else:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
            if last >= storage.numel:
                raise ValueError(f"tensor view (offset {self.offset}, size {self.size}, stride "
                                 f"{self.stride}) runs past its storage of {storage.numel}")
            elements = storage.elements()
            if (storage.users == 1 and storage.root is None and self.offset == 0
                    and count == storage.numel and _is_row_major(self.size, self.stride)):
                out = elements.reshape(self.size)  # the whole storage, in order: no copy
            else:
                view = np.lib.stride_tricks.as_strided(
                    elements[self.offset:], shape=self.size,
                    strides=tuple(s * elements.itemsize for s in self.stride), writeable=False)
                out = np.array(view, order="C")
        out = out.astype(out.dtype.newbyteorder("="), copy=False)
        if storage.kind.bfloat16:
            # bfloat16 is the top half of a float32: shifting the bits up is exact.
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out


def _int_tuple(value, what: str) -> tuple:
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value):
        raise ValueError(f"tensor {what} must be a tuple of non-negative ints, got {value!r}")
    return tuple(value)


def rebuild_tensor(storage, storage_offset, size, stride, *unused) -> PendingTensor:
    """Stands in for torch._utils._rebuild_tensor(_v2): records the view of a storage.

    requires_grad, backward hooks and metadata (the extra arguments) have no meaning here.
    """
    if not isinstance(storage, Storage):
        raise ValueError(f"tensor built from {type(storage).__name__}, not a storage")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise ValueError(f"tensor storage offset must be a non-negative int: {storage_offset!r}")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise ValueError(f"tensor size {size} and stride {stride} differ in length")
    storage.users += 1
    return PendingTensor(storage, storage_offset, size, stride)


def rebuild_parameter(data, *unused) -> PendingTensor:
    """Stands in for torch._utils._rebuild_parameter(_with_state): a Parameter is its data."""
    if not isinstance(data, PendingTensor):
        raise ValueError(f"parameter built from {type(data).__name__}, not a tensor")
    return data


def latin1_encode(text, encoding="latin1") -> bytes:
    """Stands in for _codecs.encode, which protocol-2 pickles use to store bytes objects."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError(f"unexpected _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


def as_tuple(*values):
    """Stands in for torch.Size: a plain tuple of ints."""
    return tuple(*values)


SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
    ("torch", "Size"): as_tuple,
    ("_codecs", "encode"): latin1_encode,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
}
SAFE_GLOBALS.update({("torch", name): kind for name, kind in STORAGE_TYPES.items()})
SAFE_GLOBALS[("torch.storage", "UntypedStorage")] = STORAGE_TYPES["UntypedStorage"]
SAFE_GLOBALS.update({("torch", name): TorchDtype(name) for name in TORCH_DTYPE_NAMES})


class RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with an allowlist of globals and no attribute-setting builds.

    The pure-Python class is used because its opcode table can be narrowed: BUILD (which would
    call `__setstate__` or set attributes) is accepted only on an OrderedDict, where torch
    stores a state dict's `_metadata`.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, path: str, storages: "StorageTable | None" = None):
        super().__init__(file, encoding="utf-8")
        self.path = path
        self.storages = storages

    def find_class(self, module: str, name: str):
        if module == "__builtin__":  # Python 2 pickles
            module = "builtins"
        found = SAFE_GLOBALS.get((module, name))
        if found is None:
            raise UnsafeCheckpointError(
                f"{self.path}: refuses to load global {module}.{name} (only tensors, plain "
                "containers and numbers are read from checkpoints)")
        return found

    def persistent_load(self, pid):
        if self.storages is None:
            raise ValueError("a persistent id where none is expected")
        return self.storages.storage_for(pid)

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if not (type(inst) is collections.OrderedDict and type(state) is dict
                and all(type(k) is str for k in state)):
            raise UnsafeCheckpointError(
                f"{self.path}: refuses to set state on a {type(inst).__name__} object")
        inst.__dict__.update(state)

    dispatch[pickle.BUILD[0]] = load_build


class StorageTable:
    """Storages met in the pickle, by key. Zip storages are read lazily from their archive
    member; legacy storages from the offset recorded by `index_legacy_storages`."""

    def __init__(self, path: str, archive_member=None, big_endian: bool = False):
        self.path = path
        self.archive_member = archive_member  # key -> (opened member, size in bytes); zip only
        self.big_endian = big_endian
        self.by_key: dict[str, Storage] = {}
        self.legacy_file = None
        self.legacy_offsets: dict[str, int] = {}

    def numpy_dtype(self, kind: StorageType) -> np.dtype:
        return np.dtype(kind.dtype).newbyteorder(">" if self.big_endian else "<")

    def storage_for(self, pid) -> Storage:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise ValueError(f"unexpected persistent id {pid!r:.80}")
        kind, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(kind, StorageType):
            raise ValueError(f"persistent id names {kind!r:.60}, not a storage type")
        if not isinstance(numel, int) or numel < 0:
            raise ValueError(f"storage numel must be a non-negative int, got {numel!r:.40}")
        key = str(key)
        storage = self.by_key.get(key)
        if storage is None:
            load = self.load_zip_storage if self.archive_member else self.load_legacy_storage
            storage = self.by_key[key] = Storage(kind, key, numel, self.numpy_dtype(kind), load)
        if view is not None:
            view_key, offset, view_size = view
            storage = Storage(kind, str(view_key), int(view_size), storage.dtype, root=storage,
                              offset=int(offset))
            if storage.offset < 0 or storage.offset + storage.numel > storage.root.numel:
                raise ValueError(f"storage view {view!r} runs past its root storage")
        return storage

    def load_zip_storage(self, storage: Storage) -> np.ndarray:
        member, size = self.archive_member(storage.key)
        need = storage.numel * storage.dtype.itemsize
        if size < need:
            raise ValueError(f"storage '{storage.key}' holds {size} bytes, needs {need}")
        data = np.empty(storage.numel, storage.dtype)
        with member() as f:
            read_exactly_into(f, data, f"storage '{storage.key}'")
        return data

    def index_legacy_storages(self, f, keys) -> None:
        """Walks the storages after the pickle (per key: int64 element count, then the
        elements), checking each count and remembering where its bytes start."""
        count_dtype = np.dtype(">i8" if self.big_endian else "<i8")
        file_size = os.fstat(f.fileno()).st_size
        for key in keys:
            storage = self.by_key.get(str(key))
            if storage is None:
                raise ValueError(f"storage key {key!r:.40} is not used by the pickle")
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"file ends before storage '{key}'")
            count = int(np.frombuffer(head, count_dtype)[0])
            if count != storage.numel:
                raise ValueError(f"storage '{key}' holds {count} elements, the pickle says "
                                 f"{storage.numel}")
            start = f.tell()
            end = start + count * storage.dtype.itemsize
            if end > file_size:
                raise ValueError(f"file ends inside storage '{key}'")
            self.legacy_offsets[storage.key] = start
            f.seek(end)
        self.legacy_file = f

    def load_legacy_storage(self, storage: Storage) -> np.ndarray:
        if storage.key not in self.legacy_offsets:
            raise ValueError(f"storage '{storage.key}' has no data in the file")
        self.legacy_file.seek(self.legacy_offsets[storage.key])
        data = np.empty(storage.numel, storage.dtype)
        read_exactly_into(self.legacy_file, data, f"storage '{storage.key}'")
        return data


def build_tensors(obj, memo: dict | None = None):
    """Replaces every PendingTensor in a container tree by its numpy array.

    Lists and dicts are changed in place (and remembered before descending), so shared and even
    cyclic structures come out with the same sharing; a tensor used twice is built once.
    """
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, PendingTensor):
        memo[id(obj)] = built = obj.build()
        return built
    if isinstance(obj, dict):
        memo[id(obj)] = obj
        for key in list(obj):
            obj[key] = build_tensors(obj[key], memo)
        return obj
    if isinstance(obj, list):
        memo[id(obj)] = obj
        for i, item in enumerate(obj):
            obj[i] = build_tensors(item, memo)
        return obj
    if isinstance(obj, tuple):
        memo[id(obj)] = obj
        items = tuple(build_tensors(item, memo) for item in obj)
        memo[id(obj)] = rebuilt = items if any(a is not b for a, b in zip(items, obj)) else obj
        return rebuilt
    return obj


def _load_zip(path: str, archive: zipfile.ZipFile, pick):
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if not pickles:
        hint = " (a TorchScript archive? use the eager model's state_dict)" if any(
            n.endswith("/constants.pkl") for n in names) else ""
        raise ValueError(f"zip archive without <name>/data.pkl{hint}")
    root = pickles[0][:-len("data.pkl")]
    byteorder = "little"
    if root + "byteorder" in names:
        byteorder = archive.read(root + "byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise ValueError(f"unknown byteorder {byteorder!r:.20}")
    infos = {info.filename: info for info in archive.infolist()}

    def archive_member(key: str):
        info = infos.get(f"{root}data/{key}")
        if info is None:
            raise ValueError(f"the archive has no storage file {root}data/{key}")
        return (lambda: archive.open(info)), info.file_size

    storages = StorageTable(path, archive_member, big_endian=byteorder == "big")
    obj = RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), path, storages).load()
    return build_tensors(pick(obj))


def _load_legacy(path: str, f, pick):
    def header_pickle():
        return RestrictedUnpickler(f, path).load()

    try:
        magic = header_pickle()
    except UnsafeCheckpointError:
        raise
    except Exception:
        magic = None
    if magic != LEGACY_MAGIC_NUMBER:
        raise ValueError("neither a torch zip archive nor a legacy torch pickle")
    version = header_pickle()
    if version != LEGACY_PROTOCOL_VERSION:
        raise ValueError(f"unsupported legacy protocol version {version!r:.30}")
    sys_info = header_pickle()
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    storages = StorageTable(path, big_endian=not little)
    obj = RestrictedUnpickler(f, path, storages).load()
    keys = header_pickle()
    if not isinstance(keys, list):
        raise ValueError("the storage key list is missing")
    storages.index_legacy_storages(f, keys)
    return build_tensors(pick(obj))


def read_torch_checkpoint(path) -> object:
    """The object a torch.save file holds, with every tensor as a numpy array.

    Raises UnsafeCheckpointError for a pickle naming anything beyond tensors and plain data,
    ValueError (one line, naming the file) for a missing, corrupt, truncated or foreign file.
    """
    return _read(os.fspath(path), lambda obj: obj)


def _read(path: str, pick):
    """Unpickles `path`, applies `pick` to the object (tensors still pending), then reads the
    bytes of only the tensors in what `pick` returned."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such checkpoint file")
    try:
        with open(path, "rb") as f:
            if zipfile.is_zipfile(f):
                f.seek(0)
                with zipfile.ZipFile(f) as archive:
                    return _load_zip(path, archive, pick)
            f.seek(0)
            if f.read(4) == b"PK\x03\x04":
                raise ValueError("a truncated or corrupt zip archive")
            f.seek(0)
            if _is_tar(f):
                raise ValueError("the pre-0.4 tar checkpoint format is not supported")
            f.seek(0)
            return _load_legacy(path, f, pick)
    except UnsafeCheckpointError:
        raise
    except EOFError:
        raise InputError(f"{path}: not a readable PyTorch checkpoint: the file ends early "
                         "(truncated?)") from None
    except RecursionError:
        raise InputError(f"{path}: the checkpoint's pickle nests too deeply") from None
    except Exception as error:  # corrupt input surfaces as many exception types
        message = " ".join(str(error).split()) or type(error).__name__
        if not message.startswith(path):
            message = f"{path}: not a readable PyTorch checkpoint: {message}"
        raise InputError(message) from error


def _is_tar(f) -> bool:
    try:
        with tarfile.open(fileobj=f, mode="r:"):
            return True
    except (tarfile.TarError, OSError, EOFError, ValueError):
        return False


def read_state_dict(path) -> dict[str, np.ndarray]:
    """The checkpoint's state dict {key: array}: the top-level dict itself, or the one under
    "state_dict" / "model" when the file wraps it with optimizer state and counters (whose
    tensors are then never read)."""
    path = os.fspath(path)

    def state_dict_part(obj) -> dict:
        if isinstance(obj, dict):
            for wrapper in STATE_DICT_WRAPPERS:
                if isinstance(obj.get(wrapper), dict):
                    obj = obj[wrapper]
                    break
        if not isinstance(obj, dict):
            raise InputError(f"{path}: holds a {type(obj).__name__}, not a state dict")
        for key, value in obj.items():
            if not isinstance(key, str) or not isinstance(value, PendingTensor):
                raise InputError(f"{path}: state dict entry {key!r:.60} is a "
                                 f"{type(value).__name__}, not a tensor")
        if not obj:
            raise InputError(f"{path}: the state dict is empty")
        return dict(obj)

    return _read(path, state_dict_part)

