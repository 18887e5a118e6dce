"""FID: pytorch-fid's InceptionV3 in Flax against a torch mirror
(tests/support/torch_inception_reference.py) through the converter, the torch-exact bilinear resize,
and the Frechet distance against independent float64 formulas and closed forms."""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from metatalk_jax.convert import converted, torch_pickle                       # noqa: E402
from metatalk_jax.convert.inception_keys import convert_inception, load_inception  # noqa: E402
from metatalk_jax.eval import fid                                              # noqa: E402
from metatalk_jax.models import inception as inc                               # noqa: E402
from tests.support.torch_inception_reference import TorchFIDInception, randomize       # noqa: E402

# Hand-read from torchvision's Inception3 / pytorch-fid's FID blocks: torch shapes of entries of
# pt_inception-2015-12-05-6726825d.pth.
REFERENCE_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
    "Mixed_5b.branch1x1.bn.running_mean": (64,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_2.conv.weight": (192, 192, 7, 1),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
    "Mixed_7c.branch3x3_2b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.bn.running_var": (192,),
    "fc.weight": (1008, 2048),
}
BASIC_CONVS = 94          # 5 stem + 3x7 (A) + 4 (B) + 4x10 (C) + 6 (D) + 2x9 (E)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(torch model, .pth path written by torch.save, frames [4,120,160,3] uint8, torch features
    [4,2048] of those frames / 255)."""
    torch.set_num_threads(2)
    model = randomize(TorchFIDInception(), seed=5).eval()
    path = tmp_path_factory.mktemp("inception") / "pt_inception-test.pth"
    torch.save(model.state_dict(), path)
    yy, xx = np.mgrid[0:120, 0:160]
    smooth = np.stack([xx / 160, yy / 120, 0.5 + 0.4 * np.sin(xx / 9 + yy / 13)], -1)
    # frames 2-3 (the second FID set) are dimmer with another pattern
    other = np.stack([0.3 * yy / 120, 0.2 + 0.2 * np.cos(xx / 5), 0.4 * xx / 160], -1)
    noise = np.random.default_rng(2).uniform(-0.3, 0.3, (4, 120, 160, 3))
    base = np.stack([smooth, smooth, other, other])
    frames = (np.clip(base + noise, 0, 1) * 255).round().astype(np.uint8)
    with torch.inference_mode():
        x = torch.from_numpy(frames.transpose(0, 3, 1, 2).astype(np.float32) / 255)
        features = model(x).numpy()
    return model, path, frames, features


@pytest.fixture(scope="module")
def jax_features(reference):
    """Flax features [4,2048] of the same frames (weights read from the .pth, batch 2)."""
    _, path, frames, _ = reference
    variables, _ = convert_inception(torch_pickle.read_state_dict(path))
    return variables, inc.inception_features(frames, variables, batch_size=2)


def assert_features_close(got, expected, rtol=1e-4):
    """Largest error relative to the largest feature (16% of features are exact zeros after the
    ReLUs, so an elementwise relative error is meaningless there)."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    assert got.shape == expected.shape
    worst = float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))
    assert worst <= rtol, f"max error / max feature = {worst:.3g} > {rtol}"


# -- architecture tables ------------------------------------------------------------------------

def test_mirror_has_the_reference_state_dict_and_parameter_count():
    model = TorchFIDInception()
    sd = model.state_dict()
    for key, shape in REFERENCE_SHAPES.items():
        assert tuple(sd[key].shape) == shape, key
    assert len(sd) == BASIC_CONVS * 6 + 2     # conv w + 5 BN entries each, fc w/b
    expected = {f"{p}.conv.weight" for p, _ in inc.reference_layers()}
    expected |= {f"{p}.bn.{n}" for p, _ in inc.reference_layers()
                 for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    assert expected | {"fc.weight", "fc.bias"} == set(sd)
    learnable = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("fc."))
    assert learnable == inc.count_parameters() == inc.REFERENCE_FEATURE_PARAMETERS


# -- building blocks ----------------------------------------------------------------------------

