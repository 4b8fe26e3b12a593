"""Region predictor (docs/method.md §2; paper Sec. 3.1-3.2): soft regions, their centres and affine shapes."""
import torch
import torch.nn.functional as F
from torch import nn

from modules.svd import svd_2x2
from modules.util import (LOW_PRECISION, AntiAliasInterpolation2d, Hourglass, exporting, float32_geometry,
                          make_coordinate_grid)


def heatmap_moments(heatmap):
    """Centre and covariance of each region's heatmap.

    Args:
        heatmap: (B, K, h, w), each map summing to one.
    Returns:
        shift (B, K, 2): Eq. 2, the mean of the grid under the heatmap.
        covar (B, K, 2, 2): Eq. 3, the second central moment.
    """
    B, K, h, w = heatmap.shape
    grid = make_coordinate_grid((h, w), dtype=heatmap.dtype, device=heatmap.device)  # (h, w, 2)
    weights = heatmap.unsqueeze(-1)  # (B, K, h, w, 1)
    shift = (weights * grid).sum(dim=(2, 3))  # (B, K, 2)
    centred = grid - shift.view(B, K, 1, 1, 2)  # (B, K, h, w, 2)
    outer = centred.unsqueeze(-1) @ centred.unsqueeze(-2)  # (B, K, h, w, 2, 2)
    covar = (outer * weights.unsqueeze(-1)).sum(dim=(2, 3))  # (B, K, 2, 2)
    return shift, covar


def covar_to_affine(covar):
    """Eq. 4: ``affine = U diag(sqrt(S))`` from the SVD ``covar = U S V^T``, in float32 at least.

    The published weights were trained with the CPU LAPACK SVD and its signs. On the CPU that is what runs; on
    other devices, and in an exported graph, a closed form that follows LAPACK's steps runs on the device itself
    (``modules/svd.py``), with no round trip to the host.

    Args:
        covar: (..., 2, 2)
    Returns:
        affine (..., 2, 2), u (..., 2, 2), d (..., 2, 2) with d = diag(sqrt(S)).
    """
    covar32 = covar.float() if covar.dtype in LOW_PRECISION else covar
    if covar32.device.type == "cpu" and not exporting():
        u, s, _ = torch.linalg.svd(covar32)  # (..., 2, 2), (..., 2)
    else:
        u, s = svd_2x2(covar32)
    d = torch.diag_embed(s.sqrt())  # (..., 2, 2)
    return (u @ d).to(covar.dtype), u, d


class RegionPredictor(nn.Module):
    """Predicts K soft regions of an image, each with a centre (``shift``) and an affine shape.

    Three modes: ``pca_based`` (shape from the heatmap's covariance, the paper's model), regression
    (``estimate_affine`` without PCA: a ``jacobian`` head as in First Order Motion Model), or keypoints only.
    """

    def __init__(self, block_expansion, num_regions, num_channels, max_features, num_blocks, temperature,
                 estimate_affine=False, scale_factor=1, pca_based=False, fast_svd=False, pad=3):
        super().__init__()
        self.predictor = Hourglass(block_expansion, in_features=num_channels, max_features=max_features,
                                   num_blocks=num_blocks)
        self.regions = nn.Conv2d(self.predictor.out_filters, num_regions, kernel_size=(7, 7), padding=pad)
        if estimate_affine and not pca_based:
            # One affine per position, shared by all regions and pooled under each heatmap (Eq. 5 of FOMM).
            self.jacobian = nn.Conv2d(self.predictor.out_filters, 4, kernel_size=(7, 7), padding=pad)
            self.jacobian.weight.data.zero_()
            self.jacobian.bias.data.copy_(torch.tensor([1, 0, 0, 1], dtype=torch.float))
        else:
            self.jacobian = None
        self.num_regions = num_regions
        self.temperature = temperature
        self.scale_factor = scale_factor
        self.pca_based = pca_based
        del fast_svd  # a config key: the reference's switch to an external batched SVD; ours serves both settings
        if self.scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, self.scale_factor)

    def forward(self, x):
        """Args: x (B, C, H, W). Returns a dict of ``shift`` (B, K, 2), ``heatmap`` (B, K, h', w'), and, unless
        keypoints only, ``covar`` and ``affine`` (B, K, 2, 2) (PCA mode also gives ``u`` and ``d``)."""
        if self.scale_factor != 1:
            x = self.down(x)  # (B, C, h, w)
        features = self.predictor(x)  # (B, F, h, w)
        logits = self.regions(features)  # (B, K, h', w')
        B, K, h, w = logits.shape
        if logits.dtype in LOW_PRECISION:
            logits = logits.float()  # region geometry is computed in float32 under mixed precision
        jacobian_map = self.jacobian(features).view(B, 1, 4, h, w) if self.jacobian is not None else None
        with float32_geometry(x.device.type):
            heatmap = F.softmax(logits.view(B, K, h * w) / self.temperature, dim=2).view(B, K, h, w)
            shift, covar = heatmap_moments(heatmap)  # (B, K, 2), (B, K, 2, 2)
            region_params = {"shift": shift, "heatmap": heatmap}
            if self.pca_based:
                affine, u, d = covar_to_affine(covar)
                region_params.update(covar=covar, affine=affine, u=u, d=d)
            elif jacobian_map is not None:
                jacobian_map = jacobian_map.to(heatmap.dtype)  # (B, 1, 4, h', w')
                affine = (heatmap.unsqueeze(2) * jacobian_map).sum(dim=(3, 4)).view(B, K, 2, 2)  # (B, K, 2, 2)
                region_params.update(affine=affine, covar=affine @ affine.transpose(-1, -2))
        return region_params
