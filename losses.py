"""Training losses (docs/method.md §8; paper Sec. 3.5), kept apart from the networks.

- :func:`perceptual_loss`: L1 between VGG-19 features of image pyramids of the prediction and the driving frame.
- :func:`pixel_l1_loss`: an optional L1 on the pixels themselves (not in the published training).
- :class:`RandomTransform` and :func:`equivariance_losses`: region centres and affines must follow a random
  affine + thin-plate-spline warp of the driving frame.
- :func:`avd_losses`: the AVD network's reconstruction of the unscaled driving regions.

VGG-19 comes from torchvision's ImageNet weights, read from the torch cache (downloaded once when there is a
network). ``vgg_weights: random`` in ``train_params`` opts into fixed random features, for offline tests and
synthetic data only. All geometry (affine inverses, Jacobians) is computed in float32, outside autocast.

Shapes: B batch, C channels, K regions, H x W frames; coordinates in [-1, 1], (x, y) last.
"""
import contextlib
import socket
import threading
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from modules.util import AntiAliasInterpolation2d, make_coordinate_grid

# torchvision's VGG-19 'features' up to relu5_1, in its layer order (so its state-dict keys load): 'M' pools.
_VGG19_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)
# Slices of 'features' ending at relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (docs/method.md §8).
_VGG19_SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_RANDOM_VGG_SEED = 0


class VGGWeightsUnavailable(RuntimeError):
    """The ImageNet VGG-19 weights are neither cached nor downloadable; the message says how to provide them."""


def vgg19_weights_url():
    """The URL torchvision downloads the ImageNet VGG-19 weights from."""
    from torchvision.models import VGG19_Weights
    return VGG19_Weights.IMAGENET1K_V1.url


def vgg19_weights_path():
    """Where torchvision caches those weights: ``<torch hub dir>/checkpoints/<file name of the URL>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(vgg19_weights_url()).path).name


def _reachable(url, timeout=5.0):
    """Whether an HTTP HEAD request for ``url`` answers within ``timeout`` seconds (name lookup included)."""
    result = []

    def probe():
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as response:
                result.append(response.status < 400)
        except Exception:  # noqa: BLE001 -- any failure means "not reachable"; a probe thread must not raise
            pass
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


@contextlib.contextmanager
def _socket_timeout(seconds):
    """torch.hub downloads without a timeout: bound every socket operation meanwhile, so a dead link fails."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def ensure_vgg19_weights(config_name="the config", download=True, progress=True):
    """Path of the cached ImageNet VGG-19 weights, downloading them first when missing and the network is up.

    Raises VGGWeightsUnavailable, saying where to put the file, when they are missing and cannot be fetched.
    With ``download=False`` (processes other than rank 0) only checks that a download is possible.
    """
    path, url = vgg19_weights_path(), vgg19_weights_url()
    if path.is_file():
        return path
    if not _reachable(url):
        raise _unavailable(path, url, f"no answer from {urlparse(url).hostname}", config_name)
    if download:
        try:
            with _socket_timeout(60):
                torch.hub.load_state_dict_from_url(url, progress=progress, map_location="cpu", weights_only=True)
        except OSError as e:
            raise _unavailable(path, url, f"the download failed: {e}", config_name) from None
    return path


def _unavailable(path, url, reason, config_name):
    """The error that says where torchvision looks for the weights and how to opt out."""
    return VGGWeightsUnavailable(
        f"the perceptual loss needs torchvision's ImageNet VGG-19 weights, which are not in the torch cache and "
        f"cannot be downloaded ({reason}).\n"
        f"  Download {url} on a machine with a network and copy it to\n    {path}\n"
        f"  (the torch cache folder is $TORCH_HOME/hub/checkpoints, by default ~/.cache/torch/hub/checkpoints;"
        f" the file name must stay {path.name}).\n"
        f"  Only for offline tests or synthetic data: set 'vgg_weights: random' under train_params in "
        f"{config_name} to train with fixed random VGG features (results will not match the paper).")


