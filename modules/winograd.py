"""3x3 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
Neural Networks", CVPR 2016), for CPU inference.

Each 2x2 tile of output takes 16 multiplies per input/output channel pair instead of 36:

    Y = A^T [ (G g G^T) * (B^T d B) ] A       (g the 3x3 kernel, d the 4x4 input patch, * element-wise)

The 16 element-wise products, summed over input channels, are 16 matrix products (tiles x C) @ (C x O); they run
as one grouped 1x1 convolution, which oneDNN computes at its full rate (PyTorch sends a 1x1 convolution of a
batch under 16 to a slower matrix product on one thread, so the tiles form a batch of 16). The transforms are
additions and subtractions of strided views. The numbers are those of the direct convolution up to float
rounding (``tests/test_optimize.py``). Measured on a 2-core AMD EPYC: a 256-channel 3x3 convolution on a 64x64
map in 12.7 ms instead of 17 ms, on a 96x96 map 33.9 instead of 39.
"""
import torch
import torch.nn.functional as F
from torch import nn

# G of F(2x2, 3x3): the kernel transform.
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def winograd_weights(conv):
    """(16 O, I, 1, 1) channels-last weights of the grouped product, group 4a+b holding (G g G^T)[a, b], and its
    (16 O,) bias: the bias sits in group (1, 1), the one product that every output of a tile sums exactly once."""
    g = torch.tensor(_G, dtype=torch.float64, device=conv.weight.device)  # (4, 3)
    weight = conv.weight.detach().double()  # (O, I, 3, 3)
    O, I = weight.shape[:2]
    u = (g @ weight @ g.T).permute(2, 3, 0, 1)  # (4, 4, O, I)
    bias = torch.zeros(4, 4, O, dtype=torch.float64, device=weight.device)
    if conv.bias is not None:
        bias[1, 1] = conv.bias.detach().double()
    dtype = conv.weight.dtype
    return (u.reshape(16 * O, I, 1, 1).to(dtype).contiguous(memory_format=torch.channels_last),
            bias.reshape(16 * O).to(dtype))


class WinogradConv2d(nn.Module):
    """``conv`` (3x3, stride 1, padding 1) by F(2x2, 3x3) on channels-last maps of even size with at least
    ``MIN_TILES`` tiles; any other input goes to ``conv`` itself. Inference only: the weights are transformed at
    the first input that needs them (most deep, wide convolutions only ever see small maps).
    """

    MIN_TILES = 1024  # below 64x64 maps the transforms cost more than the products save
    CHUNK_TILES = 1024  # tiles of one image transformed at a time (every image of the batch at once: measured 7%
    # faster on 2 threads than image by image, 256 channels at 64x64, batch 4)

    def __init__(self, conv):
        super().__init__()
        if not self.supports(conv):
            raise ValueError(f"Winograd F(2x2, 3x3) needs a 3x3, stride-1, padding-1 convolution, got {conv}")
        self.conv = conv
        self.weights = None  # (16 O, I, 1, 1) and (16 O,), from winograd_weights

    @staticmethod
    def supports(conv):
        return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
                and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1)

    def chunk_rows(self, h, w):
        """Tile rows per chunk: a divisor of h, at most CHUNK_TILES tiles, a multiple of 16 tiles; or None."""
        for rows in range(h, 0, -1):
            if h % rows == 0 and rows * w <= self.CHUNK_TILES and rows * w % 16 == 0:
                return rows
        return None

    def forward(self, x):
        B, C, H, W = x.shape
        h, w = H // 2, W // 2  # tiles
        rows = self.chunk_rows(h, w) if H % 2 == 0 and W % 2 == 0 and h * w >= self.MIN_TILES else None
        if rows is None or x.stride(1) != 1:  # odd or small maps, or not channels-last
            return self.conv(x)
        if self.weights is None:
            self.weights = winograd_weights(self.conv)
        padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # (B, H + 2, W + 2, C), a view of NHWC memory
        out = x.new_empty(B, h, 2, w, 2, self.conv.out_channels)  # (B, h, 2, w, 2, O): tile rows and columns
        for i in range(0, h, rows):
            self._tiles(padded[:, 2 * i:2 * (i + rows) + 2], out[:, i:i + rows])
        return out.view(B, H, W, -1).permute(0, 3, 1, 2)  # (B, O, H, W), channels-last

    def _tiles(self, patch, out):
        """Convolve ``patch`` (B, 2r + 2, W + 2, C) into ``out`` (B, r, 2, w, 2, O)."""
        B, rows, _, w, _, O = out.shape
        C = patch.shape[-1]
        T = B * rows * w  # tiles
        # B^T d B, rows then columns: B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]].
        r = [patch[:, k:k + 2 * rows:2] for k in range(4)]  # (B, rows, W + 2, C) each
        d = (r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3])
        v = patch.new_empty(B, rows, w, 16, C)  # (B, rows, w, 16, C): tile-major, then the 16 products
        for a in range(4):
            c = [d[a][:, :, k:k + 2 * w:2] for k in range(4)]  # (B, rows, w, C) each
            torch.sub(c[0], c[2], out=v[:, :, :, 4 * a])
            torch.add(c[1], c[2], out=v[:, :, :, 4 * a + 1])
            torch.sub(c[2], c[1], out=v[:, :, :, 4 * a + 2])
            torch.sub(c[1], c[3], out=v[:, :, :, 4 * a + 3])
        v = v.view(16, 1, T // 16, 16 * C).permute(0, 3, 1, 2)  # (16, 16 C, 1, T / 16), NHWC
        m = F.conv2d(v, *self.weights, groups=16)  # (16, 16 O, 1, T / 16), NHWC
        m = m.permute(0, 2, 3, 1).reshape(B, rows, w, 4, 4, O)
        # A^T m A, rows then columns: A^T = [[1, 1, 1, 0], [0, 1, -1, -1]].
        for a, s in enumerate((m[:, :, :, 0] + m[:, :, :, 1] + m[:, :, :, 2],
                               m[:, :, :, 1] - m[:, :, :, 2] - m[:, :, :, 3])):  # (B, rows, w, 4, O)
            torch.add(s[..., 0, :] + s[..., 1, :], s[..., 2, :], out=out[:, :, a, :, 0])
            torch.sub(s[..., 1, :] - s[..., 2, :], s[..., 3, :], out=out[:, :, a, :, 1])
