"""Invariants of the networks, parametrised over the config switches, on tiny models and 64x64 inputs."""
import pytest
import torch

from config import validate_config
from modules.avd_network import emb_to_region_params, region_params_to_emb
from modules.build import build_models
from modules.util import AntiAliasInterpolation2d, make_coordinate_grid, region2gaussian
from tiny import VARIANTS, tiny_model_params


def build(variant, dtype=torch.float32, **overrides):
    config = validate_config({"model_params": tiny_model_params(variant, **overrides)})
    torch.manual_seed(0)
    return {name: model.to(dtype) for name, model in build_models(config).items()}


def images(batch=2, size=(64, 64), dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, *size, generator=generator).to(dtype)


def test_grid_corners_and_order():
    grid = make_coordinate_grid((5, 7))
    assert grid.shape == (5, 7, 2)
    assert torch.equal(grid[0, 0], torch.tensor([-1.0, -1.0]))
    assert torch.equal(grid[-1, -1], torch.tensor([1.0, 1.0]))
    assert torch.equal(grid[0, -1], torch.tensor([1.0, -1.0]))  # x runs along the width
    assert torch.allclose(grid[2, 3], torch.tensor([0.0, 0.0]))


def test_region2gaussian_isotropic_matches_covariance_form():
    mean = torch.tensor([[[0.2, -0.3]]])  # (1, 1, 2)
    covar = 0.01 * torch.eye(2).view(1, 1, 2, 2)
    a = region2gaussian(mean, 0.01, (9, 11))
    b = region2gaussian(mean, covar, (9, 11))
    assert a.shape == (1, 1, 9, 11)
    assert torch.allclose(a, b, atol=1e-6)
    assert a.max() <= 1


def test_the_term_by_term_geometry_equals_the_matrix_products():
    """Eq. 6's Gaussians and Eq. 1's affine motions, computed term by term, against the batched 2x2 products the
    reference writes (equal up to a fused multiply-add's rounding)."""
    from modules.util import apply_2x2, inverse
    generator = torch.Generator().manual_seed(0)
    mean = torch.rand(3, 5, 2, generator=generator) * 2 - 1  # (B, K, 2)
    a = torch.randn(3, 5, 2, 2, generator=generator)
    covar = a @ a.transpose(-1, -2) * 0.01 + 0.001 * torch.eye(2)  # (B, K, 2, 2), SPD
    diff = make_coordinate_grid((9, 11)).view(1, 1, 9, 11, 2) - mean.view(3, 5, 1, 1, 2)  # (B, K, h, w, 2)
    products = diff.unsqueeze(-2) @ inverse(covar).view(3, 5, 1, 1, 2, 2) @ diff.unsqueeze(-1)  # (B, K, h, w, 1, 1)
    assert torch.allclose(region2gaussian(mean, covar, (9, 11)), torch.exp(-0.5 * products[..., 0, 0]),
                          rtol=1e-6, atol=1e-7)
    moved = (a.view(3, 5, 1, 1, 2, 2) @ diff.unsqueeze(-1)).squeeze(-1)  # (B, K, h, w, 2)
    assert torch.allclose(apply_2x2(a.view(3, 5, 1, 1, 2, 2), diff), moved, rtol=1e-6, atol=1e-7)


def test_antialias_keeps_constant_images_inside():
    down = AntiAliasInterpolation2d(3, 0.25)
    out = down(torch.ones(1, 3, 64, 64))
    assert out.shape == (1, 3, 16, 16)
    assert torch.allclose(out[..., 4:-4, 4:-4], torch.ones(1, 3, 8, 8), atol=1e-6)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_identity_motion_gives_identity_flow(variant):
    models = build(variant)
    for model in models.values():
        model.eval()
    source = images(batch=2)
    with torch.no_grad():
        params = models["region_predictor"](source)
        identity_bg = torch.eye(3).repeat(2, 1, 1)
        out = models["generator"].pixelwise_flow_predictor(source, params, params, identity_bg)
    h, w = out["optical_flow"].shape[1:3]
    expected = make_coordinate_grid((h, w)).expand(2, h, w, 2)
    assert torch.allclose(out["optical_flow"], expected, atol=1e-5)


def test_zero_background_is_the_identity():
    models = build("bg_zero")
    out = models["bg_predictor"](images(), images(seed=1))
    assert torch.equal(out, torch.eye(3).repeat(2, 1, 1))
    assert len(list(models["bg_predictor"].parameters())) == 0


@pytest.mark.parametrize("variant", ["bg_shift", "mraa", "bg_perspective"])
def test_background_starts_as_identity(variant):
    models = build(variant)
    out = models["bg_predictor"](images(), images(seed=1))
    assert torch.allclose(out, torch.eye(3).repeat(2, 1, 1))