class Vgg19(nn.Module):
    """The first five ReLU stages of VGG-19 on ImageNet-normalised input; frozen (no gradients, eval mode).

    Args:
        weights: 'imagenet' (read from the torch cache, see :func:`ensure_vgg19_weights`; never downloads here)
            or 'random' (fixed random weights from a fixed seed, the same in every process and every run).
    Forward: (B, 3, H, W) in [0, 1] -> list of 5 feature maps.
    """

    def __init__(self, weights="imagenet"):
        super().__init__()
        if weights not in ("imagenet", "random"):
            raise ValueError(f"vgg_weights must be 'imagenet' or 'random', got {weights!r}")
        with torch.random.fork_rng(devices=[]):  # leaves the caller's random stream untouched
            torch.manual_seed(_RANDOM_VGG_SEED)
            features = self._make_features()
        if weights == "imagenet":
            self._load_imagenet(features)
        self.slices = nn.ModuleList(features[a:b] for a, b in _VGG19_SLICES)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def _load_imagenet(features):
        path = vgg19_weights_path()
        if not path.is_file():
            raise VGGWeightsUnavailable(f"{path}: VGG-19 weights not found; call ensure_vgg19_weights() first")
        state = torch.load(path, map_location="cpu", weights_only=True)
        own = {k: v for k, v in state.items() if k.startswith("features.")}
        features.load_state_dict({k[len("features."):]: v for k, v in own.items()
                                  if int(k.split(".")[1]) < len(features)}, strict=True)

    @staticmethod
    def _make_features():
        """torchvision's layers, initialised as torchvision does (which is all 'random' weights are)."""
        layers, in_channels = [], 3
        for v in _VGG19_LAYERS:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                conv = nn.Conv2d(in_channels, v, kernel_size=3, padding=1)
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
                layers += [conv, nn.ReLU(inplace=True)]
                in_channels = v
        return nn.Sequential(*layers)

    def train(self, mode=True):
        return super().train(False)  # always frozen

    def forward(self, x):
        out = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)  # (B, 3, H, W)
        features = []
        for block in self.slices:
            out = block(out)
            features.append(out)
        return features


class ImagePyramid(nn.Module):
    """Anti-aliased down-scalings of an image: {'prediction_<scale>': (B, C, H * scale, W * scale)}."""

    def __init__(self, scales, num_channels):
        super().__init__()
        self.scales = list(scales)
        self.downs = nn.ModuleDict({str(s).replace(".", "-"): AntiAliasInterpolation2d(num_channels, s)
                                    for s in self.scales})

    def forward(self, x):
        return {f"prediction_{s}": self.downs[str(s).replace(".", "-")](x) for s in self.scales}


def perceptual_loss(vgg, pyramid, prediction, driving, weights):
    """Σ_scale Σ_i w_i · mean|φ_i(prediction) − φ_i(driving)| over the pyramid scales and VGG stages i.

    Args: prediction, driving (B, C, H, W) in [0, 1]; weights, one per VGG stage. Returns a scalar tensor (a zero
    one when every weight is 0). The driving frame's features are the fixed target (no graph is kept for them).
    """
    total = prediction.new_zeros((), dtype=torch.float32)  # ()
    if not any(weights):
        return total
    with torch.no_grad():
        targets = {key: vgg(scaled) for key, scaled in pyramid(driving).items()}
    for key, scaled in pyramid(prediction).items():  # (B, C, H * scale, W * scale) per scale
        for w, features, target in zip(weights, vgg(scaled), targets[key]):
            if w != 0:  # l1_loss is autocast to float32
                total = total + w * F.l1_loss(features, target)
    return total


def pixel_l1_loss(prediction, driving, weight):
    """weight · mean|prediction − driving| over (B, C, H, W), in float32."""
    return weight * F.l1_loss(prediction.float(), driving.float())


