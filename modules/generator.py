"""Generator (docs/method.md §5; paper Sec. 3.3): warps the source's features by the flow and in-paints the rest."""
import torch
import torch.nn.functional as F
from torch import nn

from modules.pixelwise_flow_predictor import PixelwiseFlowPredictor
from modules.util import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d, channels, warp


def resize_flow(optical_flow, size):
    """A flow (B, h, w, 2) bilinearly resized to ``size`` (H, W); returned as it is when already that size."""
    if tuple(optical_flow.shape[1:3]) == tuple(size):
        return optical_flow
    flow = F.interpolate(optical_flow.permute(0, 3, 1, 2), size=tuple(size), mode="bilinear",
                         align_corners=False)  # (B, 2, H, W)
    return flow.permute(0, 2, 3, 1)  # (B, H, W, 2)


class Generator(nn.Module):
    """Encoder-decoder that renders the driving frame from the source image and the two frames' regions."""

    def __init__(self, num_channels, num_regions, block_expansion, max_features, num_down_blocks,
                 num_bottleneck_blocks, pixelwise_flow_predictor_params=None, skips=False, revert_axis_swap=True):
        super().__init__()
        if pixelwise_flow_predictor_params is not None:
            self.pixelwise_flow_predictor = PixelwiseFlowPredictor(
                num_regions=num_regions, num_channels=num_channels, revert_axis_swap=revert_axis_swap,
                **pixelwise_flow_predictor_params)
        else:
            self.pixelwise_flow_predictor = None

        def ch(i):
            return channels(i, block_expansion, max_features)

        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=(7, 7), padding=(3, 3))
        self.down_blocks = nn.ModuleList(DownBlock2d(ch(i), ch(i + 1)) for i in range(num_down_blocks))
        self.up_blocks = nn.ModuleList(
            UpBlock2d(ch(num_down_blocks - i), ch(num_down_blocks - i - 1)) for i in range(num_down_blocks))
        self.bottleneck = nn.Sequential()
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(ch(num_down_blocks), kernel_size=(3, 3), padding=(1, 1)))
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=(7, 7), padding=(3, 3))
        self.num_channels = num_channels
        self.skips = skips

    @staticmethod
    def deform_input(inp, optical_flow):
        """Warp ``inp`` (B, C, H, W) by ``optical_flow`` (B, h, w, 2), resized to (H, W) if needed."""
        return warp(inp, resize_flow(optical_flow, inp.shape[2:]))  # (B, C, H, W)

    @staticmethod
    def blend(skip, previous, occlusion_map):
        """Warped source features where the occlusion map says the source is visible, the decoder's elsewhere."""
        return skip * occlusion_map + previous * (1 - occlusion_map)

    def apply_optical(self, input_previous=None, input_skip=None, motion_params=None, warped_skip=None):
        """Warp a skip connection by the flow and blend it with the decoder's output under the occlusion map;
        ``warped_skip``: the skip already warped by this flow (a map blended twice is warped once)."""
        if motion_params is None:
            return input_previous if input_previous is not None else input_skip
        input_skip = warped_skip if warped_skip is not None else self.deform_input(input_skip,
                                                                                   motion_params["optical_flow"])
        occlusion_map = motion_params.get("occlusion_map")
        if occlusion_map is None:
            return input_skip
        if occlusion_map.shape[2:] != input_skip.shape[2:]:
            occlusion_map = F.interpolate(occlusion_map, size=input_skip.shape[2:], mode="bilinear",
                                          align_corners=False)
        if input_previous is None:
            return input_skip * occlusion_map
        return self.blend(input_skip, input_previous, occlusion_map)

    def encode(self, source_image):
        """Feature maps of the source, the input of ``first`` excluded: [first, down_1, ..., down_n].

        They depend on the source only, so animation computes them once per video.
        """
        skips = [self.first(source_image)]
        for down_block in self.down_blocks:
            skips.append(down_block(skips[-1]))
        return skips

    def forward(self, source_image, driving_region_params, source_region_params, bg_params=None,
                source_features=None):
        """Args: source_image (B, C, H, W); region params dicts; bg_params (B, 3, 3) or None; optionally the
        source's ``encode`` output (batch 1 or B) to skip recomputing it.

        Returns a dict: ``prediction`` (B, C, H, W), and with a flow predictor ``deformed`` (B, C, H, W),
        ``optical_flow`` (B, h, w, 2), ``occlusion_map`` (B, 1, h, w) when estimated.
        """
        B = source_image.shape[0]
        skips = source_features if source_features is not None else self.encode(source_image)
        skips = [s.expand(B, *s.shape[1:]) for s in skips]
        out = skips[-1]
        output_dict = {}
        motion_params = deformed = deepest = None
        if self.pixelwise_flow_predictor is not None:
            motion_params = self.pixelwise_flow_predictor(source_image=source_image,
                                                          driving_region_params=driving_region_params,
                                                          source_region_params=source_region_params,
                                                          bg_params=bg_params)
            deformed = self.deform_input(source_image, motion_params["optical_flow"])  # also blended last
            deepest = self.deform_input(out, motion_params["optical_flow"])  # blended twice, warped once
            output_dict["deformed"] = deformed
            output_dict["optical_flow"] = motion_params["optical_flow"]
            if "occlusion_map" in motion_params:
                output_dict["occlusion_map"] = motion_params["occlusion_map"]

        # The deepest map is merged here and again in the first skip below: the published weights expect it.
        out = self.apply_optical(input_skip=out, motion_params=motion_params, warped_skip=deepest)
        out = self.bottleneck(out)
        for i, up_block in enumerate(self.up_blocks):
            if self.skips:
                out = self.apply_optical(input_skip=skips[-(i + 1)], input_previous=out, motion_params=motion_params,
                                         warped_skip=deepest if i == 0 else None)
            out = up_block(out)
        if self.skips:
            out = self.apply_optical(input_skip=skips[0], input_previous=out, motion_params=motion_params)
        out = torch.sigmoid(self.final(out))
        if self.skips:
            out = self.apply_optical(input_skip=source_image, input_previous=out, motion_params=motion_params,
                                     warped_skip=deformed)
        output_dict["prediction"] = out  # (B, C, H, W)
        return output_dict
