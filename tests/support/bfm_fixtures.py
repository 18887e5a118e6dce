"""Fake BFM2009 files for the tests: the real names, fields, shapes, dtypes and 1-based indices,
small random content. Also the plain-loop reference of AudioDVP's mouth rule.

The real files hold N_full = 53,490 BFM vertices, N_exp = 53,215 expression-basis vertices and
N_front = 35,709 front vertices; here the three counts are parameters (the real ones work too,
they only make big files). The front vertices form a real triangulated grid, so tri, point_buf,
tri_mask2 are consistent with each other, as in Deep3DFaceRecon's facemodel_info.mat.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.io

N_ID_PCS = 199     # BFM2009 shape/texture components
N_EXP_PCS = 79     # Guo et al.'s expression components
POINT_BUF_WIDTH = 8

ORIGINAL_FILES = ("01_MorphableModel.mat", "Exp_Pca.bin", "std_exp.txt", "BFM_exp_idx.mat",
                  "BFM_front_idx.mat", "facemodel_info.mat")


def front_grid(n_front: int):
    """A grid triangulation of n_front vertices (row-major, last row possibly partial).

    Returns (cols, triangles [F,3] 0-based): two triangles per complete cell.
    """
    cols = int(np.ceil(np.sqrt(n_front * 1.25)))
    rows = -(-n_front // cols)
    tris = []
    for r in range(rows - 1):
        for c in range(cols - 1):
            a, b, d, e = r * cols + c, r * cols + c + 1, (r + 1) * cols + c, (r + 1) * cols + c + 1
            if e < n_front:
                tris += [(a, b, e), (a, e, d)]
            elif d < n_front:
                tris.append((a, b, d))
    return cols, np.asarray(tris, np.int64)


def point_buf_1based(tri0: np.ndarray, n_vertices: int, width: int = POINT_BUF_WIDTH):
    """BFM's point_buf: the triangles around each vertex, 1-based, padded with F+1."""
    f = len(tri0)
    around = [[] for _ in range(n_vertices)]
    for t, corners in enumerate(tri0.tolist()):
        for vid in corners:
            around[vid].append(t + 1)
    buf = np.full((n_vertices, width), f + 1, np.int64)
    for vid, ts in enumerate(around):
        assert len(ts) <= width, "grid vertices have at most 6 triangles"
        buf[vid, :len(ts)] = ts
    return buf


