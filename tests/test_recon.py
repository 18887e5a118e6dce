"""3DMM reconstruction (metatalk_jax.recon): the loss terms against hand computations, the
initial pose against the pinhole projection, and fits of synthetic videos rendered from known
coefficients of the procedural model (compared through renders and landmarks, since the
coefficients themselves are not identifiable)."""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from metatalk_jax.face3d import geometry, raster
from metatalk_jax.face3d.procedural import procedural_model
from metatalk_jax.face3d.render import FaceCoeffs, project_to_screen, render
from metatalk_jax.recon import fit as recon_fit
from metatalk_jax.recon import losses
from metatalk_jax.recon.fit import FitResult, VideoTarget, fit_video
from metatalk_jax.recon.report import fit_report
from metatalk_jax.tracking import crop

# ---------------------------------------------------------------------------------- losses


def test_landmark_weights_default_to_audiodvp_and_follow_the_config():
    w = losses.landmark_weights()
    assert w.shape == (68,) and w.dtype == np.float32
    ones = np.r_[0:17, 27:36]                      # jaw and nose
    fifty = np.r_[17:27, 36:68]                    # brows, eyes, mouth
    assert np.all(w[ones] == 1.0) and np.all(w[fifty] == 50.0)
    assert len(ones) + len(fifty) == 68
    np.testing.assert_array_equal(losses.landmark_weights(losses.LossWeights()), w)

    custom = losses.LossWeights(landmark_nose=20.0, landmark_jaw=2.0, landmark_inner=7.0)
    w = losses.landmark_weights(custom)
    assert np.all(w[0:17] == 2.0) and np.all(w[27:36] == 20.0)
    assert np.all(w[17:27] == 7.0) and np.all(w[36:68] == 7.0)
    # from_config reads the fields a config sets and keeps the defaults of the others.
    cfg = ml_collections.ConfigDict(dict(landmark_nose=20.0, landmark_jaw=2.0, photometric=3.0))
    read = losses.LossWeights.from_config(cfg)
    assert read.landmark_nose == 20.0 and read.landmark_jaw == 2.0 and read.photometric == 3.0
    assert read.landmark_inner == 50.0 and read.landmark == losses.LossWeights().landmark


