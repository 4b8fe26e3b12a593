"""Building blocks shared by the networks, and the coordinate helpers (docs/method.md §1)."""
import contextlib

import torch
import torch.nn.functional as F
from torch import nn


def channels(i, block_expansion, max_features):
    """Width of the i-th level of an encoder: ``min(max_features, block_expansion * 2**i)``."""
    return min(max_features, block_expansion * (2 ** i))


def make_coordinate_grid(spatial_size, dtype=torch.float32, device=None):
    """Pixel-centre coordinates of an (h, w) image in [-1, 1], (x, y) last.

    Returns:
        (h, w, 2) tensor; ``grid[0, 0] == (-1, -1)`` and ``grid[h - 1, w - 1] == (1, 1)``.
    """
    h, w = spatial_size
    x = torch.arange(w, dtype=dtype, device=device)  # (w,)
    y = torch.arange(h, dtype=dtype, device=device)  # (h,)
    x = 2 * (x / (w - 1)) - 1
    y = 2 * (y / (h - 1)) - 1
    xx = x.view(1, w).expand(h, w)  # (h, w)
    yy = y.view(h, 1).expand(h, w)  # (h, w)
    return torch.stack([xx, yy], dim=2)  # (h, w, 2)


def exporting():
    """Whether the forward is being traced into a graph (ONNX export): then 2x2 inverses and SVDs take closed forms,
    since a graph holds neither LAPACK calls nor branches on values."""
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


def inverse_2x2(matrices):
    """Closed-form inverse of each (..., 2, 2) matrix, adjugate over determinant: element-wise arithmetic only.

    A singular matrix gives non-finite entries, as ``torch.linalg.inv_ex`` without its error check does.
    """
    a, b = matrices[..., 0, 0], matrices[..., 0, 1]  # (...,)
    c, d = matrices[..., 1, 0], matrices[..., 1, 1]
    det = a * d - b * c  # (...,)
    adjugate = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2)  # (..., 2, 2)
    return adjugate / det[..., None, None]  # (..., 2, 2)


def inverse(matrices):
    """Inverse of each (..., n, n) matrix, without waiting for the device.

    On the CPU this is LAPACK's inverse (what the published weights were trained with), with the pseudo-inverse
    for any singular matrix instead of an error. Elsewhere ``torch.linalg.inv_ex`` with no error check:
    ``torch.inverse`` would copy its error flags to the host and so stall the GPU on every call; a singular matrix
    gives non-finite entries instead. In an exported graph, the closed form :func:`inverse_2x2`. Under
    ``torch.compile`` no branch depends on the values, so the per-frame path traces as one graph.
    """
    if exporting() and matrices.shape[-2:] == (2, 2):
        return inverse_2x2(matrices)
    if matrices.device.type == "cpu":
        result, info = torch.linalg.inv_ex(matrices)  # the same LAPACK inverse, with its status per matrix
        # A degenerate region (say, from a poorly trained AVD network) takes the pseudo-inverse: no crash. Traced
        # by torch.compile, both are computed and selected, since a branch on ``info`` would break the graph.
        if torch.compiler.is_compiling() or bool(info.any()):
            result = torch.where((info != 0)[..., None, None], torch.linalg.pinv(matrices), result)
        return result
    return torch.linalg.inv_ex(matrices).inverse


def region2gaussian(mean, covar, spatial_size):
    """Gaussian-like map of a region: ``exp(-0.5 d^T covar^-1 d)`` with ``d = grid - mean``.

    Args:
        mean: (..., 2) region centres.
        covar: (..., 2, 2) covariances, or a plain number v for the isotropic ``exp(-0.5 |d|^2 / v)``.
        spatial_size: (h, w) of the output.
    Returns:
        (..., h, w)
    """
    grid = make_coordinate_grid(spatial_size, dtype=mean.dtype, device=mean.device)  # (h, w, 2)
    lead = mean.shape[:-1]
    if isinstance(covar, (int, float)):
        diff = grid.view((1,) * len(lead) + grid.shape) - mean.view(lead + (1, 1, 2))  # (..., h, w, 2)
        return torch.exp(-0.5 * (diff ** 2).sum(-1) / covar)  # (..., h, w)
    m = inverse(covar)[..., None, None]  # (..., 2, 2, 1, 1)
    dx, dy = grid[..., 0] - mean[..., 0, None, None], grid[..., 1] - mean[..., 1, None, None]  # (..., h, w)
    # d^T M d as the product (d^T M) d computes it, term by term: the same numbers without a batched 2x2 product
    # per pixel (4x faster on a CPU, and no tiny-matrix kernels on a GPU).
    under_exp = (dx * m[..., 0, 0, :, :] + dy * m[..., 1, 0, :, :]) * dx \
        + (dx * m[..., 0, 1, :, :] + dy * m[..., 1, 1, :, :]) * dy  # (..., h, w)
    return torch.exp(-0.5 * under_exp)  # (..., h, w)


LOW_PRECISION = (torch.float16, torch.bfloat16)


@contextlib.contextmanager
def float32_geometry(device_type):
    """Autocast off: region moments, SVDs, inverses and coordinate products stay in float32 under mixed
    precision (a bfloat16 inverse or covariance is too coarse for the shapes the weights expect)."""
    try:
        autocast_off = torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:  # a device type without autocast ('meta'): there is nothing to switch off
        autocast_off = contextlib.nullcontext()
    with autocast_off:
        yield