def test_avd_embedding_round_trip():
    shift, affine = torch.randn(3, 5, 2), torch.randn(3, 5, 2, 2)
    emb = region_params_to_emb({"shift": shift, "affine": affine})
    assert emb.shape == (3, 30)
    back = emb_to_region_params(emb, 5)
    assert torch.equal(back["shift"], shift) and torch.equal(back["affine"], affine)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_outputs_shapes_and_every_parameter_gets_a_gradient(variant):
    models = build(variant)
    source, driving = images(seed=0), images(seed=1)
    source_params = models["region_predictor"](source)
    driving_params = models["region_predictor"](driving)
    K = tiny_model_params(variant)["num_regions"]
    assert source_params["shift"].shape == (2, K, 2)
    if "affine" in source_params:
        assert source_params["affine"].shape == source_params["covar"].shape == (2, K, 2, 2)
    bg_params = models["bg_predictor"](source, driving)
    out = models["generator"](source, driving_params, source_params, bg_params)
    assert out["prediction"].shape == source.shape
    assert out["deformed"].shape == source.shape
    loss = out["prediction"].mean() + out["deformed"].mean()
    if "affine" in driving_params:
        avd = models["avd_network"](source_params, driving_params)
        assert avd["affine"].shape == (2, K, 2, 2)
        loss = loss + avd["shift"].mean() + avd["affine"].mean()
    loss.backward()
    assert torch.isfinite(loss)
    trained = ["generator", "region_predictor", "bg_predictor"] + (["avd_network"] if "affine" in driving_params
                                                                   else [])
    for name in trained:
        for pname, p in models[name].named_parameters():
            assert p.grad is not None, f"{variant}: {name}.{pname} gets no gradient"
            assert torch.isfinite(p.grad).all(), f"{variant}: {name}.{pname} has a non-finite gradient"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [(64, 64), (48, 64)])
def test_dtype_and_non_square_inputs(dtype, size):
    models = build("mraa", dtype=dtype)
    for model in models.values():
        model.eval()
    source = images(1, size, dtype)
    with torch.no_grad():
        params = models["region_predictor"](source)
        out = models["generator"](source, params, params)
    assert out["prediction"].dtype == dtype and out["prediction"].shape == (1, 3, *size)
    assert params["affine"].dtype == dtype


def test_cached_source_features_give_the_same_prediction():
    models = build("mraa")
    for model in models.values():
        model.eval()
    source, driving = images(1), images(3, seed=1)
    with torch.no_grad():
        source_params = models["region_predictor"](source)
        driving_params = models["region_predictor"](driving)
        repeated = {k: v.expand(3, *v.shape[1:]) for k, v in source_params.items()}
        sources = source.expand(3, -1, -1, -1)
        direct = models["generator"](sources, driving_params, repeated)["prediction"]
        features = models["generator"].encode(source)
        cached = models["generator"](sources, driving_params, repeated, source_features=features)["prediction"]
    assert torch.allclose(direct, cached, atol=1e-6)


def test_modules_never_call_cuda():
    from conftest import REPO_ROOT
    for path in (REPO_ROOT / "modules").glob("*.py"):
        assert ".cuda(" not in path.read_text(), f"{path.name} calls .cuda(): take the device from the inputs"


@pytest.mark.parametrize("variant", ["mraa", "regression", "bg_perspective"])
def test_geometry_stays_float32_under_bf16_autocast(variant):
    """Mixed precision (CPU autocast stands in for CUDA's here): convolutions may run in bfloat16, but region
    shapes, flows and AVD outputs are float32 and close to the full-precision ones."""
    models = build(variant)
    for model in models.values():
        model.eval()
    source, driving = images(2, seed=0), images(2, seed=1)

    def forward():
        source_params = models["region_predictor"](source)
        driving_params = models["region_predictor"](driving)
        bg_params = models["bg_predictor"](source, driving)
        out = models["generator"](source, driving_params, source_params, bg_params)
        avd = models["avd_network"](source_params, driving_params)
        return source_params, out, avd

    with torch.no_grad():
        reference = forward()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = forward()
    for key in ("shift", "covar", "affine"):
        assert mixed[0][key].dtype == torch.float32
    assert mixed[1]["optical_flow"].dtype == torch.float32 and mixed[2]["covar"].dtype == torch.float32
    assert torch.allclose(mixed[0]["shift"], reference[0]["shift"], atol=0.05)
    assert torch.allclose(mixed[1]["optical_flow"], reference[1]["optical_flow"], atol=0.1)
    assert torch.isfinite(mixed[1]["prediction"]).all()


def test_singular_region_shapes_do_not_crash():
    """A degenerate region (zero-area shape, as a barely trained AVD network can output) falls back to the
    pseudo-inverse instead of failing the whole animation."""
    from modules.util import inverse
    matrices = torch.tensor([[[1.0, 2.0], [2.0, 4.0]], [[2.0, 0.0], [0.0, 0.5]]])
    result = inverse(matrices)
    assert torch.allclose(result[1], torch.tensor([[0.5, 0.0], [0.0, 2.0]]))
    assert torch.allclose(result[0], torch.linalg.pinv(matrices[0])) and torch.isfinite(result).all()


