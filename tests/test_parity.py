"""Number-for-number parity with the authors' implementation (../shared/parity), and the published shapes."""
import json

import numpy as np
import pytest
import torch

from animate import get_animation_region_params
from checkpoint import load_checkpoint
from config import load_config
from conftest import REPO_ROOT, parity_case_dir
from modules.build import build_models

CASES = ["mraa", "fomm_like", "keypoints_only"]
PUBLISHED = ["vox256.yaml", "taichi256.yaml", "ted384.yaml", "mgif256.yaml", "ted-youtube384.yaml"]
from tolerances import TOLERANCE, reference_tolerance


def load_case(name):
    """Models built from the case's config with its checkpoint loaded strictly, and the expected arrays."""
    folder = parity_case_dir(name)
    models = build_models(load_config(folder / "config.yaml"))
    load_checkpoint(folder / "checkpoint.pth", models, config_name=f"{name}/config.yaml")
    for model in models.values():
        model.eval()
    return models, dict(np.load(folder / "expected.npz"))


def assert_close(name, ours, expected, tolerance=TOLERANCE):
    ours = ours.detach().cpu().numpy()
    assert ours.shape == expected[name].shape, f"{name}: shape {ours.shape} vs {expected[name].shape}"
    error = np.abs(ours - expected[name]).max()
    assert error <= tolerance, f"{name}: max abs error {error:.3g}"


@pytest.mark.parametrize("name", CASES)
@torch.no_grad()
def test_forward_parity(name):
    models, expected = load_case(name)
    source, driving = torch.from_numpy(expected["source"]), torch.from_numpy(expected["driving"])
    T = driving.shape[0]
    source_params = models["region_predictor"](source)
    driving_params = models["region_predictor"](driving)
    checked = 0
    for prefix, params in (("source_region_params", source_params), ("driving_region_params", driving_params)):
        for key in ("shift", "heatmap", "covar", "affine"):
            if f"{prefix}.{key}" in expected:
                assert_close(f"{prefix}.{key}", params[key], expected)
                checked += 1
            else:
                assert key not in params, f"{name}: keypoints-only regions must not have '{key}'"

    sources = source.expand(T, -1, -1, -1)
    bg_params = models["bg_predictor"](sources, driving)
    assert_close("bg_params", bg_params, expected)
    source_params_t = {k: v.expand(T, *v.shape[1:]) for k, v in source_params.items()}
    flow = models["generator"].pixelwise_flow_predictor(sources, driving_params, source_params_t, bg_params)
    generated = models["generator"](sources, driving_params, source_params_t, bg_params)
    for key in ("optical_flow", "occlusion_map"):
        if f"flow.{key}" in expected:
            assert_close(f"flow.{key}", flow[key], expected)
            checked += 1
    for key in ("prediction", "deformed", "occlusion_map"):
        if f"generator.{key}" in expected:
            assert_close(f"generator.{key}", generated[key], expected)
            checked += 1
    if "avd.shift" in expected:
        avd = models["avd_network"](source_params_t, driving_params)
        for key in ("shift", "affine", "covar"):
            assert_close(f"avd.{key}", avd[key], expected)
            checked += 1
    assert checked >= 7


def reference_loop(models, source, driving, mode):
    """The reference demo's animation: one frame at a time, batch 1. (T, 3, H, W) in the inputs' dtype."""
    source_params = models["region_predictor"](source)
    initial = models["region_predictor"](driving[:1])
    predictions = []
    for t in range(driving.shape[0]):
        driving_params = models["region_predictor"](driving[t:t + 1])
        params = get_animation_region_params(source_params, driving_params, initial, mode=mode,
                                             avd_network=models["avd_network"])
        predictions.append(models["generator"](source, params, source_params)["prediction"])
    return torch.cat(predictions)


@pytest.mark.parametrize("name", ["mraa", "fomm_like"])  # keypoints_only has no animation arrays
@pytest.mark.parametrize("mode", ["standard", "relative", "avd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@torch.no_grad()
def test_animation_parity(name, mode, dtype):
    """float32 within ``reference_tolerance`` (avd mode amplifies the CPU's rounding); float64, where no CPU's
    rounding shows, within 1e-4 in every mode (tests/tolerances.py)."""
    models, expected = load_case(name)
    for model in models.values():
        model.to(dtype)
    source, driving = (torch.from_numpy(expected[k]).to(dtype) for k in ("source", "driving"))
    prediction = reference_loop(models, source, driving, mode)
    assert prediction.dtype == dtype
    tolerance = reference_tolerance(mode) if dtype == torch.float32 else TOLERANCE
    assert_close(f"animate.{mode}.prediction", prediction, expected, tolerance)


@pytest.mark.parametrize("config_name", PUBLISHED)
def test_published_config_shapes(config_name, parity_dir):
    manifest = json.loads((parity_dir / "state_dict_shapes.json").read_text())[config_name]
    models = build_models(load_config(REPO_ROOT / "config" / config_name))
    for name, model in models.items():
        ours = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert ours == manifest[name], f"{config_name} {name}: keys or shapes differ from the published model"
