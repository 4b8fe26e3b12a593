"""Background motion predictor (docs/method.md §3; paper Sec. 3.3): a global transform between two frames."""
import torch
from torch import nn

from modules.util import Encoder, channels

# Output size of the fc layer and its identity initialisation, per background type.
_BG_OUTPUTS = {
    "shift": (0, 0),
    "affine": (1, 0, 0, 0, 1, 0),
    "perspective": (1, 0, 0, 0, 1, 0, 0, 0),
}
BG_TYPES = ("zero",) + tuple(_BG_OUTPUTS)


class BGMotionPredictor(nn.Module):
    """Predicts a (B, 3, 3) homogeneous transform of the background from source to driving.

    ``bg_type`` is ``zero`` (always the identity, no parameters), ``shift``, ``affine`` or ``perspective``.
    """

    def __init__(self, block_expansion, num_channels, max_features, num_blocks, bg_type="zero"):
        super().__init__()
        if bg_type not in BG_TYPES:
            raise ValueError(f"bg_type must be one of {', '.join(BG_TYPES)}, got {bg_type!r}")
        self.bg_type = bg_type
        if bg_type != "zero":
            self.encoder = Encoder(block_expansion, in_features=num_channels * 2, max_features=max_features,
                                   num_blocks=num_blocks)
            identity = _BG_OUTPUTS[bg_type]
            self.fc = nn.Linear(channels(num_blocks, block_expansion, max_features), len(identity))
            self.fc.weight.data.zero_()
            self.fc.bias.data.copy_(torch.tensor(identity, dtype=torch.float))

    def forward(self, source_image, driving_image):
        """Args: source_image, driving_image (B, C, H, W). Returns (B, 3, 3)."""
        B = source_image.shape[0]
        out = torch.eye(3, dtype=source_image.dtype, device=source_image.device).repeat(B, 1, 1)  # (B, 3, 3)
        if self.bg_type == "zero":
            return out
        features = self.encoder(torch.cat([source_image, driving_image], dim=1))[-1]  # (B, F, h, w)
        prediction = self.fc(features.mean(dim=(2, 3))).to(out.dtype)  # (B, 2 | 6 | 8)
        if self.bg_type == "shift":
            out[:, :2, 2] = prediction
        elif self.bg_type == "affine":
            out[:, :2, :] = prediction.view(B, 2, 3)
        else:
            out[:, :2, :] = prediction[:, :6].view(B, 2, 3)
            out[:, 2, :2] = prediction[:, 6:]
        return out