def _random(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _spd(n, seed=0):
    """(1, n, 2, 2) well-conditioned covariance-like matrices."""
    a = _random(1, n, 2, 2, seed=seed) - 0.5
    return a @ a.transpose(-1, -2) + 0.05 * torch.eye(2, dtype=torch.float64)


def _gradcheck_cases():
    from modules.generator import resize_flow
    from modules.pixelwise_flow_predictor import region_transforms
    from modules.region_predictor import covar_to_affine, heatmap_moments
    from modules.util import from_homogeneous, inverse, to_homogeneous, warp
    heatmap = torch.softmax(_random(1, 2, 5 * 6, seed=1) * 4, dim=2).view(1, 2, 5, 6)
    return {
        "inverse": (inverse, (_spd(3) + 0.3 * (_random(1, 3, 2, 2, seed=2) - 0.5),)),
        "region2gaussian": (lambda m, c: region2gaussian(m, c, (5, 6)), (_random(1, 2, 2) - 0.5, _spd(2, 3) / 4)),
        "region2gaussian_isotropic": (lambda m: region2gaussian(m, 0.1, (5, 6)), (_random(1, 2, 2) - 0.5,)),
        "homogeneous": (lambda x: from_homogeneous(to_homogeneous(x) * 2 + 0.1), (_random(2, 3, 2),)),
        "warp": (warp, (_random(1, 2, 5, 6), 2.2 * _random(1, 4, 3, 2, seed=4) - 1.1)),
        "resize_flow": (lambda f: resize_flow(f, (7, 5)), (_random(1, 3, 4, 2),)),
        "heatmap_moments": (heatmap_moments, (heatmap,)),
        "covar_to_affine": (lambda c: covar_to_affine(c)[0], (_spd(3, 5),)),
        "region_transforms": (lambda a, b: region_transforms({"affine": a}, {"affine": b}, revert_axis_swap=True),
                              (_spd(3, 6) + 0.5, _spd(3, 7) + 0.5)),
    }


@pytest.mark.parametrize("name", list(_gradcheck_cases()))
def test_geometry_helpers_gradcheck(name):
    """float64 finite differences against autograd for every differentiable geometry helper."""
    function, inputs = _gradcheck_cases()[name]
    inputs = tuple(x.requires_grad_(True) for x in inputs)
    assert torch.autograd.gradcheck(function, inputs, eps=1e-6, atol=1e-5)


def test_sparse_motions_gradcheck():
    """Eq. 1 with the background's homogeneous transform: gradients reach both frames' shifts and affines."""
    from modules.pixelwise_flow_predictor import PixelwiseFlowPredictor
    predictor = PixelwiseFlowPredictor(block_expansion=2, num_blocks=1, max_features=4, num_regions=2,
                                       num_channels=3, revert_axis_swap=True)

    def motions(shift_d, affine_d, shift_s, affine_s, bg):
        return predictor.create_sparse_motions((4, 5), {"shift": shift_d, "affine": affine_d},
                                               {"shift": shift_s, "affine": affine_s}, bg)

    bg = torch.eye(3, dtype=torch.float64)[None] + 0.1 * _random(1, 3, 3, seed=8)
    inputs = (_random(1, 2, 2) - 0.5, _spd(2, 1) + 0.5, _random(1, 2, 2, seed=2) - 0.5, _spd(2, 3) + 0.5, bg)
    assert torch.autograd.gradcheck(motions, tuple(x.requires_grad_(True) for x in inputs), eps=1e-6, atol=1e-5)


def test_closed_form_inverse_matches_lapack():
    from modules.util import inverse_2x2
    a = _random(500, 2, 2, seed=9) - 0.5
    a = a[torch.linalg.det(a).abs() > 1e-2]  # (n, 2, 2), away from singular
    assert torch.allclose(inverse_2x2(a), torch.linalg.inv(a), rtol=1e-10, atol=1e-12)


def test_traced_forward_takes_the_closed_forms(monkeypatch):
    """While a graph is traced, inverses and the region SVD avoid LAPACK (a graph cannot hold it), with the same
    numbers up to float rounding."""
    import modules.region_predictor as region_predictor
    import modules.util as util
    covar = _spd(50, seed=10).float()  # (1, 50, 2, 2)
    expected_affine, expected_inverse = region_predictor.covar_to_affine(covar)[0], util.inverse(covar)
    monkeypatch.setattr(util.torch.linalg, "svd", lambda *a, **k: pytest.fail("LAPACK SVD while exporting"))
    monkeypatch.setattr(util.torch.linalg, "inv_ex", lambda *a, **k: pytest.fail("LAPACK inverse while exporting"))
    monkeypatch.setattr(util, "exporting", lambda: True)
    monkeypatch.setattr(region_predictor, "exporting", lambda: True)
    assert torch.allclose(region_predictor.covar_to_affine(covar)[0], expected_affine, atol=1e-5)
    assert torch.allclose(util.inverse(covar), expected_inverse, rtol=1e-4, atol=1e-5)
