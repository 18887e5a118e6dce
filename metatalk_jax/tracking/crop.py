"""The crop module: a per-frame square face crop, its warp to renderer size, and paste-back.

AudioDVP crops every frame with one fixed box (the mean face box, widened and shifted) and resizes
it to 256 px, so a head that moves or leans in leaves the box, and the renderer's resolution is
spent on background. Here each frame gets its own square box around the face area, smoothed over
time so the crop does not shake, and the box is stored as a similarity transform:

    crop pixel (u, v) = scale * (frame pixel (x, y) + 0.5 - box corner) - 0.5

(pixel indices, as OpenCV warps them; +-0.5 because pixel i covers [i, i+1), so the box's edges,
not its outer pixel centres, map onto the crop's edges). Points (landmarks, projected vertices) and
box centres use continuous coordinates, as the rasterizer: pixel (i, j) is centred at
(j + 0.5, i + 0.5), and there the map is simply u' = scale * (u - box corner). The same box serves
every resolution (256 / 512 / 1024 for the renderer, smaller for fitting); only the scale changes.
Because the transform is a similarity, a camera that projects the 3D face into the full frame
projects it into the crop after the same 2D map (`screen_transform`), so the synthetic face lands on
the real face area at any resolution.

Paste-back warps a crop into the original frame (up to 4K) with the inverse transform and blends it
with a feathered mask, working only on the crop's footprint in the frame.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

# Warping: the crop is usually an enlargement of the face area (cubic interpolates the samples
# exactly at the original pixel centres); paste-back samples it with Lanczos, which measured
# closest to the identity of the OpenCV kernels, then one back-projection step (paste_back).
CROP_INTERPOLATION = cv2.INTER_CUBIC
PASTE_INTERPOLATION = cv2.INTER_LANCZOS4


@dataclasses.dataclass(frozen=True)
class CropBoxes:
    """Square crop boxes of a video, in frame pixels.

    centers: [T, 2] float32 box centres (x, y; continuous coordinates);
    sizes: [T] float32 side lengths;
    frame_size: (H, W) of the original frames.
    """

    centers: np.ndarray
    sizes: np.ndarray
    frame_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.sizes)

    def scales(self, resolution: int) -> np.ndarray:
        """[T] crop pixels per frame pixel at `resolution`."""
        return resolution / self.sizes

    def matrices(self, resolution: int) -> np.ndarray:
        """[T, 2, 3] float64 affine maps frame pixel index -> crop pixel index at `resolution`."""
        return crop_matrices(self.centers, self.sizes, resolution)

    def screen_transform(self, resolution: int) -> np.ndarray:
        """[T, 2, 3] float32 frame-to-crop maps in continuous coordinates (render's
        `screen_transform`, for projected 3D points): u' = scale * (u - box corner)."""
        scale = self.scales(resolution).astype(np.float64)
        corner = self.centers.astype(np.float64) - self.sizes[:, None] / 2.0
        out = np.zeros((len(scale), 2, 3))
        out[:, 0, 0] = out[:, 1, 1] = scale
        out[:, :, 2] = -scale[:, None] * corner
        return out.astype(np.float32)

    def take(self, index) -> "CropBoxes":
        return CropBoxes(self.centers[index], self.sizes[index], self.frame_size)


def crop_matrices(centers: np.ndarray, sizes: np.ndarray, resolution: int) -> np.ndarray:
    """[T, 2] centres and [T] sides (frame px) -> [T, 2, 3] frame-to-crop affine matrices."""
    centers = np.asarray(centers, np.float64).reshape(-1, 2)
    sizes = np.asarray(sizes, np.float64).reshape(-1)
    scale = resolution / sizes
    corner = centers - sizes[:, None] / 2.0
    out = np.zeros((len(sizes), 2, 3))
    out[:, 0, 0] = scale
    out[:, 1, 1] = scale
    out[:, :, 2] = scale[:, None] * (0.5 - corner) - 0.5
    return out


def invert_matrices(matrices: np.ndarray) -> np.ndarray:
    """[..., 2, 3] affine maps -> their inverses, [..., 2, 3]."""
    a = np.asarray(matrices, np.float64)
    lin = a[..., :2]
    inv = np.linalg.inv(lin)
    return np.concatenate([inv, -inv @ a[..., 2:]], -1)