def as_float32(region_params):
    """Region params with half-precision entries promoted to float32 (others, float64 included, kept)."""
    return {k: v.float() if torch.is_tensor(v) and v.dtype in LOW_PRECISION else v for k, v in region_params.items()}


def apply_2x2(matrices, points):
    """``matrices @ points`` for (..., 2, 2) matrices broadcast over (..., 2) points, term by term as the product
    computes it: the same numbers without a batched 2x2 product per point."""
    x, y = points[..., 0], points[..., 1]  # (...)
    return torch.stack([matrices[..., 0, 0] * x + matrices[..., 0, 1] * y,
                        matrices[..., 1, 0] * x + matrices[..., 1, 1] * y], dim=-1)  # (..., 2)


def to_homogeneous(coordinates):
    """(..., 2) -> (..., 3) by appending ones."""
    ones = torch.ones_like(coordinates[..., :1])
    return torch.cat([coordinates, ones], dim=-1)


def from_homogeneous(coordinates):
    """(..., 3) -> (..., 2) by dividing by the last coordinate."""
    return coordinates[..., :2] / coordinates[..., 2:3]


def warp(image, grid):
    """Bilinear sampling of ``image`` (B, C, H, W) at ``grid`` (B, h, w, 2) in [-1, 1], zeros outside."""
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B, C, h, w)


class ResBlock2d(nn.Module):
    """Pre-activation residual block that keeps resolution and width."""

    def __init__(self, in_features, kernel_size, padding):
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.norm1 = nn.BatchNorm2d(in_features, affine=True)
        self.norm2 = nn.BatchNorm2d(in_features, affine=True)

    def forward(self, x):
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return x + out


class UpBlock2d(nn.Module):
    """Nearest-neighbour up-sampling by 2, then conv, norm, ReLU."""

    def __init__(self, in_features, out_features, kernel_size=3, padding=1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x):
        out = self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))  # (B, O, 2h, 2w)
        return F.relu(self.norm(out))


class DownBlock2d(nn.Module):
    """Conv, norm, ReLU, then 2x2 average pooling."""

    def __init__(self, in_features, out_features, kernel_size=3, padding=1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.pool = nn.AvgPool2d(kernel_size=(2, 2))

    def forward(self, x):
        return self.pool(F.relu(self.norm(self.conv(x))))


class SameBlock2d(nn.Module):
    """Conv, norm, ReLU at constant resolution."""

    def __init__(self, in_features, out_features, kernel_size=3, padding=1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x):
        return F.relu(self.norm(self.conv(x)))


class Encoder(nn.Module):
    """Hourglass encoder; returns every level, the input first: ``[x, d1, ..., dn]``."""

    def __init__(self, block_expansion, in_features, num_blocks=3, max_features=256):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock2d(in_features if i == 0 else channels(i, block_expansion, max_features),
                        channels(i + 1, block_expansion, max_features))
            for i in range(num_blocks))

    def forward(self, x):
        outs = [x]
        for down_block in self.down_blocks:
            outs.append(down_block(outs[-1]))
        return outs


class Decoder(nn.Module):
    """Hourglass decoder: up-sample, then concatenate the encoder level of the same size (up-sampled first)."""

    def __init__(self, block_expansion, in_features, num_blocks=3, max_features=256):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            in_filters = (1 if i == num_blocks - 1 else 2) * channels(i + 1, block_expansion, max_features)
            blocks.append(UpBlock2d(in_filters, channels(i, block_expansion, max_features)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features

    def forward(self, x):
        x = list(x)
        out = x.pop()
        for up_block in self.up_blocks:
            out = up_block(out)
            out = torch.cat([out, x.pop()], dim=1)
        return out


class Hourglass(nn.Module):
    """U-Net style encoder-decoder; output has ``out_filters = block_expansion + in_features`` channels."""

    def __init__(self, block_expansion, in_features, num_blocks=3, max_features=256):
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x):
        return self.decoder(self.encoder(x))


class AntiAliasInterpolation2d(nn.Module):
    """Gaussian blur followed by strided sub-sampling, so down-scaling does not alias.

    The kernel is a persistent buffer named ``weight``: published checkpoints hold it.
    """

    def __init__(self, channels, scale):
        super().__init__()
        sigma = (1 / scale - 1) / 2
        kernel_size = 2 * round(sigma * 4) + 1
        self.ka = kernel_size // 2
        self.kb = self.ka - 1 if kernel_size % 2 == 0 else self.ka
        t = torch.arange(kernel_size, dtype=torch.float32)  # (k,)
        gauss = torch.exp(-(t - (kernel_size - 1) / 2) ** 2 / (2 * sigma ** 2))  # (k,)
        kernel = gauss[:, None] * gauss[None, :]  # (k, k)
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.view(1, 1, kernel_size, kernel_size).repeat(channels, 1, 1, 1))
        self.groups = channels
        self.scale = scale
        self.step = int(1 / scale)

    def forward(self, x):
        if self.scale == 1.0:
            return x
        out = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
        out = F.conv2d(out, weight=self.weight.to(x.dtype), groups=self.groups)
        return out[:, :, ::self.step, ::self.step]
