"""Losses: the random TPS warp and its Jacobian, the equivariance and AVD losses, the perceptual loss, and the
VGG-19 weights (loaded from the torch cache, a clear message offline, never a download in tests)."""
import time

import pytest
import torch

import losses
from losses import (ImagePyramid, RandomTransform, Vgg19, VGGWeightsUnavailable, avd_losses, ensure_vgg19_weights,
                    equivariance_losses, perceptual_loss)

WEIGHTS = {"equivariance_shift": 10.0, "equivariance_affine": 10.0}


@pytest.fixture(scope="module")
def random_vgg():
    return Vgg19("random")


@pytest.fixture
def no_download(monkeypatch, tmp_path):
    """An empty torch cache, no network, and a download that fails the test if anyone tries it."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(losses, "_reachable", lambda url, timeout=5.0: False)

    def forbidden(*args, **kwargs):
        raise AssertionError("a download was attempted")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", forbidden)
    return tmp_path / "hub"


def test_identity_transform_leaves_points_and_constant_frames():
    torch.manual_seed(0)
    transform = RandomTransform(2, sigma_affine=0.0, sigma_tps=0.0, points_tps=5)
    frame = torch.full((2, 3, 16, 20), 0.25)
    torch.testing.assert_close(transform.transform_frame(frame), frame)  # reflection padding: no dark border
    z = torch.rand(2, 7, 2) * 2 - 1
    torch.testing.assert_close(transform.warp_coordinates(z), z)


def test_jacobian_of_affine_is_its_matrix():
    torch.manual_seed(0)
    transform = RandomTransform(3, sigma_affine=0.2, sigma_tps=0.0, points_tps=5)
    jacobian = transform.jacobian(torch.rand(3, 4, 2) * 2 - 1)  # (B, K, 2, 2)
    expected = transform.theta[:, None, :, :2].expand(3, 4, 2, 2)
    torch.testing.assert_close(jacobian, expected)


def test_jacobian_of_spline_matches_finite_differences():
    torch.manual_seed(1)
    transform = RandomTransform(2, sigma_affine=0.05, sigma_tps=0.05, points_tps=5)
    z = torch.tensor([[[0.13, -0.41], [0.7, 0.33]], [[-0.52, 0.27], [0.05, 0.91]]])
    eps, warp = 1e-3, transform.warp_coordinates
    numeric = torch.stack([(warp(z + eps * e) - warp(z - eps * e)) / (2 * eps) for e in torch.eye(2)],
                          dim=-1)  # (B, K, 2, 2): column j = ∂T/∂z_j
    torch.testing.assert_close(transform.jacobian(z), numeric, atol=2e-3, rtol=1e-2)


def test_jacobian_is_differentiable_in_the_points():
    torch.manual_seed(2)
    transform = RandomTransform(1, sigma_affine=0.05, sigma_tps=0.05, points_tps=3)
    z = (torch.rand(1, 3, 2) * 2 - 1).requires_grad_(True)
    transform.jacobian(z).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def _autograd_jacobian(transform, z):
    """J_T(z) by autograd (double backward): the oracle for the closed form."""
    z = z.detach().requires_grad_(True)
    warped = transform.warp_coordinates(z)  # (B, N, 2); each point's own derivative from the sum over points
    rows = [torch.autograd.grad(warped[..., i].sum(), z, create_graph=True)[0] for i in range(2)]
    return torch.stack(rows, dim=-2), z  # (B, N, 2, 2)


@pytest.mark.parametrize("points", ["random", "on_control_lines"])
@pytest.mark.parametrize("seed", [0, 1])
def test_closed_form_jacobian_is_autograds_with_its_gradient(seed, points):
    """The closed form equals autograd's derivative, and so does its own gradient in z (what the affine loss sends
    back to the region predictor), to float rounding; also where |z - q_j| has a zero coordinate (sign 0)."""
    torch.manual_seed(seed)
    transform = RandomTransform(3, sigma_affine=0.05, sigma_tps=0.05, points_tps=5)
    z = torch.rand(3, 10, 2) * 2 - 1
    if points == "on_control_lines":  # the 5x5 grid's lines are at -1, -0.5, 0, 0.5, 1
        z[:, ::2, 0] = torch.tensor([-0.5, 0.0, 0.5, 1.0, -1.0])
    expected, z_auto = _autograd_jacobian(transform, z)
    z_closed = z.clone().requires_grad_(True)
    actual = transform.jacobian(z_closed)
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-5)
    weights = torch.randn(3, 10, 2, 2)
    grad_expected, = torch.autograd.grad((expected * weights).sum(), z_auto)
    grad_actual, = torch.autograd.grad((actual * weights).sum(), z_closed)
    torch.testing.assert_close(grad_actual, grad_expected, atol=1e-5, rtol=1e-4)


def _consistent_params(transform, B=2, K=3):
    """Driving params that are exactly the transformed frame's params carried through T."""
    p_t = torch.rand(B, K, 2) * 1.6 - 0.8
    a_t = torch.randn(B, K, 2, 2) * 0.3 + torch.eye(2)
    transformed = {"shift": p_t, "affine": a_t}
    driving = {"shift": transform.warp_coordinates(p_t).detach(), "affine": (transform.jacobian(p_t) @ a_t).detach()}
    return driving, transformed