def boxes_from_points(points: np.ndarray, frame_size: tuple[int, int], *, margin: float = 1.6,
                      vertical_shift: float = 0.1, size_sigma: float = 6.0,
                      center_sigma: float = 1.5) -> CropBoxes:
    """Temporally stabilised square boxes around the face area.

    Args:
      points: [T, K, 2] face points per frame in frame pixels (continuous coordinates, pixel
        centres at +0.5): the 68 landmarks first, later the
        fitted 3DMM's projected face vertices (which include the forehead the landmarks miss).
      frame_size: (H, W).
      margin: box side = margin x the larger side of the points' extent.
      vertical_shift: moves the box up by this fraction of its side (landmarks stop at the brows,
        so the face area extends above them; AudioDVP shifts by 0.2 of its wider box).
      size_sigma, center_sigma: Gaussian smoothing along time (frames). The side is smoothed
        more than the centre: zoom jitter is more visible than a small drift, while the centre
        must follow real head motion.
    """
    pts = np.asarray(points, np.float64)
    lo, hi = pts.min(axis=1), pts.max(axis=1)                    # [T, 2]
    extent = (hi - lo).max(axis=1)
    sizes = margin * extent
    centers = (lo + hi) / 2.0
    centers[:, 1] -= vertical_shift * sizes
    if len(sizes) > 1:
        if size_sigma > 0:
            sizes = gaussian_filter1d(sizes, size_sigma, mode="nearest")
        if center_sigma > 0:
            centers = gaussian_filter1d(centers, center_sigma, axis=0, mode="nearest")
    return CropBoxes(centers.astype(np.float32), sizes.astype(np.float32),
                     (int(frame_size[0]), int(frame_size[1])))


def antialias_sigma(scale: float) -> float:
    """Gaussian prefilter (frame px) for shrinking by `scale` < 1, else 0: removes the detail
    above the crop's Nyquist limit that point sampling would alias."""
    return 0.0 if scale >= 1.0 else 0.5 * math.sqrt(1.0 / scale ** 2 - 1.0)


def crop_frame(frame: np.ndarray, matrix: np.ndarray, resolution: int, *,
               dtype=np.uint8) -> np.ndarray:
    """Warps one frame into its face crop.

    Args:
      frame: [H, W, C] uint8 (or float) frame.
      matrix: [2, 3] frame-to-crop map (`CropBoxes.matrices(resolution)[t]`).
      resolution: crop side R in pixels.
      dtype: np.uint8 (rounded) or np.float32 (unrounded, for exact round trips).
    Returns: [R, R, C] crop. Pixels outside the frame repeat the frame's border.
    """
    scale = float(matrix[0, 0])
    src = frame.astype(np.float32)
    sigma = antialias_sigma(scale)
    if sigma > 0.0:
        src = cv2.GaussianBlur(src, (0, 0), sigma)
    out = cv2.warpAffine(src, np.asarray(matrix, np.float64), (resolution, resolution),
                         flags=CROP_INTERPOLATION, borderMode=cv2.BORDER_REPLICATE)
    if np.dtype(dtype) == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(dtype)


def feather_mask(size, feather: int) -> np.ndarray:
    """[H, W] float32 mask (size: R for a square crop, or (H, W)): 1 inside, falling linearly
    to ~0 over `feather` px at every edge (a smooth seam instead of a visible box)."""
    height, width = (size, size) if np.isscalar(size) else size

    def ramp(n):
        r = np.clip((np.arange(n) + 0.5) / max(feather, 1e-6), 0.0, 1.0)
        return np.minimum(r, r[::-1])
    return np.minimum(ramp(height)[:, None], ramp(width)[None, :]).astype(np.float32)


