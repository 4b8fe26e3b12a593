"""3x3 convolutions by Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
Neural Networks", CVPR 2016), for CPU inference.

Each 4x4 tile of output takes 36 multiplies per input/output channel pair instead of 144:

    Y = A^T [ (G g G^T) * (B^T d B) ] A       (g the 3x3 kernel, d the 6x6 input patch, * element-wise)

with the interpolation points 0, 1, -1, 2, -2 and infinity. The 36 element-wise products, summed over input channels,
are 36 matrix products (tiles x C) @ (C x O): one batched matrix product. The transforms are matrix products too:
the 6x6 patches of a chunk of tiles are gathered once, then B^T is applied along rows and along columns as two
small products over the whole chunk, and A^T likewise on the way out; a chunk of one image's tiles at a time keeps
the transformed tiles in cache. Elementwise tensor arithmetic, by contrast, passes over memory once per term.

The numbers are those of the direct convolution up to float rounding (float32: about 1e-5 on outputs of order 1,
``tests/test_optimize.py``); the kernel transform is computed in float64 and rounded once.

Measured on a 2-core AMD EPYC (1 thread, float32): a 256-channel 3x3 convolution of a 64x64 map in 22 ms instead of
42 ms (oneDNN's direct kernel).
"""
import torch
import torch.nn.functional as F
from torch import nn

# F(4x4, 3x3) at the points (0, 1, -1, 2, -2, infinity): B^T (input), G (kernel), A^T (output).
_BT = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
       (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))
_G = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
      (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))
_AT = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))


def winograd_weights(weight):
    """(O, I, 3, 3) kernels -> (36, I, O) transformed kernels G g G^T, product index 6a + b, computed in float64."""
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)  # (6, 3)
    u = g @ weight.detach().double() @ g.T  # (O, I, 6, 6)
    return u.permute(2, 3, 1, 0).reshape(36, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


class WinogradConv2d(nn.Module):
    """``conv`` (3x3, stride 1, padding 1) by F(4x4, 3x3) on channels-last maps of at least ``MIN_TILES`` tiles an
    image; any other input goes to ``conv`` itself. Inference only: the kernels are transformed at the first
    input that needs them (most deep, wide convolutions only ever see small maps).
    """

    MIN_TILES = 64  # 32x32 maps: a 256-channel one measured 2x faster than the direct kernel; smaller maps are
    # left to oneDNN, whose kernels there are limited by reading the weights, not by multiply-adds
    CHUNK_TILES = 256  # tiles transformed and multiplied at a time (one 64x64 image; a 96x96 one in 3 chunks)

    def __init__(self, conv):
        super().__init__()
        if not self.supports(conv):
            raise ValueError(f"Winograd F(4x4, 3x3) needs a 3x3, stride-1, padding-1 convolution, got {conv}")
        self.conv = conv
        self.weights = None  # (36, I, O) and (O,)

    @staticmethod
    def supports(conv):
        return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
                and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
                and conv.padding_mode == "zeros")

    def accepts(self, x):
        """Whether ``x`` (B, C, H, W) is convolved by Winograd: channels-last, with enough tiles."""
        H, W = x.shape[-2:]
        return x.dim() == 4 and x.stride(1) == 1 and x.shape[1] > 1 and -(-H // 4) * -(-W // 4) >= self.MIN_TILES

    def transformed_weights(self):
        if self.weights is None:
            bias = self.conv.bias
            self.weights = (winograd_weights(self.conv.weight),
                            bias.detach() if bias is not None else self.conv.weight.new_zeros(self.conv.out_channels))
        return self.weights

    def forward(self, x):
        if not self.accepts(x):
            return self.conv(x)
        B, C, H, W = x.shape
        h, w = -(-H // 4), -(-W // 4)  # tiles; a ragged edge is padded with zeros and its outputs cropped
        u, bias = self.transformed_weights()
        padded = x.new_empty(B, 4 * h + 2, 4 * w + 2, C)  # NHWC, zero borders: F.pad would fill it all first
        padded[:, 1:H + 1, 1:W + 1] = x.permute(0, 2, 3, 1)
        for border in (padded[:, :1], padded[:, H + 1:], padded[:, :, :1], padded[:, :, W + 1:]):
            border.zero_()
        out = x.new_empty(B, h, 4, w, 4, self.conv.out_channels)  # tile rows and columns
        chunks = -(-h * w // self.CHUNK_TILES)
        rows = -(-h // chunks)  # tile rows a chunk: chunks of even size
        for b in range(B):
            for i in range(0, h, rows):
                self._tiles(padded[b, 4 * i:4 * (i + rows) + 2], u, bias, out[b, i:i + rows])
        out = out.view(B, 4 * h, 4 * w, -1)  # (B, 4h, 4w, O), NHWC
        if 4 * h != H or 4 * w != W:
            out = out[:, :H, :W].contiguous()
        return out.permute(0, 3, 1, 2)  # (B, O, H, W), channels-last

    @staticmethod
    def _tiles(patch, u, bias, out):
        """Convolve ``patch`` (4r + 2, 4w + 2, C) into ``out`` (r, 4, w, 4, O) by F(4x4, 3x3)."""
        r, _, w, _, O = out.shape
        C = patch.shape[-1]
        T = r * w
        bt = torch.tensor(_BT, dtype=patch.dtype, device=patch.device)  # (6, 6)
        at = torch.tensor(_AT, dtype=patch.dtype, device=patch.device)  # (4, 6)
        d = patch.new_empty(6, 6, r, w, C)  # the 6x6 patches of the tiles, gathered
        d.copy_(patch.unfold(0, 6, 4).unfold(1, 6, 4).permute(3, 4, 0, 1, 2))
        v = torch.matmul(bt, torch.matmul(bt, d.view(6, -1)).view(6, 6, -1))  # (6, 6, T C): B^T d B
        m = torch.bmm(v.view(36, T, C), u)  # (36, T, O): the products, summed over input channels
        y = torch.matmul(at, torch.matmul(at, m.view(6, -1)).view(4, 6, -1))  # (4, 4, T O): A^T m A
        torch.add(y.view(4, 4, r, w, O).permute(2, 0, 3, 1, 4), bias, out=out)