class RandomTransform:
    """A random warp per batch item (docs/method.md §8): affine θ = [I | 0] + N(0, σ_affine²) and a thin-plate
    spline with control points q_j on a points_tps² grid and weights c_j ~ N(0, σ_tps²):

        T(z) = θ[:, :2] z + θ[:, 2] + Σ_j c_j r_j² log(r_j + 1e-6),   r_j = |z − q_j|_1

    (the spline term is one number added to both coordinates, as in the published training). Parameters are
    drawn on the CPU from torch's global generator, so runs are reproducible on any device.
    """

    def __init__(self, batch_size, sigma_affine, sigma_tps, points_tps, device="cpu"):
        B, P = batch_size, points_tps
        theta = torch.eye(2, 3).expand(B, 2, 3) + sigma_affine * torch.randn(B, 2, 3)  # (B, 2, 3)
        self.theta = theta.to(device)
        self.control_points = make_coordinate_grid((P, P), device=device).view(1, 1, P * P, 2)  # (1, 1, P², 2)
        self.control_params = (sigma_tps * torch.randn(B, 1, P * P)).to(device)  # (B, 1, P²)

    def warp_coordinates(self, z):
        """T(z): (B, N, 2) -> (B, N, 2), float32."""
        z = z.float()
        affine = z @ self.theta[:, :, :2].transpose(1, 2) + self.theta[:, None, :, 2]  # (B, N, 2)
        r = (z.unsqueeze(2) - self.control_points).abs().sum(-1)  # (B, N, P²), L1 distances
        spline = (self.control_params * r ** 2 * torch.log(r + 1e-6)).sum(-1, keepdim=True)  # (B, N, 1)
        return affine + spline  # (B, N, 2)

    def jacobian(self, z):
        """J_T(z) in closed form, differentiable in z: (B, N, 2) -> (B, N, 2, 2), row i = ∂T_i/∂z.

        With s(z) = Σ_j c_j r_j² log(r_j + 1e-6) the spline term, added to both coordinates,

            ∂T_i/∂z = θ[i, :2] + ∇s(z),   ∇s(z) = Σ_j c_j (2 r_j log(r_j + 1e-6) + r_j² / (r_j + 1e-6)) sign(z − q_j)

        (sign(0) = 0, the subgradient autograd takes for |·|). The same derivative autograd gives, without its
        double backward: one backward pass through the loss, and a graph that ``torch.compile`` traces whole.
        """
        z = z.float()
        difference = z.unsqueeze(2) - self.control_points  # (B, N, P², 2)
        r = difference.abs().sum(-1)  # (B, N, P²)
        d_spline = self.control_params * (2 * r * torch.log(r + 1e-6) + r ** 2 / (r + 1e-6))  # (B, N, P²), ds/dr_j
        grad_spline = (d_spline.unsqueeze(-1) * torch.sign(difference)).sum(2)  # (B, N, 2)
        return self.theta[:, None, :, :2] + grad_spline.unsqueeze(-2)  # (B, N, 2, 2)

    def transform_frame(self, frame):
        """The frame resampled at T(grid), reflection padding: (B, C, H, W) -> (B, C, H, W)."""
        B, _, H, W = frame.shape
        grid = make_coordinate_grid((H, W), device=frame.device).view(1, H * W, 2).expand(B, -1, -1)
        grid = self.warp_coordinates(grid).view(B, H, W, 2)  # (B, H, W, 2)
        return F.grid_sample(frame, grid.to(frame.dtype), mode="bilinear", padding_mode="reflection",
                             align_corners=False)


def equivariance_losses(driving_params, transformed_params, transform, weights, revert_axis_swap=True):
    """The two equivariance losses (docs/method.md §8), in float32.

    Args:
        driving_params, transformed_params: region params of the driving frame and of its transformed copy,
            ``shift`` (B, K, 2) and, for the affine loss, ``affine`` (B, K, 2, 2).
        transform: the :class:`RandomTransform` that made the transformed frame.
        weights: ``loss_weights`` with ``equivariance_shift`` and ``equivariance_affine``.
    Returns:
        dict with ``equivariance_shift`` = w · mean|p_d − T(p_t)| and, when both frames carry affines,
        ``equivariance_affine`` = w · mean|I − A_d⁻¹ J_T(p_t) A_t| (each only when its weight is not 0).
    """
    losses = {}
    p_d, p_t = driving_params["shift"].float(), transformed_params["shift"].float()  # (B, K, 2)
    if weights["equivariance_shift"] != 0:
        shift_error = (p_d - transform.warp_coordinates(p_t)).abs().mean()
        losses["equivariance_shift"] = weights["equivariance_shift"] * shift_error
    if weights["equivariance_affine"] != 0 and "affine" in driving_params and "affine" in transformed_params:
        a_d, a_t = driving_params["affine"].float(), transformed_params["affine"].float()  # (B, K, 2, 2)
        # inv_ex, unchecked: torch.inverse would copy its error flag to the host, a GPU sync in every step; a singular
        # A_d gives non-finite losses instead, on which the trainer stops before the step.
        a_d_inverse = torch.linalg.inv_ex(a_d).inverse  # (B, K, 2, 2)
        product = a_d_inverse @ (transform.jacobian(p_t) @ a_t)  # (B, K, 2, 2), ≈ I when equivariant
        if revert_axis_swap:  # the SVD's sign ambiguity: align the first axes before comparing
            product = product * torch.sign(product[..., 0:1, 0:1])
        eye = torch.eye(2, device=product.device)
        losses["equivariance_affine"] = weights["equivariance_affine"] * (eye - product).abs().mean()
    return losses


def avd_losses(reconstructed, target, lambda_shift, lambda_affine):
    """AVD reconstruction (Sec. 3.4): λ_shift · mean|p − p̂| and λ_affine · mean|A − Â| against the unscaled
    driving params. Returns {'shift', 'affine'} scalars, each only when its λ is not 0."""
    losses = {}
    if lambda_shift != 0:
        losses["shift"] = lambda_shift * (reconstructed["shift"].float() - target["shift"].float()).abs().mean()
    if lambda_affine != 0:
        losses["affine"] = lambda_affine * (reconstructed["affine"].float() - target["affine"].float()).abs().mean()
    return losses