def footprint(matrix: np.ndarray, resolution: int, frame_size: tuple[int, int]):
    """The frame-pixel rectangle (x0, y0, x1, y1), end-exclusive and clipped to the frame,
    that the crop covers (plus a 3 px border for the interpolation kernel)."""
    inv = invert_matrices(matrix)
    corners = np.array([[-0.5, -0.5, 1], [resolution - 0.5, -0.5, 1],
                        [-0.5, resolution - 0.5, 1], [resolution - 0.5, resolution - 0.5, 1]])
    xy = corners @ inv.T
    h, w = frame_size
    x0 = int(np.clip(np.floor(xy[:, 0].min()) - 3, 0, w))
    y0 = int(np.clip(np.floor(xy[:, 1].min()) - 3, 0, h))
    x1 = int(np.clip(np.ceil(xy[:, 0].max()) + 4, 0, w))
    y1 = int(np.clip(np.ceil(xy[:, 1].max()) + 4, 0, h))
    return x0, y0, x1, y1


def paste_back(frame: np.ndarray, crop: np.ndarray, matrix: np.ndarray, *,
               mask: np.ndarray | None = None, feather: int | None = None,
               refine: int = 1) -> np.ndarray:
    """Blends a face crop back into its full-resolution frame.

    Args:
      frame: [H, W, 3] uint8 original frame (up to 4K; only the crop's footprint is touched).
      crop: [R, R, 3] uint8 or float (0-255) face crop, e.g. the renderer's output.
      matrix: [2, 3] frame-to-crop map used to make the crop.
      mask: optional [R, R] float in [0, 1] of where the crop should replace the frame (e.g. a
        face mask already softened); it is multiplied by the border feather.
      feather: width of the border ramp in crop pixels (default R/16).
      refine: back-projection steps when the crop enlarges the face (scale > 1): the warped-back
        face P is corrected by P += warp_back(crop - crop_of(P)), so that cropping the pasted
        face gives the crop again (least squares; enlarging is one-to-one). One step takes the
        crop-then-paste round trip on a real frame from 2-level outliers to exact; a shrinking
        crop (HD frames) is only interpolated, since there many frames give the same crop.
    Returns: a new [H, W, 3] uint8 frame.
    """
    resolution = crop.shape[0]
    feather = max(1, resolution // 16) if feather is None else feather
    alpha = feather_mask(resolution, feather)
    if mask is not None:
        alpha = alpha * np.asarray(mask, np.float32)
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = footprint(matrix, resolution, (h, w))
    out = frame.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    # Shift the map so the warp writes straight into the footprint's sub-image.
    local = np.asarray(matrix, np.float64).copy()
    local[:, 2] += local[:, :2] @ np.array([x0, y0], np.float64)
    size = (x1 - x0, y1 - y0)
    flags = PASTE_INTERPOLATION | cv2.WARP_INVERSE_MAP
    crop_f = crop.astype(np.float32)
    face = cv2.warpAffine(crop_f, local, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    if float(local[0, 0]) > 1.0:
        for _ in range(refine):
            residual = crop_f - crop_frame(face, local, resolution, dtype=np.float32)
            face = face + cv2.warpAffine(residual, local, size, flags=flags,
                                         borderMode=cv2.BORDER_REPLICATE)
    a = cv2.warpAffine(alpha, local, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)[..., None]
    region = out[y0:y1, x0:x1].astype(np.float32)
    blended = region * (1.0 - a) + face * a
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def frame_camera(boxes: CropBoxes, resolution: int, fov_deg: float = 25.0):
    """The 3D camera of the whole video, in frame pixels, rasterizing at `resolution`.

    Its field of view (AudioDVP's 25 deg) spans the mean crop box and its principal point is the
    mean box centre, so a face at the model origin fills a typical crop as AudioDVP's face fills
    its 256 px image. Rendering frame t's crop = this camera + `boxes.screen_transform(R)[t]`.
    Unlike AudioDVP's camera it does not mirror the image (focal_x > 0), so the model's landmark
    i is image landmark i.
    """
    from metatalk_jax.face3d.geometry import PinholeCamera  # the crop module itself is 2D

    side = float(np.mean(boxes.sizes))
    center = np.mean(boxes.centers, axis=0)
    focal = (side / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return PinholeCamera(focal_x=focal, focal_y=focal, cx=float(center[0]),
                         cy=float(center[1]), distance=8.0, height=resolution,
                         width=resolution)
