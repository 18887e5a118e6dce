"""Loaders for the Basel Face Model 2009 and Deep3DFaceRecon's BFM_model_front.mat.

Both produce the 35,709-vertex "front" face that AudioDVP and Deep3DFaceRecon use, as a
`MorphableModel`: identity basis = shapePC * shapeEV (first 80), expression basis = expPC * std_exp
(first 64, Guo et al.'s Exp_Pca.bin), texture basis = texPC * texEV (first 80) / 255. Geometry is
scaled (and for Deep3DFaceRecon recentred) by `apply_convention`.

The vertex chain: BFM2009 has N_full (53,490) vertices; BFM_exp_idx.mat `trimIndex` picks the
N_exp (53,215) vertices that the expression basis covers; BFM_front_idx.mat `idx` picks the
N_front (35,709) front vertices out of those. All index files are 1-based (MATLAB). The counts
are read from the files, so smaller files with the same layout load too (the tests use them).

Every missing file, missing field or inconsistent size raises FileNotFoundError / ValueError
with a one-line message that names the file.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.io

from metatalk_jax.errors import InputError, MissingInputError
from metatalk_jax.face3d.morphable import CONVENTIONS, MorphableModel, apply_convention

K_ID, K_EXP, K_TEX = 80, 64, 80
NUM_LANDMARKS = 68
# Deep3DFaceRecon divided BFM's micrometres by 1e5 when it wrote BFM_model_front.mat.
DEEP3D_FILE_SCALE = 1e5


# -- the lower-face set --------------------------------------------------------------------------

def audiodvp_mouth_triangle_ids(mean_shape: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """AudioDVP's lower-face triangle set: [M] int32 ids into `triangles`, ascending.

    A vertex is a "mouth vertex" when its y is below the mean y of the shape (AudioDVP centres
    the mean shape and divides by its largest coordinate, then thresholds y at 0); a triangle is
    in the set when any of its vertices is. Any positive scale of `mean_shape` gives the same set.

    Args:
      mean_shape: [V, 3] vertex positions (any units, y up).
      triangles: [F, 3] vertex ids.
    """
    geo = np.asarray(mean_shape, np.float64)
    geo = geo - geo.mean(axis=0, keepdims=True)
    geo = geo / geo.max()
    below = geo[:, 1] < 0.0
    return np.flatnonzero(below[np.asarray(triangles)].any(axis=1)).astype(np.int32)


# -- reading files with messages that name them ----------------------------------------------

def _require_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise MissingInputError(f"{path}: file not found ({what})")


def _read_mat(path: str, fields: tuple, what: str) -> dict:
    """Reads only `fields` from a MATLAB v5 file; names the file and field on any problem."""
    _require_file(path, what)
    try:
        data = scipy.io.loadmat(path, variable_names=list(fields))
    except NotImplementedError as err:  # scipy's answer to v7.3 (HDF5) files
        raise InputError(f"{path}: MATLAB v7.3 files are not supported; re-save it with "
                         f"save(..., '-v7') ({err})") from None
    except Exception as err:  # scipy raises several types for corrupt/foreign files
        raise InputError(f"{path}: not a readable MATLAB .mat file ({type(err).__name__}: "
                         f"{err})") from None
    missing = [f for f in fields if f not in data]
    if missing:
        raise InputError(f"{path}: missing field(s) {missing} ({what})")
    return data


def _index_vector(arr, path: str, field: str, upper: int, size: int | None = None) -> np.ndarray:
    """A 1-based MATLAB index array (any shape/dtype) -> 0-based int64 vector, range-checked."""
    vals = np.asarray(arr).reshape(-1)
    if size is not None and vals.size != size:
        raise InputError(f"{path}: field '{field}' has {vals.size} entries, expected {size}")
    ids = vals.astype(np.int64)
    if vals.size and (np.any(ids != vals) or ids.min() < 1 or ids.max() > upper):
        raise InputError(f"{path}: field '{field}' must hold 1-based integer ids in [1, {upper}]"
                         f", got range [{vals.min()}, {vals.max()}]")
    return ids - 1


def _column_block(pc: np.ndarray, ev: np.ndarray, rows: np.ndarray, k: int, path: str,
                  field: str, n_rows: int) -> np.ndarray:
    """(PC * EV)[:, :k] for vertex `rows`: [len(rows), 3, k] float64.

    Picks the rows and the first k columns before multiplying, so the full [3N, 199] product is
    never formed (the real shapePC is 160,470 x 199 float32).
    """
    pc = np.asarray(pc)
    ev = np.asarray(ev, np.float64).reshape(-1)
    if pc.ndim != 2 or pc.shape[0] != n_rows or pc.shape[1] < k:
        raise InputError(f"{path}: field '{field}' has shape {pc.shape}, expected "
                         f"({n_rows}, >={k})")
    if ev.size < k:
        raise InputError(f"{path}: its eigenvalue field for '{field}' has {ev.size} values, "
                         f"expected >= {k}")
    flat_rows = (3 * rows[:, None] + np.arange(3)).reshape(-1)
    # loadmat gives Fortran-ordered arrays: the first k columns are one contiguous slab.
    block = np.take(pc[:, :k], flat_rows, axis=0).astype(np.float64)
    return (block * ev[:k]).reshape(rows.size, 3, k)


def _xyz_rows(vec, rows: np.ndarray, path: str, field: str, n_vertices: int) -> np.ndarray:
    """A [3N] or [3N,1] or [1,3N] per-vertex xyz vector -> [len(rows), 3] float64."""
    flat = np.asarray(vec).reshape(-1)
    if flat.size != 3 * n_vertices:
        raise InputError(f"{path}: field '{field}' has {flat.size} values, expected "
                         f"{3 * n_vertices} (3 x {n_vertices} vertices)")
    return flat.reshape(n_vertices, 3)[rows].astype(np.float64)


def _read_exp_pca(path: str, n_exp: int, rows: np.ndarray, k: int) -> tuple[int, np.ndarray]:
    """Guo et al.'s Exp_Pca.bin: int32 count, float32 mean [3*n_exp], float32 [count, 3*n_exp].

    Returns (count, expPC[:, :k] for vertex `rows` as [len(rows), 3, k] float64). The vertex
    count follows from the file size and must equal trimIndex's length.
    """
    _require_file(path, "BFM2009 expression basis of Guo et al.")
    size = os.path.getsize(path)
    if size < 4:
        raise InputError(f"{path}: too short ({size} bytes) for an Exp_Pca.bin header")
    count = int(np.fromfile(path, dtype="<i4", count=1)[0])
    floats, rest = divmod(size - 4, 4)
    if count < k or rest or floats % (3 * (count + 1)):
        raise InputError(f"{path}: {size} bytes do not hold int32 count={count} (>= {k}) plus "
                         f"(count+1) float32 blocks of 3*vertices")
    n_file = floats // (3 * (count + 1))
    if n_file != n_exp:
        raise InputError(f"{path}: holds {n_file} vertices but BFM_exp_idx.mat trimIndex has "
                         f"{n_exp}")
    # Skip the int32 count and the (unused) mean; read only the first k components.
    comps = np.fromfile(path, dtype="<f4", count=k * 3 * n_exp, offset=4 + 12 * n_exp)
    comps = comps.reshape(k, n_exp, 3)[:, rows, :]
    return count, np.transpose(comps, (1, 2, 0)).astype(np.float64)


def _read_std_exp(path: str, count: int) -> np.ndarray:
    _require_file(path, "standard deviations of the expression basis")
    try:
        std = np.loadtxt(path, dtype=np.float64).reshape(-1)
    except ValueError as err:
        raise InputError(f"{path}: not a list of numbers ({err})") from None
    if std.size != count:
        raise InputError(f"{path}: has {std.size} values, Exp_Pca.bin has {count} components")
    return std


_TOPOLOGY_FIELDS = ("tri", "point_buf", "keypoints", "frontmask2_idx", "skinmask")


def _topology(info: dict, path: str, n_front: int) -> dict:
    """facemodel_info.mat / BFM_model_front.mat topology fields -> 0-based model arrays.

    tri [F,3] and point_buf [V,8] (padded with F+1) are 1-based; after the shift the pad is F,
    which is what MorphableModel expects. tri_mask2 (the triangles of the frontmask2 region,
    1-based into frontmask2_idx rather than into the vertices) is not needed and not read.
    """
    tri_raw = np.asarray(info["tri"])
    if tri_raw.ndim != 2 or tri_raw.shape[1] != 3:
        raise InputError(f"{path}: field 'tri' has shape {tri_raw.shape}, expected (F, 3)")
    f = tri_raw.shape[0]
    tri = _index_vector(tri_raw, path, "tri", n_front).reshape(f, 3)
    pb_raw = np.asarray(info["point_buf"])
    if pb_raw.ndim != 2 or pb_raw.shape[0] != n_front:
        raise InputError(f"{path}: field 'point_buf' has shape {pb_raw.shape}, expected "
                         f"({n_front}, P)")
    point_buf = _index_vector(pb_raw, path, "point_buf", f + 1).reshape(pb_raw.shape)
    landmarks = _index_vector(info["keypoints"], path, "keypoints", n_front, NUM_LANDMARKS)
    face_ids = _index_vector(info["frontmask2_idx"], path, "frontmask2_idx", n_front)
    face_mask = np.zeros(n_front, np.float32)
    face_mask[face_ids] = 1.0
    skin = np.asarray(info["skinmask"], np.float32).reshape(-1)
    if skin.size != n_front:
        raise InputError(f"{path}: field 'skinmask' has {skin.size} values, expected {n_front}")
    return {"triangles": tri.astype(np.int32), "point_buf": point_buf.astype(np.int32),
            "landmark_ids": landmarks.astype(np.int32), "face_mask": face_mask,
            "skin_mask": (skin > 0.5).astype(np.float32)}


def _assemble(mean_raw, id_raw, exp_raw, albedo, tex_basis, topo, convention, name):
    """Raw BFM-unit geometry + albedo in [0,1] + topology -> a validated MorphableModel."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; one of {list(CONVENTIONS)}")
    mean, bases = apply_convention(mean_raw, {"id": id_raw, "exp": exp_raw}, convention)
    mouth = audiodvp_mouth_triangle_ids(mean_raw, topo["triangles"])
    model = MorphableModel(
        mean_shape=mean, id_basis=bases["id"], exp_basis=bases["exp"],
        mean_albedo=np.asarray(albedo, np.float32), tex_basis=np.asarray(tex_basis, np.float32),
        mouth_triangle_ids=mouth, convention=convention, name=name, **topo)
    return model.validate()