@pytest.mark.parametrize("in_hw,out_hw", [((120, 160), (299, 299)), ((512, 384), (299, 299)),
                                          ((1000, 700), (299, 299)), ((7, 5), (3, 11)),
                                          ((1, 4), (2, 9)), ((299, 299), (299, 299))])
def test_resize_equals_torch_interpolate(in_hw, out_hw):
    x = np.random.default_rng(sum(in_hw)).uniform(0, 1, (2,) + in_hw + (3,)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=out_hw,
                             mode="bilinear", align_corners=False).numpy().transpose(0, 2, 3, 1)
    got = np.asarray(inc.resize_bilinear_like_torch(x, out_hw))
    # fp32 rounding only (float64 source coordinates would be off by up to ~1.5e-5 here)
    np.testing.assert_allclose(got, expected, atol=5e-7)


def test_jax_image_resize_is_not_torch_when_shrinking():
    """Why the resize is our own: jax.image.resize('linear') antialiases when downscaling."""
    x = np.random.default_rng(0).uniform(0, 1, (1, 512, 512, 3)).astype(np.float32)
    torch_out = F.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=(299, 299),
                              mode="bilinear", align_corners=False).numpy().transpose(0, 2, 3, 1)
    jax_out = np.asarray(jax.image.resize(x, (1, 299, 299, 3), "linear"))
    assert np.max(np.abs(jax_out - torch_out)) > 0.05


def test_pools_match_torch():
    x = np.random.default_rng(1).standard_normal((2, 5, 6, 4)).astype(np.float32)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2))
    avg = F.avg_pool2d(xt, 3, stride=1, padding=1, count_include_pad=False)
    np.testing.assert_allclose(np.asarray(inc._avg_pool_same_unpadded(x)),
                               avg.numpy().transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)
    # the same pool counting the zero padding differs at the border: the option matters
    with_pad = F.avg_pool2d(xt, 3, stride=1, padding=1).numpy().transpose(0, 2, 3, 1)
    assert np.max(np.abs(with_pad - np.asarray(inc._avg_pool_same_unpadded(x)))) > 0.1
    np.testing.assert_array_equal(np.asarray(inc._max_pool_valid(x)),
                                  F.max_pool2d(xt, 3, stride=2).numpy().transpose(0, 2, 3, 1))


# -- full model parity --------------------------------------------------------------------------

def test_flax_features_match_torch_through_the_converter(reference, jax_features):
    _, _, _, expected = reference
    _, got = jax_features
    assert got.shape == (4, 2048) and got.dtype == np.float32
    assert expected.std() > 0.1        # features spread, not collapsed by the random weights
    assert_features_close(got, expected)