def test_equivariance_losses_vanish_for_equivariant_regions():
    torch.manual_seed(3)
    transform = RandomTransform(2, sigma_affine=0.05, sigma_tps=0.005, points_tps=5)
    driving, transformed = _consistent_params(transform)
    result = equivariance_losses(driving, transformed, transform, WEIGHTS)
    assert set(result) == {"equivariance_shift", "equivariance_affine"}
    assert result["equivariance_shift"] < 1e-5 and result["equivariance_affine"] < 1e-5
    moved = {"shift": driving["shift"] + 0.1, "affine": driving["affine"]}
    torch.testing.assert_close(equivariance_losses(moved, transformed, transform, WEIGHTS)["equivariance_shift"],
                               torch.tensor(1.0), atol=1e-4, rtol=0)


def test_revert_axis_swap_forgives_the_svd_sign():
    torch.manual_seed(4)
    transform = RandomTransform(2, sigma_affine=0.05, sigma_tps=0.005, points_tps=5)
    driving, transformed = _consistent_params(transform)
    flipped = {"shift": driving["shift"], "affine": -driving["affine"]}
    assert equivariance_losses(flipped, transformed, transform, WEIGHTS, revert_axis_swap=True)[
        "equivariance_affine"] < 1e-5
    assert equivariance_losses(flipped, transformed, transform, WEIGHTS, revert_axis_swap=False)[
        "equivariance_affine"] > 1


def test_zero_weights_and_missing_affines_skip_losses():
    transform = RandomTransform(1, 0.05, 0.005, 5)
    params = {"shift": torch.zeros(1, 2, 2)}
    assert equivariance_losses(params, params, transform, {"equivariance_shift": 0, "equivariance_affine": 1}) == {}


def test_avd_losses():
    target = {"shift": torch.zeros(2, 3, 2), "affine": torch.eye(2).expand(2, 3, 2, 2)}
    off = {"shift": target["shift"] + 0.5, "affine": target["affine"] - 0.25}
    result = avd_losses(off, target, lambda_shift=2.0, lambda_affine=4.0)
    torch.testing.assert_close(result["shift"], torch.tensor(1.0))
    torch.testing.assert_close(result["affine"], torch.tensor(1.0))


@pytest.mark.parametrize("lambdas, present", [((2.0, 0), {"shift"}), ((0, 4.0), {"affine"}), ((0, 0), set())])
def test_avd_loss_with_lambda_0_is_absent(lambdas, present):
    target = {"shift": torch.zeros(2, 3, 2), "affine": torch.eye(2).expand(2, 3, 2, 2)}
    assert set(avd_losses(target, target, *lambdas)) == present


def test_perceptual_loss_with_every_weight_0_is_a_zero_tensor(random_vgg):
    prediction = torch.rand(2, 3, 32, 32, requires_grad=True)
    value = perceptual_loss(random_vgg, ImagePyramid([1, 0.5], 3), prediction, torch.rand(2, 3, 32, 32), [0] * 5)
    assert isinstance(value, torch.Tensor) and value.shape == () and value.item() == 0
    assert value.detach().float().reshape(()) == 0  # what the per-step summary does with every loss