def test_photometric_loss_is_the_mean_squared_error_over_the_region():
    rendered = np.zeros((2, 2, 2, 3), np.float32)
    observed = np.zeros((2, 2, 2, 3), np.float32)
    observed[0, 0, 0] = 0.1          # squared error 0.01 per channel, region 1
    observed[0, 0, 1] = 0.2          # 0.04, region 1
    observed[0, 1, 0] = 0.3          # 0.09, region 0.5
    observed[0, 1, 1] = 1.0          # 1.00, region 0: must not count
    observed[1] = 0.5                # 0.25 everywhere, region 1
    region = np.array([[[1.0, 1.0], [0.5, 0.0]], [[1.0, 1.0], [1.0, 1.0]]], np.float32)
    # Frame 0: (0.01 + 0.04 + 0.5 * 0.09) / (1 + 1 + 0.5) = 0.095 / 2.5 = 0.038; frame 1: 0.25.
    rendered, observed, region = (jnp.asarray(x) for x in (rendered, observed, region))
    got = losses.photometric_loss(rendered, observed, region)
    np.testing.assert_allclose(float(got), (0.038 + 0.25) / 2, rtol=1e-5)
    masked = losses.photometric_loss(rendered, observed, region, jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(float(masked), 0.038, rtol=1e-5)
    # Symmetric in rendered/observed, and zero for a perfect match.
    swapped = losses.photometric_loss(observed, rendered, region)
    np.testing.assert_allclose(float(swapped), float(got), rtol=1e-6)
    assert float(losses.photometric_loss(observed, observed, region)) == 0.0


def test_landmark_loss_weights_points_and_ignores_masked_frames():
    rng = np.random.default_rng(0)
    target = rng.uniform(0, 256, (3, 68, 2)).astype(np.float32)
    pred = target.copy()
    pred[0] += np.array([3.0, 4.0], np.float32)     # every point 5 units off: squared 25
    pred[2] += 1000.0                               # a padding frame with garbage
    w = losses.landmark_weights()
    mean_w = (17 * 1.0 + 9 * 1.0 + 42 * 50.0) / 68  # jaw + nose at 1, the rest at 50
    got = losses.landmark_loss(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(w),
                               jnp.array([1.0, 1.0, 0.0]))
    np.testing.assert_allclose(float(got), (25.0 * mean_w + 0.0) / 2, rtol=1e-5)
    unmasked = losses.landmark_loss(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(w))
    np.testing.assert_allclose(float(unmasked), (25.0 * mean_w + 2e6 * mean_w) / 3, rtol=1e-5)
    # One brow point (weight 50) one unit off in one frame of one.
    one = target[:1].copy()
    one[0, 20, 0] += 1.0
    got = losses.landmark_loss(jnp.asarray(one), jnp.asarray(target[:1]), jnp.asarray(w))
    np.testing.assert_allclose(float(got), 50.0 / 68, rtol=1e-5)


def test_coefficient_regularization_matches_audiodvp_prior():
    rng = np.random.default_rng(1)
    ident = rng.standard_normal(80).astype(np.float32)
    tex = rng.standard_normal(80).astype(np.float32)
    exp = rng.standard_normal((4, 64)).astype(np.float32)
    w = losses.LossWeights()
    want = (np.sum(ident ** 2) + 1.7e-3 * np.sum(tex ** 2)
            + 0.8 * np.mean([np.sum(e ** 2) for e in exp]))
    got = losses.coefficient_regularization(w, jnp.asarray(ident), jnp.asarray(exp),
                                            jnp.asarray(tex))
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    # Masked frames do not count; a missing or empty texture adds nothing.
    mask = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
    want_masked = np.sum(ident ** 2) + 0.8 * np.mean([np.sum(exp[i] ** 2) for i in (0, 2)])
    for texture in (None, jnp.zeros((0,))):
        got = losses.coefficient_regularization(w, jnp.asarray(ident), jnp.asarray(exp), texture,
                                                jnp.asarray(mask))
        np.testing.assert_allclose(float(got), want_masked, rtol=1e-5)
    custom = losses.LossWeights(identity=2.0, texture=0.5, expression=3.0)
    got = losses.coefficient_regularization(custom, jnp.asarray(ident), jnp.asarray(exp),
                                            jnp.asarray(tex))
    want = (2.0 * np.sum(ident ** 2) + 0.5 * np.sum(tex ** 2)
            + 3.0 * np.mean(np.sum(exp ** 2, -1)))
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


# ----------------------------------------------------------------------- initial translation


@pytest.mark.parametrize("convention", ["audiodvp", "deep3d"])
@pytest.mark.parametrize("custom_camera", [False, True])
def test_initial_translation_puts_the_origin_at_box_centres_at_box_scale(convention, custom_camera):
    centers = np.array([[50.0, 40.0], [120.0, 90.0], [80.0, 150.0], [99.5, 100.25]], np.float32)
    sizes = np.array([40.0, 80.0, 60.0, 55.0], np.float32)
    boxes = crop.CropBoxes(centers, sizes, (180, 200))
    if custom_camera:
        camera = geometry.PinholeCamera(focal_x=300.0, focal_y=300.0, cx=90.0, cy=110.0,
                                        distance=10.0, height=64, width=64)
    else:
        camera = crop.frame_camera(boxes, 64)
    t = recon_fit.initial_translation(boxes, camera, convention)
    assert t.shape == (4, 3) and t.dtype == np.float32

    # Model-frame points: the origin and the ends of segments of length L along x and y.
    length = 0.5
    pts = np.array([[0, 0, 0], [length, 0, 0], [0, length, 0]], np.float32)
    pts = jnp.broadcast_to(jnp.asarray(pts), (4, 3, 3))
    posed, _ = geometry.apply_pose(pts, pts, jnp.zeros((4, 3)), jnp.asarray(t), convention)
    uvd = np.asarray(project_to_screen(camera, posed), np.float64)
    np.testing.assert_allclose(uvd[:, 0, :2], centers, atol=1e-3)

    # Depth scales inversely with the box size: the mean box is at the camera's distance.
    depth = camera.distance * sizes.mean() / sizes
    np.testing.assert_allclose(uvd[:, 0, 2], depth, rtol=1e-5)
    # So a segment of length L projects to f L / depth pixels: proportional to the box size.
    want = camera.focal_x * length / depth
    seg_x = np.linalg.norm(uvd[:, 1, :2] - uvd[:, 0, :2], axis=-1)
    seg_y = np.linalg.norm(uvd[:, 2, :2] - uvd[:, 0, :2], axis=-1)
    np.testing.assert_allclose(seg_x, want, rtol=1e-4)
    np.testing.assert_allclose(seg_y, want, rtol=1e-4)
    ratio = seg_x / sizes
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)
    # +y in the model is up in the image; +x is to the right (the frame camera does not mirror).
    assert np.all(uvd[:, 2, 1] < uvd[:, 0, 1]) and np.all(uvd[:, 1, 0] > uvd[:, 0, 0])


