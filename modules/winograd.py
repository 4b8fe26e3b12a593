"""3x3 convolutions by Winograd's minimal filtering F(m x m, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
Neural Networks", CVPR 2016), for CPU inference.

Each m x m tile of output takes (m + 2)^2 multiplies per input/output channel pair instead of 9 m^2:

    Y = A^T [ (G g G^T) * (B^T d B) ] A       (g the 3x3 kernel, d the (m+2)x(m+2) input patch, * element-wise)

F(6x6, 3x3) (points 0, +-1, +-2, +-1/2, infinity) takes 64 multiplies for 36 outputs, 5.1x fewer than direct;
F(4x4, 3x3) (points 0, +-1, +-2, infinity) 36 for 16, 4x fewer, and rounds less. The (m + 2)^2 element-wise
products, summed over input channels, are as many matrix products (tiles x C) @ (C x O): one batched matrix
product. The transforms are matrix products too: the patches of a chunk of tiles are gathered once, then B^T is
applied along rows and along columns as two small products over the whole chunk, and A^T likewise on the way
out; a chunk of one image's tiles at a time keeps the transformed tiles in cache. (Elementwise tensor arithmetic
passes over memory once per term: the F(2x2, 3x3) this replaced spent as long on its transforms as on its
products, and at batch 4 was slower than oneDNN's direct kernel.)

The numbers are those of the direct convolution up to float rounding (``tests/test_optimize.py``). Measured on a
2-core AMD EPYC (2 threads, float32, 256 channels, batch 4, random weights): a 64x64 map in 41 ms (F(6x6)) and
45 ms (F(4x4)) against 83 ms for oneDNN's direct kernel, a 96x96 one in 87 and 101 against 189; the largest
difference from float64 was 4.0e-5 (F(6x6)), 2.3e-5 (F(4x4)) and 7.7e-6 (direct) on outputs up to 3.1. Through the
whole vox256 generator (random weights) the frames moved by 2.7e-5 from the plain network's either way.

Under bf16 autocast they still compute in float32 (the input converted as it is copied): the transforms amplify
rounding, and with the products in bf16 a conv's error was 2.6% against 0.29% for bf16's direct kernel, at the same
speed (40 ms against 43); in float32 they are as fast as that direct kernel and 100 times closer.
"""
import torch
import torch.nn.functional as F
from torch import nn

