"""Pixel-wise flow predictor (docs/method.md §4; paper Sec. 3.3): combines region motions into a dense flow."""
import torch
import torch.nn.functional as F
from torch import nn

from modules.util import (LOW_PRECISION, AntiAliasInterpolation2d, Hourglass, apply_2x2, as_float32,
                          float32_geometry, from_homogeneous, inverse, make_coordinate_grid, region2gaussian,
                          to_homogeneous, warp)


def region_transforms(driving_region_params, source_region_params, revert_axis_swap=False):
    """Affine part of each region's motion from driving to source: ``A_s A_d^-1`` (B, K, 2, 2), or None.

    With ``revert_axis_swap`` each matrix is multiplied by the sign of its [0, 0] entry, undoing the sign
    ambiguity of the SVD that produced the affines.
    """
    if "affine" not in driving_region_params:
        return None
    affine = source_region_params["affine"] @ inverse(driving_region_params["affine"])  # (B, K, 2, 2)
    if revert_axis_swap:
        affine = affine * torch.sign(affine[..., 0:1, 0:1])
    return affine


class PixelwiseFlowPredictor(nn.Module):
    """Predicts the optical flow (driving -> source sampling grid) and, optionally, an occlusion map."""

    def __init__(self, block_expansion, num_blocks, max_features, num_regions, num_channels,
                 estimate_occlusion_map=False, scale_factor=1, region_var=0.01, use_covar_heatmap=False,
                 use_deformed_source=True, revert_axis_swap=False):
        super().__init__()
        in_features = (num_regions + 1) * (num_channels * use_deformed_source + 1)
        self.hourglass = Hourglass(block_expansion=block_expansion, in_features=in_features,
                                   max_features=max_features, num_blocks=num_blocks)
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_regions + 1, kernel_size=(7, 7), padding=(3, 3))
        if estimate_occlusion_map:
            self.occlusion = nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=(7, 7), padding=(3, 3))
        else:
            self.occlusion = None
        self.num_regions = num_regions
        self.scale_factor = scale_factor
        self.region_var = region_var
        self.use_covar_heatmap = use_covar_heatmap
        self.use_deformed_source = use_deformed_source
        self.revert_axis_swap = revert_axis_swap
        if self.scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, self.scale_factor)

    def create_heatmap_representations(self, spatial_size, driving_region_params, source_region_params):
        """Eq. 6: difference of Gaussians, driving minus source, with a zero map prepended for the background.

        Returns: (B, K + 1, 1, h, w)
        """
        def gaussian(params):
            covar = params["covar"] if self.use_covar_heatmap else self.region_var
            return region2gaussian(params["shift"], covar=covar, spatial_size=spatial_size)  # (B, K, h, w)

        heatmap = gaussian(driving_region_params) - gaussian(source_region_params)  # (B, K, h, w)
        zeros = torch.zeros_like(heatmap[:, :1])  # (B, 1, h, w)
        return torch.cat([zeros, heatmap], dim=1).unsqueeze(2)  # (B, K + 1, 1, h, w)

    def create_sparse_motions(self, spatial_size, driving_region_params, source_region_params, bg_params=None):
        """Eq. 1 per region, ``T_k(z) = A_k (z - p_d) + p_s``, and the background motion at index 0.

        Returns: (B, K + 1, h, w, 2), sampling positions in the source for each driving pixel.
        """
        h, w = spatial_size
        source_shift = source_region_params["shift"]
        B, K, _ = source_shift.shape
        identity_grid = make_coordinate_grid((h, w), dtype=source_shift.dtype, device=source_shift.device)
        identity_grid = identity_grid.view(1, 1, h, w, 2)
        coordinate_grid = identity_grid - driving_region_params["shift"].view(B, K, 1, 1, 2)  # (B, K, h, w, 2)
        affine = region_transforms(driving_region_params, source_region_params, self.revert_axis_swap)
        if affine is not None:
            coordinate_grid = apply_2x2(affine.view(B, K, 1, 1, 2, 2), coordinate_grid)  # (B, K, h, w, 2)
        driving_to_source = coordinate_grid + source_shift.view(B, K, 1, 1, 2)  # (B, K, h, w, 2)

        bg_grid = identity_grid.expand(B, 1, h, w, 2)  # (B, 1, h, w, 2)
        if bg_params is not None:
            bg_grid = to_homogeneous(bg_grid)  # (B, 1, h, w, 3)
            bg_grid = (bg_params.view(B, 1, 1, 1, 3, 3) @ bg_grid.unsqueeze(-1)).squeeze(-1)
            bg_grid = from_homogeneous(bg_grid)  # (B, 1, h, w, 2)
        return torch.cat([bg_grid, driving_to_source], dim=1)  # (B, K + 1, h, w, 2)

    @staticmethod
    def create_deformed_source_image(source_image, sparse_motions):
        """Warp the source by every sparse motion: (B, C, h, w), (B, K+1, h, w, 2) -> (B, K+1, C, h, w)."""
        B, C, h, w = source_image.shape
        M = sparse_motions.shape[1]
        source_repeat = source_image.unsqueeze(1).expand(B, M, C, h, w).reshape(B * M, C, h, w)
        deformed = warp(source_repeat, sparse_motions.reshape(B * M, h, w, 2))  # (B * M, C, h, w)
        return deformed.view(B, M, C, h, w)

    def forward(self, source_image, driving_region_params, source_region_params, bg_params=None):
        """Args: source_image (B, C, H, W); region params dicts; bg_params (B, 3, 3) or None.

        Returns a dict: ``optical_flow`` (B, h, w, 2), ``mask`` (B, K + 1, h, w), ``deformed_source``
        (B, K + 1, C, h, w) and, when estimated, ``occlusion_map`` (B, 1, h, w).
        """
        if self.scale_factor != 1:
            source_image = self.down(source_image)  # (B, C, h, w)
        B, _, h, w = source_image.shape
        with float32_geometry(source_image.device.type):  # motions in float32 under mixed precision
            driving_region_params, source_region_params = as_float32(driving_region_params), \
                as_float32(source_region_params)
            if bg_params is not None and bg_params.dtype in LOW_PRECISION:
                bg_params = bg_params.float()
            heatmap = self.create_heatmap_representations((h, w), driving_region_params, source_region_params)
            sparse_motion = self.create_sparse_motions((h, w), driving_region_params, source_region_params,
                                                       bg_params)  # (B, K + 1, h, w, 2)
            deformed_source = self.create_deformed_source_image(source_image.to(sparse_motion.dtype),
                                                                sparse_motion)  # (B, K + 1, C, h, w)
        if self.use_deformed_source:
            predictor_input = torch.cat([heatmap, deformed_source], dim=2)  # (B, K + 1, C + 1, h, w)
        else:
            predictor_input = heatmap  # (B, K + 1, 1, h, w)
        prediction = self.hourglass(predictor_input.view(B, -1, h, w))  # (B, F, h, w)

        mask_logits, occlusion_logits = self.heads(prediction)
        mask = F.softmax(mask_logits, dim=1)  # (B, K + 1, h, w)
        optical_flow = (sparse_motion * mask.unsqueeze(-1)).sum(dim=1)  # (B, h, w, 2)
        out = {"optical_flow": optical_flow, "mask": mask, "deformed_source": deformed_source}
        if occlusion_logits is not None:
            out["occlusion_map"] = torch.sigmoid(occlusion_logits)  # (B, 1, h, w)
        return out

    def heads(self, prediction):
        """The mask logits (B, K + 1, h, w) and the occlusion logits (B, 1, h, w), or None, from the hourglass's
        output."""
        return self.mask(prediction), self.occlusion(prediction) if self.occlusion is not None else None