def write_bfm2009(folder: str, n_full: int = 700, n_exp: int = 600, n_front: int = 400,
                  seed: int = 0) -> dict:
    """Writes the six BFM2009 original files into `folder` (created if needed).

    Returns the 0-based index chain used: {'trim': [n_exp] ids into n_full,
    'front': [n_front] ids into n_exp, 'triangles': [F,3] front-vertex ids}.
    """
    assert n_full >= n_exp >= n_front >= 100
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    path = lambda name: os.path.join(folder, name)  # noqa: E731

    # Index chain, sorted like the real files.
    trim = np.sort(rng.choice(n_full, n_exp, replace=False))
    front = np.sort(rng.choice(n_exp, n_front, replace=False))
    front_full = trim[front]

    # 01_MorphableModel.mat: float32 columns, micrometres; the front vertices lie on a dome so
    # the mouth rule has a real lower half to find.
    cols, tri0 = front_grid(n_front)
    r, c = np.divmod(np.arange(n_front), cols)
    x = (c / (cols - 1) - 0.5) * 160000.0
    y = 80000.0 - r / max(r.max(), 1) * 190000.0
    z = 60000.0 + 60000.0 * np.exp(-(x / 60000.0) ** 2 - (y / 90000.0) ** 2)
    shape_mu = rng.normal(0, 50000.0, (n_full, 3))
    shape_mu[front_full] = np.stack([x, y, z], 1) + rng.normal(0, 500.0, (n_front, 3))
    tex_mu = rng.uniform(40.0, 220.0, (n_full, 3))
    scale = 1.0 / np.sqrt(3 * n_full)  # roughly unit-norm principal components
    ev_decay = 1.0 / (1.0 + np.arange(N_ID_PCS))
    scipy.io.savemat(path("01_MorphableModel.mat"), {
        "shapeMU": shape_mu.reshape(-1, 1).astype(np.float32),
        "shapePC": (rng.standard_normal((3 * n_full, N_ID_PCS)) * scale).astype(np.float32),
        "shapeEV": (9e5 * ev_decay).reshape(-1, 1).astype(np.float32),
        "texMU": tex_mu.reshape(-1, 1).astype(np.float32),
        "texPC": (rng.standard_normal((3 * n_full, N_ID_PCS)) * scale).astype(np.float32),
        "texEV": (4e3 * ev_decay).reshape(-1, 1).astype(np.float32),
        "tl": (rng.integers(0, n_full, (2 * n_full, 3)) + 1).astype(np.float64),
    })

    # Exp_Pca.bin: int32 count, float32 mean [3*n_exp], float32 components [79, 3*n_exp].
    exp_mu = rng.normal(0, 1000.0, 3 * n_exp).astype("<f4")
    exp_pc = (rng.standard_normal((N_EXP_PCS, 3 * n_exp)) / np.sqrt(3 * n_exp)).astype("<f4")
    with open(path("Exp_Pca.bin"), "wb") as fh:
        fh.write(np.array([N_EXP_PCS], "<i4").tobytes())
        fh.write(exp_mu.tobytes())
        fh.write(exp_pc.tobytes())
    # std_exp.txt: one line of 79 numbers, no trailing newline (as the real file).
    std = 4.5e5 / (1.0 + np.arange(N_EXP_PCS)) ** 1.6
    with open(path("std_exp.txt"), "w") as fh:
        fh.write(" ".join(f"{s:g}" for s in std))

    scipy.io.savemat(path("BFM_exp_idx.mat"),
                     {"trimIndex": (trim + 1).reshape(-1, 1).astype(np.uint16 if n_full < 65536
                                                                     else np.uint32)})
    scipy.io.savemat(path("BFM_front_idx.mat"),
                     {"idx": (front + 1).reshape(-1, 1).astype(np.float32)})

    # facemodel_info.mat: all float32 like the real file.
    f = len(tri0)
    mask_ids = np.flatnonzero((r > 0) & (r < r.max()) & (c > 0) & (c < cols - 1))
    in_mask = np.zeros(n_front, bool)
    in_mask[mask_ids] = True
    local = np.full(n_front, -1)
    local[mask_ids] = np.arange(mask_ids.size)
    tri_mask2 = local[tri0[in_mask[tri0].all(1)]]  # 1-based into frontmask2_idx, not vertices
    skin = (rng.uniform(size=n_front) < 0.7).astype(np.float32)
    keypoints = rng.choice(n_front, 68, replace=False)
    scipy.io.savemat(path("facemodel_info.mat"), {
        "tri": (tri0 + 1).astype(np.float32),
        "keypoints": (keypoints + 1).reshape(1, -1).astype(np.float32),
        "point_buf": point_buf_1based(tri0, n_front).astype(np.float32),
        "frontmask2": in_mask.reshape(1, -1).astype(np.float32),
        "tri_mask2": (tri_mask2 + 1).astype(np.float32),
        "frontmask2_idx": (mask_ids + 1).reshape(-1, 1).astype(np.float32),
        "skinmask": skin.reshape(1, -1),
    })
    assert f > 0
    return {"trim": trim, "front": front, "triangles": tri0}


def drop_field(mat_path: str, field: str) -> None:
    """Rewrites a .mat file without one of its fields (for missing-field tests)."""
    data = {k: v for k, v in scipy.io.loadmat(mat_path).items() if not k.startswith("__")}
    del data[field]
    scipy.io.savemat(mat_path, data)


def audiodvp_mouth_loop(mean_shape, triangles):
    """AudioDVP's lower-face rule, one vertex and one triangle at a time: [M,3] triangles.

    Centre the mean shape, divide by its largest coordinate; vertices with y < 0 are mouth
    vertices; keep (in order) every triangle that touches one.
    """
    pts = np.asarray(mean_shape, np.float64).reshape(-1, 3)
    centred = pts - pts.mean(axis=0)
    biggest = centred.max()
    is_mouth = []
    for vertex in range(len(centred)):
        is_mouth.append(centred[vertex, 1] / biggest < 0.0)
    kept = []
    for corners in triangles:
        if any(is_mouth[c] for c in corners):
            kept.append(list(corners))
    return np.array(kept)