# ------------------------------------------------------------------------- synthetic videos

FRAME_SIZE = (160, 160)   # the "video" frames (H, W)
FIT_SIZE = 64             # crop side used for fitting (the boxes are ~65 frame px)


@functools.partial(jax.jit, static_argnums=2)
def _render(model, coeffs, camera, screen=None):
    """Jitted render (compiled once per model shape, batch and camera): image, coverage,
    face region (coverage x the model's face mask), landmarks, triangle ids."""
    out = render(model, coeffs, camera, with_mouth_mask=False, screen_transform=screen)
    face = raster.interpolate(model.face_mask[:, None], model.triangles, out.fragments)[..., 0]
    return out.image, out.alpha, out.alpha * face, out.landmarks, out.fragments.triangle_id


class Synthetic(NamedTuple):
    target: VideoTarget
    coeffs: FaceCoeffs            # ground truth
    image: np.ndarray             # [T, S, S, 3] ground truth rendered into the crops
    region: np.ndarray            # [T, S, S] its face region
    triangle_id: np.ndarray       # [T, S, S]


def _ground_truth(model, frames: int, *, static: bool, textured: bool = True,
                  seed: int = 0) -> FaceCoeffs:
    rng = np.random.default_rng(seed)
    d = model.dims
    k = np.arange(frames, dtype=np.float64)
    exp = 0.4 * rng.standard_normal((frames, d["exp"]))
    exp[:, 0] = np.linspace(0.0, 1.5, frames)                      # the jaw opens
    angles = np.stack([0.08 * np.sin(k), 0.12 * np.cos(0.7 * k), 0.04 * np.sin(0.5 * k)], -1)
    trans = np.stack([0.15 * np.sin(0.6 * k), -0.1 * np.cos(0.4 * k), 0.3 * np.sin(0.3 * k)], -1)
    light = np.zeros((9, 3))                                        # AudioDVP's 9x3 layout
    light[0] = [0.1, 0.0, -0.05]                                    # warmer ambient
    light[1] = 0.08
    light[2] = 0.05
    light[3] = [0.15, 0.12, 0.1]                                    # from the side
    if static:
        exp[:], angles[:], trans[:] = exp[1], angles[1], trans[1]
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    tile = lambda x: jnp.tile(f32(x)[None], (frames, 1))  # noqa: E731
    identity = 0.5 * rng.standard_normal(d["id"])
    texture = 0.5 * rng.standard_normal(d["tex"]) * textured
    return FaceCoeffs(tile(identity), f32(exp), tile(texture), f32(angles), f32(trans),
                      tile(light.reshape(27)))


def synthetic_video(model, frames: int, *, static: bool = False, albedo=None) -> Synthetic:
    """Renders known coefficients into full frames over a background, takes the projected
    landmarks as the tracked ones, and crops the frames as the pipeline does. With `albedo`
    the face has that per-vertex albedo (texture coefficients zero)."""
    truth = (model if albedo is None else model.replace(mean_albedo=albedo)).as_jax()
    coeffs = _ground_truth(model, frames, static=static, textured=albedo is None)
    # One pinhole camera for the video (the frame camera of a nominal 70 px box in the middle);
    # it renders the full frames and, at the crop size, is the fit's camera.
    nominal = crop.CropBoxes(np.array([[80.0, 80.0]], np.float32), np.array([70.0], np.float32),
                             FRAME_SIZE)
    camera = crop.frame_camera(nominal, FIT_SIZE)
    whole = dataclasses.replace(camera, height=FRAME_SIZE[0], width=FRAME_SIZE[1])
    image, alpha, _, landmarks, _ = (np.asarray(x) for x in _render(truth, coeffs, whole))
    yy, xx = np.mgrid[:FRAME_SIZE[0], :FRAME_SIZE[1]] / FRAME_SIZE[0]
    background = np.stack([0.3 + 0.2 * xx, np.full_like(xx, 0.35), 0.25 + 0.2 * yy], -1)
    a = alpha[..., None]
    video = np.clip(np.rint(255 * (a * image + (1 - a) * background)), 0, 255).astype(np.uint8)

    boxes = crop.boxes_from_points(landmarks, FRAME_SIZE)
    crops = np.stack([crop.crop_frame(f, m, FIT_SIZE)
                      for f, m in zip(video, boxes.matrices(FIT_SIZE))])
    target = VideoTarget(landmarks.astype(np.float32), boxes, crops, camera)
    image, _, region, _, tid = (np.asarray(x) for x in _render(
        truth, coeffs, camera, jnp.asarray(boxes.screen_transform(FIT_SIZE))))
    return Synthetic(target, coeffs, image, region, tid)