def test_image_pyramid_keys_and_sizes():
    pyramid = ImagePyramid([1, 0.5, 0.25], 3)
    out = pyramid(torch.rand(2, 3, 32, 32))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "prediction_1": (2, 3, 32, 32), "prediction_0.5": (2, 3, 16, 16), "prediction_0.25": (2, 3, 8, 8)}


def test_perceptual_loss_zero_on_equal_images_and_grad_only_to_prediction(random_vgg):
    pyramid = ImagePyramid([1, 0.5], 3)
    driving = torch.rand(2, 3, 32, 32, requires_grad=True)
    weights = [10, 10, 10, 10, 10]
    assert perceptual_loss(random_vgg, pyramid, driving.detach(), driving.detach(), weights) == 0
    prediction = torch.rand(2, 3, 32, 32, requires_grad=True)
    value = perceptual_loss(random_vgg, pyramid, prediction, driving, weights)
    value.backward()
    assert value > 0 and prediction.grad.abs().sum() > 0 and driving.grad is None


def test_random_vgg_is_fixed_frozen_and_leaves_the_rng_alone(random_vgg):
    state = torch.get_rng_state()
    other = Vgg19("random")
    assert torch.equal(state, torch.get_rng_state())
    for a, b in zip(random_vgg.parameters(), other.parameters()):
        assert torch.equal(a, b) and not a.requires_grad
    other.train()
    assert not other.training
    assert [f.shape[1] for f in other(torch.rand(1, 3, 32, 32))] == [64, 128, 256, 512, 512]


def test_imagenet_weights_load_from_the_torch_cache(no_download):
    from torchvision.models.vgg import cfgs, make_layers
    path = losses.vgg19_weights_path()
    assert path.parent == no_download / "checkpoints" and path.name == "vgg19-dcbb9e9d.pth"
    path.parent.mkdir(parents=True)
    # A file laid out as torchvision's: all of vgg19's 'features' (and a classifier, which is not needed).
    torch.manual_seed(0)
    torchvision_features = make_layers(cfgs["E"])
    state = {f"features.{k}": v for k, v in torchvision_features.state_dict().items()}
    torch.save({**state, "classifier.0.bias": torch.zeros(3)}, path)
    assert ensure_vgg19_weights() == path
    vgg = Vgg19("imagenet")
    ours = {f"features.{k}": v for block in vgg.slices for k, v in block.state_dict().items()}
    assert set(ours) == {k for k in state if int(k.split(".")[1]) < 30}
    for key, value in ours.items():
        assert torch.equal(value, state[key])


def test_offline_without_weights_gives_the_clear_message(no_download):
    with pytest.raises(VGGWeightsUnavailable) as error:
        ensure_vgg19_weights(config_name="config/my.yaml")
    message = str(error.value)
    for needed in ("vgg19-dcbb9e9d.pth", str(no_download / "checkpoints"), "TORCH_HOME", "vgg_weights: random",
                   "config/my.yaml", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"):
        assert needed in message
    with pytest.raises(VGGWeightsUnavailable):
        Vgg19("imagenet")


def test_reachable_probe_is_bounded(monkeypatch):
    # A connection that never answers: the probe gives up within its timeout instead of hanging.
    def hang(*args, **kwargs):
        time.sleep(2)
        raise OSError("timed out")
    monkeypatch.setattr(losses.urllib.request, "urlopen", hang)
    started = time.time()
    assert not losses._reachable("https://download.pytorch.org/models/x.pth", timeout=0.3)
    assert time.time() - started < 2


def test_transformed_frame_samples_the_driving_frame_at_T():
    # out(z) = frame(T(z)): a shift by +d in x reads the frame d further right. With align_corners=False (the
    # published convention) a shift d in [-1, 1] units is d * W / 2 pixels; on a ramp, bilinear reads are exact.
    W, d = 16, 2 / 15
    identity, shifted = RandomTransform(1, 0.0, 0.0, 3), RandomTransform(1, 0.0, 0.0, 3)
    shifted.theta[0, 0, 2] = d
    ramp = torch.arange(W, dtype=torch.float32).expand(1, 1, 8, W)  # intensity = pixel column
    difference = shifted.transform_frame(ramp) - identity.transform_frame(ramp)
    torch.testing.assert_close(difference[..., 2:-2], torch.full_like(difference[..., 2:-2], d * W / 2))