# B^T (input), G (kernel) and A^T (output) of F(m x m, 3x3), by output tile size m.
TRANSFORMS = {
    4: (((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
         (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
        ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
         (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
        ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))),
    6: (((1, 0, -21 / 4, 0, 21 / 4, 0, -1, 0), (0, 1, 1, -17 / 4, -17 / 4, 1, 1, 0),
         (0, -1, 1, 17 / 4, -17 / 4, -1, 1, 0), (0, 1 / 2, 1 / 4, -5 / 2, -5 / 4, 2, 1, 0),
         (0, -1 / 2, 1 / 4, 5 / 2, -5 / 4, -2, 1, 0), (0, 2, 4, -5 / 2, -5, 1 / 2, 1, 0),
         (0, -2, 4, 5 / 2, -5, -1 / 2, 1, 0), (0, -1, 0, 21 / 4, 0, -21 / 4, 0, 1)),
        ((1, 0, 0), (-2 / 9, -2 / 9, -2 / 9), (-2 / 9, 2 / 9, -2 / 9), (1 / 90, 1 / 45, 2 / 45),
         (1 / 90, -1 / 45, 2 / 45), (32 / 45, 16 / 45, 8 / 45), (32 / 45, -16 / 45, 8 / 45), (0, 0, 1)),
        ((1, 1, 1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 1 / 2, -1 / 2, 0), (0, 1, 1, 4, 4, 1 / 4, 1 / 4, 0),
         (0, 1, -1, 8, -8, 1 / 8, -1 / 8, 0), (0, 1, 1, 16, 16, 1 / 16, 1 / 16, 0),
         (0, 1, -1, 32, -32, 1 / 32, -1 / 32, 1))),
}


def winograd_weights(weight, tile):
    """(O, I, 3, 3) kernels -> ((m + 2)^2, I, O) transformed kernels G g G^T, product index (m + 2) a + b, as one
    product by G (x) G in the kernels' dtype: 8 ms for 256 x 256 float32 kernels (18 ms in float64, 20 kernel by
    kernel), within 1.2e-7 of the float64 transform relative to the largest value, 100 times below the rounding of
    the products themselves."""
    g = torch.tensor(TRANSFORMS[tile][1], dtype=torch.float64, device=weight.device)  # (m + 2, 3)
    O, I = weight.shape[:2]
    taps = weight.detach().permute(2, 3, 1, 0).reshape(9, I * O)  # (9, I O), tap 3k + l
    return (torch.kron(g, g).to(weight.dtype) @ taps).view(-1, I, O)  # ((m + 2)^2, I, O)


class WinogradConv2d(nn.Module):
    """``conv`` (3x3, stride 1, padding 1) by F(m x m, 3x3) on channels-last maps of at least ``MIN_PIXELS`` an
    image; any other input goes to ``conv`` itself. The tile side m is ``tile``, or by default 6 on maps of
    ``LARGE_PIXELS`` or more and 4 below (measured: 32x32 maps of 128 or 256 channels 7.3 and 12.1 ms with F(4x4),
    8.0 and 12.4 with F(6x6), whose 6x6 tiles overhang a 32x32 map by 12%). Inference only: the kernels are
    transformed at the first input that needs them (most deep, wide convolutions only ever see small maps).
    """

    MIN_PIXELS = 32 * 32  # a 256-channel 32x32 map measured 1.75x faster than the direct kernel; smaller maps are
    # left to oneDNN, whose kernels there are limited by reading the weights, not by multiply-adds
    LARGE_PIXELS = 64 * 64
    CHUNK_TILES = 256  # tiles transformed and multiplied at a time (about a 64x64 image; larger ones in chunks
    # of rows: measured fastest at 64x64 and 96x96, where whole 96x96 images were 2x slower)

    def __init__(self, conv, tile=None):
        super().__init__()
        if not self.supports(conv):
            raise ValueError(f"Winograd F(m x m, 3x3) needs a 3x3, stride-1, padding-1 convolution, got {conv}")
        if tile is not None and tile not in TRANSFORMS:
            raise ValueError(f"no Winograd transforms for {tile}x{tile} tiles: use one of {sorted(TRANSFORMS)}")
        self.conv, self.tile = conv, tile
        self.weights = {}  # tile side -> ((m + 2)^2, I, O) transformed kernels, the bias (O,), B^T and A^T

    @staticmethod
    def supports(conv):
        return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
                and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
                and conv.padding_mode == "zeros")

    def accepts(self, x):
        """Whether ``x`` (B, C, H, W) is convolved by Winograd: channels-last, large enough."""
        return x.dim() == 4 and x.stride(1) == 1 and x.shape[1] > 1 and x.shape[2] * x.shape[3] >= self.MIN_PIXELS

    def tile_for(self, height, width):
        if self.tile is not None:
            return self.tile
        return 6 if height * width >= self.LARGE_PIXELS else 4

    def transformed_weights(self, tile):
        """(transformed kernels, bias, B^T, A^T) for ``tile``, made at its first use."""
        if tile not in self.weights:
            weight, bias = self.conv.weight, self.conv.bias
            bt, _, at = (torch.tensor(t, dtype=weight.dtype, device=weight.device) for t in TRANSFORMS[tile])
            self.weights[tile] = (winograd_weights(weight, tile), bias.detach() if bias is not None
                                  else weight.new_zeros(self.conv.out_channels), bt, at)
        return self.weights[tile]

    def forward(self, x, scale=None, shift=None, relu=False):
        """``conv(a(x))`` for x (B, C, H, W), where a(x) is ``x * scale + shift`` per channel (an eval-mode batch
        norm) when given, then a ReLU when ``relu``: applied while the input is copied into its padded buffer,
        not as passes of their own."""
        if not self.accepts(x):
            if scale is not None:
                x = torch.addcmul(shift.view(-1, 1, 1), x, scale.view(-1, 1, 1))
            return self.conv(F.relu(x) if relu else x)
        with torch.autocast(x.device.type, enabled=False):  # in the weights' dtype whatever the autocast around
            return self._convolve(x, scale, shift, relu)

    def _convolve(self, x, scale, shift, relu):
        B, C, H, W = x.shape
        m = self.tile_for(H, W)
        h, w = -(-H // m), -(-W // m)  # tiles; a ragged edge is padded with zeros and its outputs cropped
        weights = self.transformed_weights(m)
        dtype = weights[0].dtype
        # NHWC in the weights' dtype, zero borders: F.pad would fill it all first
        padded = x.new_empty(B, m * h + 2, m * w + 2, C, dtype=dtype)
        inside, x = padded[:, 1:H + 1, 1:W + 1], x.permute(0, 2, 3, 1)  # (B, H, W, C) views
        if scale is not None:
            torch.addcmul(shift, x, scale, out=inside)
            if relu:
                inside.clamp_(min=0)
        elif relu:
            torch.clamp(x, min=0, out=inside)
        else:
            inside.copy_(x)
        for border in (padded[:, :1], padded[:, H + 1:], padded[:, :, :1], padded[:, :, W + 1:]):
            border.zero_()
        out = padded.new_empty(B, h, m, w, m, self.conv.out_channels)  # tile rows and columns
        if h * w <= self.CHUNK_TILES:  # whole images a chunk
            images = self.CHUNK_TILES // (h * w)
            for b in range(0, B, images):
                self._tiles(padded[b:b + images], *weights, out[b:b + images])
        else:  # rows of one image a chunk, chunks of even size
            rows = -(-h // -(-h * w // self.CHUNK_TILES))
            for b in range(B):
                for i in range(0, h, rows):
                    self._tiles(padded[b:b + 1, m * i:m * (i + rows) + 2], *weights, out[b:b + 1, i:i + rows])
        # (B, O, H, W), channels-last; a ragged edge cropped by a view, which the next layer reads where it lies
        # (a copy cost 1.3 ms of 46 at 64x64 in 6x6 tiles, batch 4)
        return out.view(B, m * h, m * w, -1)[:, :H, :W].permute(0, 3, 1, 2)

    @staticmethod
    def _tiles(patch, u, bias, bt, at, out):
        """Convolve ``patch`` (n, m r + 2, m w + 2, C) into ``out`` (n, r, m, w, m, O)."""
        n, r, m, w, _, O = out.shape
        a = m + 2  # the patches' side
        C, T = patch.shape[-1], n * r * w
        d = patch.new_empty(a, a, n, r, w, C)  # the tiles' patches, gathered
        d.copy_(patch.unfold(1, a, m).unfold(2, a, m).permute(4, 5, 0, 1, 2, 3))
        v = torch.matmul(bt, torch.matmul(bt, d.view(a, -1)).view(a, a, -1))  # (a, a, T C): B^T d B
        products = torch.bmm(v.view(a * a, T, C), u)  # (a a, T, O), summed over input channels
        y = torch.matmul(at, torch.matmul(at, products.view(a, -1)).view(m, a, -1))  # (m, m, T O): A^T M A
        torch.add(y.view(m, m, n, r, w, O).permute(2, 3, 0, 4, 1, 5), bias, out=out)