# -- public loaders ------------------------------------------------------------------------------

def load_bfm2009(folder: str, convention: str = "audiodvp") -> MorphableModel:
    """Builds the front face model from the BFM2009 originals in `folder`.

    Reads 01_MorphableModel.mat (shapeMU/PC/EV, texMU/PC/EV), Exp_Pca.bin, std_exp.txt,
    BFM_exp_idx.mat (trimIndex), BFM_front_idx.mat (idx) and facemodel_info.mat (tri, point_buf,
    keypoints, frontmask2_idx, skinmask).

    Returns a MorphableModel with V = len(idx) vertices: mean_shape [V,3] and id/exp bases
    [V,3,80]/[V,3,64] in the convention's model units, albedo [V,3] and tex basis [V,3,80] in
    [0,1] units, landmark_ids = keypoints - 1 (Deep3DFaceRecon's order: iBUG landmark 0 on the
    subject's right, x < 0), face_mask = frontmask2_idx region, skin_mask = skinmask.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; one of {list(CONVENTIONS)}")
    join = lambda name: os.path.join(folder, name)  # noqa: E731

    # Index chain first: it fixes the vertex counts everything else is checked against.
    exp_idx_path = join("BFM_exp_idx.mat")
    trim = _read_mat(exp_idx_path, ("trimIndex",), "BFM2009 vertices covered by the "
                     "expression basis")["trimIndex"]
    front_path = join("BFM_front_idx.mat")
    front = _read_mat(front_path, ("idx",), "front-face vertices")["idx"]
    n_exp = int(np.asarray(trim).size)
    front_ids = _index_vector(front, front_path, "idx", n_exp)  # into the N_exp vertices

    bfm_path = join("01_MorphableModel.mat")
    bfm = _read_mat(bfm_path, ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV"),
                    "BFM2009 morphable model")
    n_full, rest = divmod(np.asarray(bfm["shapeMU"]).size, 3)
    if rest:
        raise InputError(f"{bfm_path}: field 'shapeMU' has {np.asarray(bfm['shapeMU']).size} "
                         f"values, not a multiple of 3")
    trim_ids = _index_vector(trim, exp_idx_path, "trimIndex", n_full)
    rows = trim_ids[front_ids]  # front vertices as ids into BFM's N_full

    mean_raw = _xyz_rows(bfm["shapeMU"], rows, bfm_path, "shapeMU", n_full)
    id_raw = _column_block(bfm["shapePC"], bfm["shapeEV"], rows, K_ID, bfm_path, "shapePC",
                           3 * n_full)
    albedo = _xyz_rows(bfm["texMU"], rows, bfm_path, "texMU", n_full) / 255.0
    tex_basis = _column_block(bfm["texPC"], bfm["texEV"], rows, K_TEX, bfm_path, "texPC",
                              3 * n_full) / 255.0
    del bfm

    count, exp_pc = _read_exp_pca(join("Exp_Pca.bin"), n_exp, front_ids, K_EXP)
    std = _read_std_exp(join("std_exp.txt"), count)
    exp_raw = exp_pc * std[:K_EXP]

    info_path = join("facemodel_info.mat")
    topo = _topology(_read_mat(info_path, _TOPOLOGY_FIELDS, "front-face topology"),
                     info_path, rows.size)
    return _assemble(mean_raw, id_raw, exp_raw, albedo, tex_basis, topo, convention, "bfm2009")


def load_deep3d_front(path: str, convention: str = "deep3d") -> MorphableModel:
    """Reads Deep3DFaceRecon's BFM_model_front.mat (what its transferBFM09 writes).

    The file holds meanshape [1,3N] and idBase/exBase [3N,80]/[3N,64] already divided by 1e5
    (not recentred), meantex [1,3N] and texBase [3N,80] in 0-255 units, and the same topology
    fields as facemodel_info.mat. Geometry is brought back to BFM units and then scaled by the
    convention, so "deep3d" gives Deep3DFaceRecon's recentred 1/1e5 model and "audiodvp" the
    1/92156.7, not recentred one; the result equals `load_bfm2009` on the originals.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; one of {list(CONVENTIONS)}")
    d = _read_mat(path, ("meanshape", "meantex", "idBase", "exBase", "texBase")
                  + _TOPOLOGY_FIELDS, "Deep3DFaceRecon BFM_model_front.mat")
    n, rest = divmod(np.asarray(d["meanshape"]).size, 3)
    if rest:
        raise InputError(f"{path}: field 'meanshape' has {np.asarray(d['meanshape']).size} "
                         f"values, not a multiple of 3")
    rows = np.arange(n)
    ones = np.ones(max(K_ID, K_EXP, K_TEX))  # the bases already include the eigenvalues
    mean_raw = _xyz_rows(d["meanshape"], rows, path, "meanshape", n) * DEEP3D_FILE_SCALE
    id_raw = _column_block(d["idBase"], ones, rows, K_ID, path, "idBase", 3 * n) \
        * DEEP3D_FILE_SCALE
    exp_raw = _column_block(d["exBase"], ones, rows, K_EXP, path, "exBase", 3 * n) \
        * DEEP3D_FILE_SCALE
    albedo = _xyz_rows(d["meantex"], rows, path, "meantex", n) / 255.0
    tex_basis = _column_block(d["texBase"], ones, rows, K_TEX, path, "texBase", 3 * n) / 255.0
    topo = _topology(d, path, n)
    return _assemble(mean_raw, id_raw, exp_raw, albedo, tex_basis, topo, convention,
                     "deep3d_front")
