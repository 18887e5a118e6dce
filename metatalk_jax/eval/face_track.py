"""Face-track crops for scoring real videos with SyncNet, after syncnet_python's run_pipeline.py.

The reference (run_pipeline.py crop_video), per frame of a face track with box (x0, y0, x1, y1):
  s = max(box height, box width) / 2, centre (x, y) = box centre; s, x and y are median-filtered
  over 13 frames (scipy.signal.medfilt, zero-padded ends); the frame is padded by
  bsi = int(s (1 + 2 cs)) pixels of grey 110 on every side (cs = crop_scale = 0.4); the crop is
  rows int(y - s) .. int(y + s (1 + 2 cs)) and columns int(x - s (1 + cs)) .. int(x + s (1 + cs))
  (in padded coordinates, y and x shifted by bsi), i.e. 2.8 s wide and 2.8 s tall with the face
  box's top s above the centre, then resized to 224x224 (cv2 bilinear).

What differs here (say so when comparing numbers with published ones):
  * Detector: the reference runs S3FD (a CNN, confidence >= 0.9, on the frame downscaled by
    0.25) and links detections into tracks by IoU > 0.5, keeping tracks longer than 100 frames
    with faces larger than 100 px, one crop video per track and per scene (PySceneDetect). This
    module follows ONE face through the whole clip with the project's tracking backend (dlib's
    HOG detector by default, metatalk_jax.tracking.track_video: gaps of up to 12 frames filled by
    interpolation, no scene cuts). dlib's HOG box is tighter than S3FD's (it spans roughly brows
    to chin, S3FD's includes more forehead and cheeks), so the same crop formula yields a
    somewhat closer crop; `box_scale` enlarges the boxes about their centre when an S3FD-like
    size is wanted (no calibrated factor is known; 1.0 is the default). HOG also misses strong
    profiles, where S3FD still finds the face.
  * Encoding: the reference writes the crops to an XVID .avi and decodes them again through
    JPEG files before scoring; here the crops go to SyncNet directly (no second lossy pass).
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from metatalk_jax.models.syncnet import LIP_SIZE

CROP_SCALE = 0.4
SMOOTHING_KERNEL = 13
PAD_VALUE = 110


def smoothed_crop_geometry(boxes, kernel: int = SMOOTHING_KERNEL, box_scale: float = 1.0
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre_x [T], centre_y [T], half_size [T]) in pixels from boxes [T,4] (x0, y0, x1, y1):
    half_size = max(height, width) / 2 * box_scale, each median-filtered over `kernel` frames."""
    boxes = np.asarray(boxes, np.float64)
    if boxes.ndim != 2 or boxes.shape[1] < 4 or len(boxes) == 0:
        raise ValueError(f"boxes must be [T,4] (x0, y0, x1, y1), got shape {boxes.shape}")
    half = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2 * box_scale
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    return (signal.medfilt(cx, kernel), signal.medfilt(cy, kernel), signal.medfilt(half, kernel))


def crop_face(frame, centre_x: float, centre_y: float, half_size: float,
              crop_scale: float = CROP_SCALE, size: int = LIP_SIZE) -> np.ndarray:
    """One frame [H,W,3] uint8 -> the reference's face crop, resized to [size,size,3] uint8."""
    import cv2

    frame = np.asarray(frame)
    bs = float(half_size)
    pad = int(bs * (1 + 2 * crop_scale))
    padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), constant_values=PAD_VALUE)
    my, mx = centre_y + pad, centre_x + pad
    face = padded[int(my - bs):int(my + bs * (1 + 2 * crop_scale)),
                  int(mx - bs * (1 + crop_scale)):int(mx + bs * (1 + crop_scale))]
    if face.size == 0:
        raise ValueError(f"empty face crop (centre {centre_x:.1f},{centre_y:.1f}, half size "
                         f"{bs:.1f} px)")
    return cv2.resize(face, (size, size))


def face_track_crops(frames, *, source: str, backend=None, crop_scale: float = CROP_SCALE,
                     box_scale: float = 1.0, **track_options) -> np.ndarray:
    """Frames RGB uint8 [T,H,W,3] -> face crops RGB uint8 [T,224,224,3] for SyncNet.

    backend: a tracking backend (metatalk_jax.tracking.backends; default make_backend("dlib")).
    track_options go to track_video (max_gap, min_tracked_fraction); its own smoothing is off
    because the crop applies the reference's 13-frame median filter. Raises TrackingError (one
    line naming `source`) when no face can be tracked.
    """
    from metatalk_jax.tracking.backends import make_backend
    from metatalk_jax.tracking.track import track_video

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{source}: frames must be uint8 [T,H,W,3], got {frames.dtype} "
                         f"{frames.shape}")
    backend = make_backend("dlib") if backend is None else backend
    track = track_video(frames, backend, source=source, smoothing_sigma=0.0, **track_options)
    cx, cy, half = smoothed_crop_geometry(track.boxes, box_scale=box_scale)
    return np.stack([crop_face(f, x, y, s, crop_scale) for f, x, y, s in zip(frames, cx, cy, half)])