def render_result(model, fit: FitResult, target: VideoTarget):
    """The fit rendered into its crops by `render` with FitResult.albedo as the model's mean
    albedo and zero texture coefficients: (image [T,S,S,3], face region [T,S,S], landmarks
    [T,68,2] in frame pixels). `model` only lends its geometry (and a texture basis whose
    coefficients stay zero, so one compiled renderer serves models with and without one)."""
    m = model.replace(mean_albedo=fit.albedo).as_jax()
    t = len(fit.expression)
    coeffs = FaceCoeffs(jnp.tile(jnp.asarray(fit.identity)[None], (t, 1)),
                        jnp.asarray(fit.expression), jnp.zeros((t, m.dims["tex"])),
                        jnp.asarray(fit.angles), jnp.asarray(fit.translation),
                        jnp.asarray(fit.gamma))
    screen = target.boxes.screen_transform(FIT_SIZE)
    image, _, region, lm, _ = (np.asarray(x) for x in _render(
        m, coeffs, target.camera, jnp.asarray(screen)))
    # Crop -> frame pixels: the inverse of u' = scale * u + offset.
    lm = (lm - screen[:, None, :, 2]) / screen[:, None, 0, 0, None]
    return image, region, lm


def landmark_error_px(landmarks, target: VideoTarget):
    return np.linalg.norm(landmarks - target.landmarks, axis=-1).mean(-1)


def rmse_levels(image, observed_u8, region):
    """[T] RMSE in 8-bit levels over each frame's face region."""
    sq = np.sum(region[..., None] * (image - observed_u8 / 255.0) ** 2, axis=(1, 2, 3))
    return 255.0 * np.sqrt(sq / (3.0 * np.sum(region, axis=(1, 2))))