def test_padding_of_the_last_batch_and_loaders_agree(reference, jax_features, tmp_path):
    _, path, frames, _ = reference
    variables, features = jax_features
    # 3 frames at batch 2: the second batch is padded; rows must not depend on batch neighbours
    picked = inc.inception_features(frames[[1, 0, 1]], variables, batch_size=2)
    np.testing.assert_allclose(picked, features[[1, 0, 1]], rtol=1e-5, atol=1e-6)
    # .pth read directly and a converted folder give the same variables
    model_a, direct = load_inception(path)
    converted.save_converted(tmp_path / "inception", "inception", *convert_inception(
        torch_pickle.read_state_dict(path)), path)
    model_b, from_dir = load_inception(tmp_path / "inception")
    assert isinstance(model_a, inc.FIDInceptionV3) and isinstance(model_b, inc.FIDInceptionV3)
    for a, b, c in zip(jax.tree.leaves(direct), jax.tree.leaves(from_dir),
                       jax.tree.leaves(variables)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_fid_from_frames_matches_fid_of_torch_features(reference, jax_features):
    _, _, frames, torch_features = reference
    variables, _ = jax_features
    a, b = frames[:2], frames[2:]
    # "svd" (no 2048x2048 root: a full-size sqrtm/eigh costs minutes here) is checked against
    # the closed forms below; this test checks the frames -> features -> FID path.
    expected = fid.fid_from_features(torch_features[:2], torch_features[2:], method="svd")
    got = fid.fid_from_frames(a, b, variables, batch_size=2, method="svd")
    assert expected > 1.0
    assert got == pytest.approx(expected, rel=1e-4)
    # per video, one given as chunks: same figure for the same frames
    per_video = fid.fid_per_video([a, [a[:1], a[1:]]], [b, b], variables, batch_size=2,
                                  method="svd")
    assert per_video == pytest.approx([got, got], rel=1e-6)


# -- bad checkpoints ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def numpy_state_dict(reference):
    return {k: v.numpy() for k, v in reference[0].state_dict().items()}


def test_missing_key_is_named(numpy_state_dict):
    sd = dict(numpy_state_dict)
    del sd["Mixed_6c.branch7x7dbl_3.bn.running_var"]
    with pytest.raises(KeyError, match=r"Mixed_6c\.branch7x7dbl_3\.bn\.running_var"):
        convert_inception(sd)


def test_imagenet_classifier_and_aux_head_are_refused(numpy_state_dict):
    sd = dict(numpy_state_dict)
    sd["fc.weight"] = np.zeros((1000, 2048), np.float32)
    with pytest.raises(ValueError, match=r"fc\.weight.*\(1008, 2048\)"):
        convert_inception(sd)
    sd = dict(numpy_state_dict)
    sd["AuxLogits.conv0.conv.weight"] = np.zeros((128, 768, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"unused.*AuxLogits\.conv0"):
        convert_inception(sd)


def test_fc_is_optional_and_dataparallel_prefix_dropped(numpy_state_dict):
    sd = {"module." + k: v for k, v in numpy_state_dict.items() if not k.startswith("fc.")}
    variables, config = convert_inception(sd)
    assert config["features"] == 2048 and config["fc_skipped"]
    np.testing.assert_array_equal(
        variables["params"]["Mixed_5b"]["branch1x1"]["conv"]["kernel"],
        numpy_state_dict["Mixed_5b.branch1x1.conv.weight"].transpose(2, 3, 1, 0))


def test_missing_checkpoint_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_inception(tmp_path / "nothing.pth")


# -- Frechet distance ---------------------------------------------------------------------------

def _random_covariance(rng, d, rank=None):
    m = rng.standard_normal((d, rank or 2 * d))
    return m @ m.T / m.shape[1]


def _trace_sqrt_by_eigvals(s1, s2):
    """Independent: S1 S2 has real non-negative eigenvalues for PSD S1, S2; tr sqrtm = sum sqrt."""
    lam = np.linalg.eigvals(s1 @ s2)
    assert np.max(np.abs(lam.imag)) < 1e-9 * np.max(np.abs(lam))
    return float(np.sum(np.sqrt(np.clip(lam.real, 0, None))))


@pytest.mark.parametrize("n", [8, 60])
def test_svd_route_from_features_against_eigenvalue_formula(n):
    rng = np.random.default_rng(n)
    d = 24                      # n = 8: rank-deficient covariances (N < D), as per-video FIDs
    a = rng.standard_normal((n, d))
    b = 0.7 * rng.standard_normal((n + 3, d)) @ rng.standard_normal((d, d)) / 5 + 0.2
    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    expected = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                - 2 * _trace_sqrt_by_eigvals(s1, s2))
    # rel 1e-7: with N < D the D-D zero eigenvalues come back as round-off ~1e-16 whose square
    # roots (~1e-8 each) add up in the eigenvalue routes, not in the svd one
    assert fid.fid_from_features(a, b, method="svd") == pytest.approx(expected, rel=1e-7)
    assert fid.fid_from_features(a, b, method="eigh") == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_frechet_distance_against_eigenvalue_formula(method):
    rng = np.random.default_rng(11)
    d = 24
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_covariance(rng, d), _random_covariance(rng, d)
    expected = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                - 2 * _trace_sqrt_by_eigvals(s1, s2))
    got = fid.frechet_distance(mu1, s1, mu2, s2, method=method)
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_frechet_distance_known_cases(method):
    rng = np.random.default_rng(3)
    d = 16
    s = _random_covariance(rng, d)
    mu = rng.standard_normal(d)
    assert abs(fid.frechet_distance(mu, s, mu, s, method=method)) < 1e-9 * np.trace(s)
    shift = rng.standard_normal(d)
    assert fid.frechet_distance(mu, s, mu + shift, s, method=method) == pytest.approx(
        shift @ shift, rel=1e-8)
    # commuting (diagonal) covariances: sum (sqrt a - sqrt b)^2, the 1-D W2 distance per axis
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    assert fid.frechet_distance(mu, np.diag(a), mu, np.diag(b), method=method) == pytest.approx(
        np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rel=1e-9)


