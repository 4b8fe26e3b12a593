"""Animation via disentanglement (docs/method.md §6; paper Sec. 3.4): the driving pose on the source's shape."""
import torch
from torch import nn

from modules.util import as_float32, float32_geometry, inverse


def _mlp(sizes):
    """Linear layers with BatchNorm1d and ReLU between them (none after the last): Sequential indices
    0, 1, 2, 3, ... are the checkpoint keys."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers += [nn.BatchNorm1d(n_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def region_params_to_emb(region_params):
    """(shift (B, K, 2), affine (B, K, 2, 2)) -> (B, 6K), per region (x, y, a00, a01, a10, a11)."""
    shift, affine = region_params["shift"], region_params["affine"]
    B, K, _ = shift.shape
    return torch.cat([shift, affine.reshape(B, K, 4)], dim=-1).reshape(B, 6 * K)


def emb_to_region_params(emb, num_regions):
    """(B, 6K) -> {'shift': (B, K, 2), 'affine': (B, K, 2, 2)}: the inverse of ``region_params_to_emb``."""
    emb = emb.view(emb.shape[0], num_regions, 6)
    return {"shift": emb[..., :2], "affine": emb[..., 2:].reshape(emb.shape[0], num_regions, 2, 2)}


class AVDNetwork(nn.Module):
    """Encodes the identity (shape) of the source's regions and the pose of the driving's, and decodes
    region params that keep the first and take the second."""

    def __init__(self, num_regions, id_bottle_size=64, pose_bottle_size=64, revert_axis_swap=True):
        super().__init__()
        input_size = 6 * num_regions
        self.num_regions = num_regions
        self.revert_axis_swap = revert_axis_swap
        self.id_encoder = _mlp([input_size, 256, 512, 1024, id_bottle_size])
        self.pose_encoder = _mlp([input_size, 256, 512, 1024, pose_bottle_size])
        self.decoder = _mlp([pose_bottle_size + id_bottle_size, 1024, 512, 256, input_size])

    def forward(self, x_id, x_pose):
        """Args: region params dicts of the identity (source) and pose (driving) frames, batch B.

        Returns ``shift`` (B, K, 2), ``affine`` and ``covar`` (B, K, 2, 2).
        """
        if self.revert_axis_swap:
            with float32_geometry(x_id["affine"].device.type):
                relative = x_id["affine"] @ inverse(x_pose["affine"])  # (B, K, 2, 2)
            sign = torch.sign(relative[..., 0:1, 0:1])  # (B, K, 1, 1)
            x_id = {"shift": x_id["shift"], "affine": x_id["affine"] * sign}
        pose_emb = self.pose_encoder(region_params_to_emb(x_pose))  # (B, pose_bottle_size)
        id_emb = self.id_encoder(region_params_to_emb(x_id))  # (B, id_bottle_size)
        rec = emb_to_region_params(self.decoder(torch.cat([pose_emb, id_emb], dim=1)), self.num_regions)
        rec = as_float32(rec)
        with float32_geometry(rec["affine"].device.type):
            rec["covar"] = rec["affine"] @ rec["affine"].transpose(-1, -2)  # (B, K, 2, 2)
        return rec
