"""The three animation modes of get_animation_region_params (docs/method.md §7)."""
import pytest
import torch

from animate import get_animation_region_params

SQUARE = torch.tensor([[[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]])  # (1, 4, 2), area 4


def params(shift, angle=0.0, scale=1.0):
    c, s = torch.cos(torch.tensor(angle)), torch.sin(torch.tensor(angle))
    affine = scale * torch.stack([torch.stack([c, -s]), torch.stack([s, c])])  # (2, 2)
    K = shift.shape[1]
    return {"shift": shift, "affine": affine.expand(1, K, 2, 2).clone(), "covar": torch.eye(2).expand(1, K, 2, 2)}


def test_standard_returns_the_driving_params():
    driving = params(SQUARE * 0.3)
    out = get_animation_region_params(params(SQUARE), driving, params(SQUARE * 0.5), mode="standard")
    assert out["shift"] is driving["shift"] and out["affine"] is driving["affine"]


@pytest.mark.parametrize("adapt,expected_scale", [(True, 2.0), (False, 1.0)])
def test_relative_motion_and_its_scale(adapt, expected_scale):
    source = params(SQUARE * 0.5)  # area 1
    initial = params(SQUARE * 0.25, angle=0.1)  # area 0.25: the source is twice as large
    driving = params(SQUARE * 0.25 + 0.1, angle=0.3)
    out = get_animation_region_params(source, driving, initial, mode="relative", adapt_movement_scale=adapt)
    assert torch.allclose(out["shift"], source["shift"] + 0.1 * expected_scale)
    expected_affine = params(SQUARE, angle=0.2 + 0.0)["affine"]  # rotation by 0.3 - 0.1, on an identity source
    assert torch.allclose(out["affine"], expected_affine, atol=1e-6)
    assert out["covar"] is driving["covar"]  # everything else is the driving frame's


def test_relative_needs_an_area_only_to_adapt_the_scale():
    line = torch.tensor([[[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]]])
    with pytest.raises(ValueError, match="degenerate"):
        get_animation_region_params(params(line), params(line), params(line), mode="relative")
    out = get_animation_region_params(params(line), params(line + 0.1), params(line), mode="relative",
                                      adapt_movement_scale=False)
    assert torch.allclose(out["shift"], line + 0.1)


def test_avd_mode_calls_the_network_and_needs_one():
    calls = []

    def avd(x_id, x_pose):
        calls.append((x_id, x_pose))
        return {"shift": x_pose["shift"], "affine": x_id["affine"]}
    source, driving = params(SQUARE, angle=0.5), params(SQUARE * 0.5)
    out = get_animation_region_params(source, driving, driving, mode="avd", avd_network=avd)
    assert calls and out["affine"] is source["affine"]
    with pytest.raises(ValueError, match="needs an AVD network"):
        get_animation_region_params(source, driving, driving, mode="avd")
    with pytest.raises(ValueError, match="unknown animation mode"):
        get_animation_region_params(source, driving, driving, mode="absolute")