def test_activation_statistics_are_float64_mean_and_unbiased_covariance():
    x = np.random.default_rng(4).standard_normal((50, 6)).astype(np.float32)
    mu, sigma = fid.activation_statistics(x)
    assert mu.dtype == sigma.dtype == np.float64
    centred = x.astype(np.float64) - x.astype(np.float64).mean(0)
    np.testing.assert_allclose(mu, x.astype(np.float64).sum(0) / 50, rtol=1e-12)
    np.testing.assert_allclose(sigma, centred.T @ centred / 49, rtol=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        fid.activation_statistics(x[:1])


def test_singular_product_gets_the_eps_offset():
    # sqrtm([[0,1],[0,0]]) does not exist (scipy gives inf): pytorch-fid adds eps*I to both
    # covariances; the root of (1+eps)[[eps,1],[0,eps]] has trace 2 sqrt((1+eps) eps).
    eps = 1e-6
    s1, s2 = np.eye(2), np.array([[0.0, 1.0], [0.0, 0.0]])
    with pytest.warns(UserWarning, match="singular"):
        got = fid.frechet_distance(np.zeros(2), s1, np.zeros(2), s2, eps=eps)
    assert got == pytest.approx(2.0 - 4.0 * np.sqrt((1 + eps) * eps), rel=1e-9)


def test_complex_root_small_imaginary_is_dropped_large_raises():
    s1 = np.eye(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no eps retry here: the root is finite
        got = fid.frechet_distance(np.zeros(2), s1, np.zeros(2), np.diag([1.0, -1e-8]))
    # root diag(1, 1e-4 i) -> real part diag(1, 0): 2 + (1 - 1e-8) - 2 * 1
    assert got == pytest.approx(1.0 - 1e-8, rel=1e-12)
    with pytest.raises(ValueError, match="imaginary component of 2"):
        fid.frechet_distance(np.zeros(2), s1, np.zeros(2), np.diag([1.0, -4.0]))


def test_mismatched_shapes_and_unknown_method_raise():
    with pytest.raises(ValueError, match="differ in length"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="do not match"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="method"):
        fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method="svd")


def test_statistics_file_round_trip(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3) * 2
    fid.save_statistics(tmp_path / "stats.npz", mu, sigma)
    with np.load(tmp_path / "stats.npz") as f:          # pytorch-fid reads f["mu"], f["sigma"]
        np.testing.assert_array_equal(f["mu"], mu)
        np.testing.assert_array_equal(f["sigma"], sigma)
    got_mu, got_sigma = fid.load_statistics(tmp_path / "stats.npz")
    np.testing.assert_array_equal(got_mu, mu)
    np.testing.assert_array_equal(got_sigma, sigma)
    np.savez(tmp_path / "bad.npz", mean=mu)
    with pytest.raises(ValueError, match="bad.npz.*'mu' and 'sigma'"):
        fid.load_statistics(tmp_path / "bad.npz")


@pytest.mark.slow
def test_full_size_sqrtm_and_eigh_agree():
    """2048-d, as a real FID: pytorch-fid's sqrtm route against the eigh route (minutes on 2
    cores, hence slow)."""
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((3000, 2048)), 1.1 * rng.standard_normal((3000, 2048)) + 0.1
    assert fid.fid_from_features(a, b) == pytest.approx(
        fid.fid_from_features(a, b, method="eigh"), rel=1e-6)
