"""Evaluation: the paper's metrics, equal to the reference scripts'.

lse.py         LSE-D / LSE-C / AV offset with SyncNet v2, as syncnet_python's evaluate()
face_track.py  face-track crops for real videos (syncnet_python's pipeline, dlib detections)
fid.py         FID with pytorch-fid's InceptionV3 features, Frechet distance in float64
ssim.py        SSIM with dm-pix under the stated protocol (== scikit-image's Gaussian SSIM)
report.py      per-clip scores -> report.json / report.md in the layout of Table 2
The CLI is metatalk_jax/evaluate.py (`python -m metatalk_jax.evaluate`).
"""