def fit_config(**overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(dict(
        landmark_steps=200, key_frames=3, shared_steps=60, chunk_size=3, frame_steps=20))
    config.lr = ml_collections.ConfigDict(dict(
        identity=0.05, expression=0.05, angles=0.01, translation=0.02, gamma=0.02,
        texture=0.05, albedo_offset=0.01))
    config.weights = ml_collections.ConfigDict(dict(
        photometric=1.9, landmark=1.6e-3, regularization=3e-4))
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def model():
    m = procedural_model(40, 40, "audiodvp")
    assert (m.num_vertices, m.num_triangles) == (1600, 3042)
    assert m.dims == {"id": 80, "exp": 64, "tex": 80}
    return m


@pytest.fixture(scope="module")
def moving_video(model):
    """6 frames of a talking, moving face."""
    return synthetic_video(model, 6)


@pytest.fixture(scope="module")
def moving(model, moving_video):
    """The moving face, its fit (chunks of 3) and the fit's report."""
    fit = fit_video(model, moving_video.target, fit_config())
    return moving_video, fit, fit_report(model, moving_video.target, fit, chunk_size=6)


def test_synthetic_setup_crops_agree_with_rendering_through_the_screen_transform(moving_video):
    # The ground truth rendered straight into the crops (camera + crop transform) is what
    # crop_frame cut out of the full frames, up to cubic resampling and 8-bit rounding.
    video = moving_video
    rmse = rmse_levels(video.image, video.target.crops, video.region)
    mean_abs = 255 * np.sum(video.region[..., None]
                            * np.abs(video.image - video.target.crops / 255.0)) / (
        3 * video.region.sum())
    print("ground truth vs crops: RMSE levels", rmse, "mean abs", mean_abs)
    # Measured: mean abs 0.7 levels, RMSE 0.8-2.5 per frame (the largest errors, up to ~30
    # levels, sit on the silhouette where the region meets the background).
    assert mean_abs < 1.5, mean_abs
    assert rmse.mean() < 2.5 and np.all(rmse < 4.0), rmse
    # The boxes hold the landmarks, and a crop pixel is about a frame pixel (the crops are
    # neither blurred by a strong reduction nor much enlarged).
    boxes = video.target.boxes
    lm = video.target.landmarks
    assert np.all(np.abs(lm - boxes.centers[:, None]) < boxes.sizes[:, None, None] / 2)
    assert np.all(np.abs(boxes.scales(FIT_SIZE) - 1.0) < 0.1), boxes.sizes


def test_the_jitted_fit_report_and_masks_take_the_model_as_an_argument(model, moving_video):
    """A model that a jitted function captures is a constant of its program: at BFM size tens
    of MB of HLO and of persistent-cache entry, and a subject's folded model a cache miss for
    every video. JAX warns when a program captures more than jax_captured_constants_warn_bytes;
    the procedural model's bases alone are 1.5 MB (identity) and 1.2 MB (expression)."""
    from metatalk_jax.subject.frame_examples import TargetExamples, projected_face_points
    target = moving_video.target
    limit = jax.config.jax_captured_constants_warn_bytes
    jax.config.update("jax_captured_constants_warn_bytes", 100_000)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*constants were captured")
            fit = fit_video(model, target, fit_config(landmark_steps=2, shared_steps=2,
                                                      frame_steps=2))
            fit_report(model, target, fit, chunk_size=6)
            projected_face_points(model.as_jax(), fit, target.camera, batch=6)
            config = ml_collections.ConfigDict(dict(
                renderer_resolution=32, mouth_dilation=4, sample_rate=16000,
                audio_window_s=0.2, fps=25, batch=6))
            examples = TargetExamples("unused.mp4", model, fit, target.boxes, target.camera,
                                      target.landmarks, None, config)
            screens = target.boxes.screen_transform(32)
            examples._render(examples.model, fit.expression, fit.gamma, fit.angles,
                             fit.translation, screens)
    finally:
        jax.config.update("jax_captured_constants_warn_bytes", limit)


@pytest.mark.slow  # ~35 s of CPU (a full three-stage fit): `make test-slow`
def test_fit_recovers_a_synthetic_face(model, moving):
    video, fit, report = moving
    target = video.target
    t = len(target.landmarks)
    assert fit.expression.shape == (t, 64) and fit.gamma.shape == (t, 27)
    assert fit.angles.shape == (t, 3) and fit.translation.shape == (t, 3)
    assert fit.identity.shape == (80,) and fit.texture.shape == (80,)
    assert fit.albedo.shape == (1600, 3)

    # Landmarks: the tracked points are exact projections, the fit is regularised; measured
    # 0.22 px mean, 0.27 worst (about 1.1% of the ~19 px inter-ocular distance).
    assert report.landmark_error_px.mean() < 0.4, report.summary()
    assert report.landmark_error_px.max() < 0.6, report.summary()
    # Photometric RMSE inside the face: measured 4.0 levels mean, 5.8 worst (the ground truth
    # itself is 1.4 from the resampled crops).
    assert report.photometric_rmse.mean() < 5.5, report.summary()
    assert report.photometric_rmse.max() < 7.5, report.summary()

    # The report's numbers, recomputed independently with `render` (FitResult.albedo as the
    # model's albedo): landmarks mapped from the crops back to the frame, photometric error
    # of the fitted crops, inter-ocular percentage.
    image, region, lm = render_result(model, fit, target)
    lm_err = landmark_error_px(lm, target)
    np.testing.assert_allclose(report.landmark_error_px, lm_err, atol=2e-3)
    np.testing.assert_allclose(report.photometric_rmse, rmse_levels(image, target.crops, region),
                               rtol=1e-3, atol=1e-3)
    iod = np.linalg.norm(target.landmarks[:, 36] - target.landmarks[:, 45], axis=-1)
    np.testing.assert_allclose(report.landmark_error_iod, 100 * lm_err / iod, rtol=1e-3)

    # The fitted renders match the ground-truth renders: same face area, colours within a few
    # levels (measured 2.4 levels mean absolute difference, region IoU 0.965).
    inside_fit, inside_gt = region > 0.5, video.region > 0.5
    iou = (inside_fit & inside_gt).sum() / (inside_fit | inside_gt).sum()
    assert iou > 0.93, iou
    both = region * video.region
    diff = 255 * np.sum(both[..., None] * np.abs(image - video.image)) / (3 * both.sum())
    assert diff < 4.0, diff
    # Pose angles within a few degrees (identity/pose trade-offs; measured 3.1 deg worst).
    err_deg = np.degrees(np.abs(fit.angles - np.asarray(video.coeffs.angles)))
    print("moving face:", report.summary(), "render diff", diff, "IoU", iou,
          "max angle error deg", err_deg.max())
    assert err_deg.max() < 5.0, err_deg


# ------------------------------------------------------------------- per-vertex albedo path


def _wave_albedo(model) -> np.ndarray:
    """The mean albedo times a smooth colour pattern that SH lighting cannot produce (it
    varies across the face independently of the surface normal)."""
    shape = np.asarray(model.mean_shape)
    x = (shape[:, 0] - shape[:, 0].mean()) / np.ptp(shape[:, 0])
    y = (shape[:, 1] - shape[:, 1].mean()) / np.ptp(shape[:, 1])
    factor = (1.0 + 0.25 * np.sin(3 * np.pi * x)[:, None] * np.array([1.0, -1.0, 0.5])
              + 0.2 * np.cos(3 * np.pi * y)[:, None] * np.array([-0.5, 0.5, 1.0]))
    return np.clip(np.asarray(model.mean_albedo) * factor, 0.0, 1.0).astype(np.float32)


@pytest.mark.slow  # ~45 s of CPU (key-frame albedo fit): `make test-slow`
def test_per_vertex_albedo_is_estimated_without_a_texture_basis(model):
    no_basis = model.replace(tex_basis=model.tex_basis[..., :0])
    assert not recon_fit.has_texture_basis(no_basis)
    true_albedo = _wave_albedo(model)
    # (Rendered with the full model and zero texture coefficients: the same face as `no_basis`
    # with this albedo, through the renderer already compiled for the other tests.)
    video = synthetic_video(model, 6, albedo=true_albedo)
    target = video.target
    fit = fit_video(no_basis, target, fit_config())
    # Albedo estimation off: a zero learning rate keeps the offset exactly zero.
    off = fit_config()
    off.lr.albedo_offset = 0.0
    fit_off = fit_video(no_basis, target, off)

    mean = np.asarray(model.mean_albedo)
    assert fit.texture.shape == (0,) and fit.albedo.shape == mean.shape
    np.testing.assert_array_equal(fit_off.albedo, mean)
    # Vertices of the photometric region seen in some frame.
    tid = video.triangle_id
    seen = np.zeros(model.num_vertices, bool)
    seen[np.asarray(model.triangles)[np.unique(tid[tid >= 0])].ravel()] = True
    seen &= np.asarray(model.face_mask) > 0
    assert seen.sum() > 1000

    def error(albedo):
        return float(np.sqrt(np.mean((albedo[seen] - true_albedo[seen]) ** 2)))

    # Measured: RMS error 0.112 (mean albedo) -> 0.058 (estimated); the estimated offsets
    # correlate 0.85 with the true ones.
    assert error(fit.albedo) < 0.7 * error(mean), (error(fit.albedo), error(mean))
    corr = np.corrcoef((fit.albedo - mean)[seen].ravel(), (true_albedo - mean)[seen].ravel())[0, 1]
    assert corr > 0.6, corr
    # And the video is explained much better: measured 4.0 vs 12.3 levels mean RMSE.
    image, region, lm = render_result(model, fit, target)
    rmse = rmse_levels(image, target.crops, region)
    image, region, _ = render_result(model, fit_off, target)
    rmse_off = rmse_levels(image, target.crops, region)
    print("albedo: error mean", error(mean), "fit", error(fit.albedo), "corr", corr,
          "RMSE", rmse, "without estimation", rmse_off)
    assert rmse.mean() < 0.6 * rmse_off.mean(), (rmse, rmse_off)
    assert np.all(rmse < rmse_off), (rmse, rmse_off)
    assert rmse.mean() < 5.5, rmse
    assert landmark_error_px(lm, target).mean() < 0.4


# -------------------------------------------------------------------- chunks and warm start


@pytest.fixture(scope="module")
def static(model):
    """The same face in 6 frames, stage A (landmarks) fitted; the shared texture is the true
    one (stage B's job, skipped here)."""
    video = synthetic_video(model, 6, static=True)
    assert np.all(video.target.crops == video.target.crops[:1])
    m = model.as_jax()
    config = fit_config()
    weights = losses.LossWeights.from_config(config.weights)
    shared, frames = recon_fit.fit_landmarks(m, video.target, config, weights)
    shared = dict(shared, texture=video.coeffs.texture[0])
    return video, shared, frames


def _stage_c(model, static, frames, key_gamma, config) -> FitResult:
    video, shared, _ = static
    m = model.as_jax()
    weights = losses.LossWeights.from_config(config.weights)
    refined = recon_fit.fit_frames(m, video.target, shared, frames, {"gamma": key_gamma},
                                   config, weights)
    albedo = geometry.face_albedo(m, jnp.asarray(shared["texture"])[None])[0]
    return FitResult(refined["expression"], refined["gamma"], refined["angles"],
                     refined["translation"], np.asarray(shared["identity"]),
                     np.asarray(shared["texture"]), np.asarray(albedo))


def test_static_face_fits_consistently_across_chunks(model, static):
    # 6 frames in chunks of 4: [0-3], [4-5 + two padding frames]; the key frames' lighting is
    # the true one (as stage B would estimate it).
    video, _, frames = static
    target = video.target
    fit = _stage_c(model, static, frames, video.coeffs.gamma[:1], fit_config(chunk_size=4))
    # Identical frames in one chunk get identical parameters.
    for chunk in (slice(0, 4), slice(4, 6)):
        for k, v in fit.frame_params().items():
            np.testing.assert_allclose(v[chunk], np.broadcast_to(v[chunk][:1], v[chunk].shape),
                                       atol=1e-5, err_msg=k)
    # Across the boundary the pose, lighting and rendered face barely move (expression
    # coefficients drift along directions the images hardly see, so they are compared through
    # the renders). Measured: angles 0.1 deg, translation 0.018, gamma 0.012, lm 0.21 vs 0.25
    # px, RMSE 3.19 vs 3.14 levels.
    assert np.degrees(np.ptp(fit.angles, 0)).max() < 0.5
    assert np.ptp(fit.translation, 0).max() < 0.05
    assert np.ptp(fit.gamma, 0).max() < 0.05
    image, region, lm = render_result(model, fit, target)
    both = region[0] * region[5]
    diff = 255 * np.sum(both[..., None] * np.abs(image[5] - image[0])) / (3 * both.sum())
    assert diff < 1.5, diff
    lm_err = landmark_error_px(lm, target)
    rmse = rmse_levels(image, target.crops, region)
    print("static: landmark px", lm_err, "rmse", rmse, "render diff", diff)
    assert np.ptp(lm_err) < 0.1 and lm_err.max() < 0.4, lm_err
    assert np.ptp(rmse) < 0.5 and rmse.max() < 5.0, rmse


def test_chunks_warm_start_from_their_predecessor(model, static):
    """A stage-A pose off by a constant and no lighting to start from, with learning rates
    too small to correct that in one chunk: each chunk starts from its predecessor's
    correction and lighting, so each ends closer than the one before (chunks fitted
    independently would all end alike)."""
    video, _, frames = static
    target = video.target
    biased = dict(frames)
    biased["translation"] = frames["translation"] + jnp.array([0.1, -0.06, 0.0])
    biased["angles"] = frames["angles"] + jnp.array([0.0, 0.05, 0.0])
    config = fit_config(chunk_size=2, frame_steps=8)
    config.lr.update(dict(expression=0.005, gamma=0.005, angles=0.002, translation=0.004))
    fit = _stage_c(model, static, biased, jnp.zeros((1, 27)), config)
    image, region, lm = render_result(model, fit, target)
    lm_err = landmark_error_px(lm, target)[::2]          # one frame per chunk
    rmse = rmse_levels(image, target.crops, region)[::2]
    print("warm start: landmark px per chunk", lm_err, "rmse per chunk", rmse)
    # Measured: landmarks 1.12 -> 0.44 -> 0.40 px, RMSE 21.2 -> 10.5 -> 6.4 levels.
    assert np.all(np.diff(lm_err) < 0), lm_err
    assert np.all(rmse[1:] < 0.8 * rmse[:-1]), rmse
    assert lm_err[-1] < 0.6 * lm_err[0] and rmse[-1] < 0.5 * rmse[0], (lm_err, rmse)
