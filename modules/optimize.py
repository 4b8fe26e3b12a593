"""Faster forms of the networks that compute the same numbers (float rounding aside).

- :func:`optimize_for_inference`: an eval-mode copy with every batch norm that follows a convolution folded into
  it, nearest up-sampling + 3x3 convolution as one stride-2 transposed convolution, the flow predictor's two heads
  as one convolution, channels-last weights and, on CPUs, the final RGB convolution by groups of rows
  (:class:`NarrowConv2d`), Winograd 3x3 convolutions computing in float32 whatever the precision (which apply a
  residual block's pre-activation norm and ReLUs as they copy their inputs: bit-identical, 1.5% of a frame) and
  warps that keep channels-last maps channels-last (:func:`gather_warp`).
- :func:`compiled`: ``torch.compile`` in the modes the scripts offer (``--compile``), for inference and training.
- :func:`optimize_for_training`: the transposed up-sampling, in-place activations, the fused blend and
  channels-last weights, in place (batch norms keep their batch statistics, so they stay).

The networks in ``modules/`` are written as the method and nothing else; the fast forms here are subclasses of
their blocks (``FAST_FORMS``) swapped in by class.

Neither renames a parameter: ``state_dict()`` of a module optimised for training still loads into a plain one,
and an optimiser made before :func:`optimize_for_training` still holds its parameters.
Channels-last (NHWC) lets oneDNN convolve CPU tensors without reordering them on every call, and suits tensor
cores under mixed precision; for float32 on CUDA it is left to the caller. ``tests/test_optimize.py`` checks the
optimised forms against the plain ones.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from modules.generator import Generator, resize_flow
from modules.pixelwise_flow_predictor import PixelwiseFlowPredictor
from modules.util import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d
from modules.winograd import WinogradConv2d


def wants_channels_last(device, precision="fp32"):
    """Channels-last where it was measured to help: on CPUs, and on GPUs under bf16/fp16 autocast."""
    return torch.device(device).type == "cpu" or precision != "fp32"


def wants_winograd(device, precision="fp32"):
    """Winograd convolutions where they were measured to help: on CPUs, computing in float32 whatever the
    precision (under bf16 as fast as bf16's direct kernels, and closer to float32; ``modules/winograd.py``)."""
    return torch.device(device).type == "cpu"


def wants_narrow_convolutions(device):
    """:class:`NarrowConv2d` where it was measured to help: on CPUs, in float32 (a 7x7 convolution to RGB of 4
    256x256 maps in 49 ms against 118) and bf16 (39 against 65)."""
    return torch.device(device).type == "cpu"


def is_channels_last(x):
    """Whether a 4-D tensor (or a batch-expanded view of one) is laid out (B, H, W, C) in memory, C > 1."""
    return x.dim() == 4 and x.stride(1) < x.stride(3)


class _ChannelsLastGradient(torch.autograd.Function):
    """The identity, whose backward hands its gradient on in channels-last layout."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=torch.channels_last)


def warp_keeping_layout(image, grid):
    """:func:`modules.util.warp` whose result, and in training the image's gradient, keep the image's memory
    format: grid_sample returns plain contiguous tensors both ways, which would make every channels-last
    convolution or pooling next to it copy (the pooling backward of the generator's first down block took 0.4 s
    of a vox256 training step so)."""
    if not is_channels_last(image):
        return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if image.requires_grad and torch.is_grad_enabled():
        image = _ChannelsLastGradient.apply(image)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B, C, h, w)
    return out.contiguous(memory_format=torch.channels_last)


def gather_warp(image, grid):
    """:func:`modules.util.warp` of a channels-last float32 (or bf16) ``image`` (B, C, H, W), computed as a weighted
    sum of the four neighbouring pixels' channel vectors (``F.embedding_bag`` over the image's rows of C values),
    so its result comes out channels-last (B, C, h, w) like the decoder's maps. For inference.

    The numbers of ``grid_sample`` (bilinear, zeros outside, align_corners=False; the corner weights by the same
    formulas) up to the order of the four terms' sum (tests/test_optimize.py). Measured on 2 threads, 4 frames: a
    64-channel 256x256 map warped in 34 ms against 45, a 256-channel 64x64 one in 1.9 against 7.6; and the blend
    that reads it then runs on one memory layout.
    """
    B, C, H, W = image.shape
    _, h, w, _ = grid.shape
    ix = ((grid[..., 0] + 1) * W - 1) / 2  # (B, h, w), pixel coordinates
    iy = ((grid[..., 1] + 1) * H - 1) / 2
    x0, y0 = ix.floor(), iy.floor()
    x1, y1 = x0 + 1, y0 + 1
    weights = torch.stack([(x1 - ix) * (y1 - iy), (ix - x0) * (y1 - iy),
                           (x1 - ix) * (iy - y0), (ix - x0) * (iy - y0)], dim=-1)  # (B, h, w, 4): nw, ne, sw, se
    xs, ys = torch.stack([x0, x1, x0, x1], dim=-1), torch.stack([y0, y0, y1, y1], dim=-1)  # (B, h, w, 4)
    inside = (xs >= 0) & (xs <= W - 1) & (ys >= 0) & (ys <= H - 1)  # False for NaN too
    weights = torch.where(inside, weights, 0)
    index = torch.where(inside, ys.long() * W + xs.long(), 0)  # (B, h, w, 4), rows of one image (exact integers)
    if image.stride(0) == 0:  # one image expanded over the batch (the source's features): one table
        rows = image[:1].permute(0, 2, 3, 1).reshape(H * W, C)
    else:
        rows = image.permute(0, 2, 3, 1).reshape(B * H * W, C)
        index += (torch.arange(B, device=index.device) * (H * W)).view(B, 1, 1, 1)
    weights = weights.to(image.dtype).view(-1, 4)  # the corner weights are computed in float32 from a float32 grid
    out = F.embedding_bag(index.view(-1, 4), rows, per_sample_weights=weights, mode="sum")  # (N, C)
    return out.view(B, h, w, C).permute(0, 3, 1, 2)  # (B, C, h, w), channels-last


def can_gather_warp(image):
    """Whether :func:`gather_warp` applies: inference, a float32 or bfloat16 (its sums measured within bf16's own
    rounding of float32's, twice as fast) channels-last image of more than one channel."""
    return (not (image.requires_grad and torch.is_grad_enabled()) and image.dtype in (torch.float32, torch.bfloat16)
            and image.shape[1] > 1 and is_channels_last(image) and image.stride(1) == 1)


# Input maps from this many pixels on take the transposed form: measured faster on CPUs from 8x8 on (a 1024- to
# 256-channel one: 4.8 ms against 6.5 at batch 1, 14 against 23 at batch 4, 2 threads); on smaller maps the
# transposed kernel's re-layout of its weights on every call costs more than the multiply-adds it saves (with the
# kernel kept for inference, a 2048- to 512-channel 4x4 map took 24.8 ms against 26.8: not worth a second bound).
TRANSPOSED_MIN_PIXELS = 64


def _tracing():
    """Whether a graph is being captured (ONNX export, torch.export, torch.compile, TorchScript tracing)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _sum_taps(weight, dim):
    """Along ``dim``, 3 taps (w0, w1, w2) -> the 4 taps (w2, w1 + w2, w0 + w1, w0) of the transposed kernel."""
    w0, w1, w2 = weight.unbind(dim)
    return torch.stack([w2, w1 + w2, w0 + w1, w0], dim)


def nearest_upsampling_kernel(weight):
    """The transposed-convolution kernel that equals nearest x2 up-sampling followed by ``weight``.

    ``conv2d(upsample2(x), weight, padding=1) == conv_transpose2d(x, kernel, stride=2, padding=1)``: an even
    output row of the up-sampled map sees input rows (i - 1, i) with taps (w0, w1 + w2), an odd one rows (i, i + 1)
    with taps (w0 + w1, w2); the same along columns. The transposed form does 16 multiply-adds per input pixel
    and channel pair instead of 4 x 9.

    Args:
        weight: (O, I, 3, 3)
    Returns:
        (I, O, 4, 4), in the memory format of ``weight``.
    """
    kernel = _sum_taps(_sum_taps(weight, 2), 3).transpose(0, 1)  # (I, O, 4, 4)
    return kernel.contiguous(memory_format=torch.channels_last if is_channels_last(weight)
                             else torch.contiguous_format)


class FastResBlock2d(ResBlock2d):
    """:class:`ResBlock2d` with its ReLUs and residual sum written over its own intermediates (autograd needs
    none of them): the same numbers, fewer allocations."""

    def forward(self, x):
        if self.folds_into_winograd(x):  # the pre-activations applied as the convolutions copy their inputs
            scale, shift = batch_norm_factors(self.norm1)
            return self.conv2(self.conv1(x, scale, shift, relu=True), relu=True).add_(x)
        out = self.conv1(F.relu(self.norm1(x), inplace=True))
        out = self.conv2(F.relu(self.norm2(out), inplace=True))
        return out.add_(x)

    def folds_into_winograd(self, x):
        return (isinstance(self.conv1, WinogradConv2d) and isinstance(self.conv2, WinogradConv2d)
                and isinstance(self.norm1, nn.BatchNorm2d) and not self.norm1.training
                and isinstance(self.norm2, nn.Identity) and self.conv1.accepts(x))


def batch_norm_factors(norm, dtype=None):
    """(scale, shift) (C,) with ``norm(x) == x * scale + shift`` per channel, for an eval-mode batch norm;
    computed in ``dtype`` (default: the norm's)."""
    weight, bias, mean, var = (t.to(dtype) for t in (norm.weight, norm.bias, norm.running_mean, norm.running_var))
    scale = weight * torch.rsqrt(var + norm.eps)
    return scale, bias - mean * scale


class FastUpBlock2d(UpBlock2d):
    """:class:`UpBlock2d` whose up-sampling and 3x3 convolution run as one stride-2 transposed convolution on
    maps of ``TRANSPOSED_MIN_PIXELS`` or more: the same numbers up to float rounding, 2.25x fewer multiply-adds."""

    keeps_kernel = False  # set for inference (frozen weights) by optimize_for_inference

    def can_transpose(self):
        return self.conv.kernel_size == (3, 3) and self.conv.padding == (1, 1) and self.conv.groups == 1

    def transposed_kernel(self):
        """The (I, O, 4, 4) kernel; with ``keeps_kernel``, made at the first call and kept: 13.6 ms instead of
        24.6 for the flow predictor's 1024- to 256-channel 8x8 block at batch 4, 2 threads, where making it took
        12.9 (made again if the weights move to another device or dtype)."""
        weight = self.conv.weight
        kept = self.__dict__.get("kept_kernel")
        if kept is not None and (kept.device, kept.dtype) == (weight.device, weight.dtype):
            return kept
        kernel = nearest_upsampling_kernel(weight)
        if self.keeps_kernel and not _tracing():  # a traced graph computes it from its constant weights
            self.__dict__["kept_kernel"] = kernel.detach()
        return kernel

    def forward(self, x):
        if not (self.can_transpose() and x.shape[-2] * x.shape[-1] >= TRANSPOSED_MIN_PIXELS):
            out = self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))  # (B, O, 2h, 2w)
        else:
            out = F.conv_transpose2d(x, self.transposed_kernel(), self.conv.bias, stride=2,
                                     padding=1)  # (B, O, 2h, 2w)
        return F.relu(self.norm(out), inplace=True)


class FastDownBlock2d(DownBlock2d):
    """:class:`DownBlock2d` with an in-place ReLU."""

    def forward(self, x):
        return self.pool(F.relu(self.norm(self.conv(x)), inplace=True))


class FastSameBlock2d(SameBlock2d):
    """:class:`SameBlock2d` with an in-place ReLU."""

    def forward(self, x):
        return F.relu(self.norm(self.conv(x)), inplace=True)


class FastPixelwiseFlowPredictor(PixelwiseFlowPredictor):
    """:class:`PixelwiseFlowPredictor` whose warps keep a channels-last source channels-last, and whose two
    heads, when :func:`merge_heads` has joined them, run as one convolution."""

    def heads(self, prediction):
        merged = getattr(self, "merged_heads", None)
        if merged is None:
            return super().heads(prediction)
        logits = merged(prediction)  # (B, K + 2, h, w): the mask's channels, then the occlusion's
        return logits[:, :-1], logits[:, -1:]

    @staticmethod
    def create_deformed_source_image(source_image, sparse_motions):
        B, C, h, w = source_image.shape
        M = sparse_motions.shape[1]
        source_repeat = source_image.unsqueeze(1).expand(B, M, C, h, w).reshape(B * M, C, h, w)
        deformed = warp_keeping_layout(source_repeat, sparse_motions.reshape(B * M, h, w, 2))  # (B * M, C, h, w)
        return deformed.view(B, M, C, h, w)


class FastGenerator(Generator):
    """:class:`Generator` whose warped maps come out in the decoder's layout, and whose blend is one
    ``torch.lerp``, ``previous + occ (skip - previous)``: one pass over the maps instead of four.

    In float32 and bf16 inference the channels-last source features are warped by :func:`gather_warp`, whose
    result is channels-last; other inputs stay as grid_sample writes them (contiguous), and the blend, which reads
    them once anyway, writes channels-last: a 256x256 map of 64 channels is not copied to be re-laid out first.
    Training keeps the re-layout (and its gradient's), ``warp_keeping_layout``.
    """

    @staticmethod
    def deform_input(inp, optical_flow):
        flow = resize_flow(optical_flow, inp.shape[2:])  # (B, H, W, 2)
        if torch.is_grad_enabled():
            return warp_keeping_layout(inp, flow)  # (B, C, H, W)
        if can_gather_warp(inp):
            return gather_warp(inp, flow)  # (B, C, H, W), channels-last
        return F.grid_sample(inp, flow, mode="bilinear", padding_mode="zeros", align_corners=False)

    def apply_optical(self, input_previous=None, input_skip=None, motion_params=None, warped_skip=None):
        out = super().apply_optical(input_previous, input_skip, motion_params, warped_skip)  # (B, C, H, W)
        if input_skip is not None and is_channels_last(input_skip) and not is_channels_last(out):
            out = out.contiguous(memory_format=torch.channels_last)  # no previous map to blend with
        return out

    @staticmethod
    def blend(skip, previous, occlusion_map):
        dtype = torch.promote_types(skip.dtype, previous.dtype)  # lerp does not promote (autocast mixes them)
        # The first operand's layout is the output's: channels-last like the decoder's maps.
        return torch.lerp(previous.to(dtype), skip.to(dtype), occlusion_map.to(dtype))


class NarrowConv2d(nn.Module):
    """A KxK convolution (stride 1, padding K // 2) with few output channels, such as the generator's final RGB
    one, as one convolution by groups of rows: the same numbers up to float rounding, fewer multiply-adds.

    oneDNN's CPU kernels compute output channels in blocks of ``CHANNEL_BLOCK`` (16 float32 lanes of AVX-512): 3
    output channels cost as much as 16. So the kernel's K rows are split into G groups of r rows (G r >= K, G O <=
    16; 4 groups of 2 rows for a 7x7 kernel and 3 channels), convolved as one r x K convolution with the groups'
    outputs side by side, and the groups' maps summed, each shifted by its first row:
    ``out(y) = sum_g Q_g(y + g r)``. A 7x7 convolution to 3 channels then does 2/7 of the work of a 16-channel one.
    """

    CHANNEL_BLOCK = 16

    def __init__(self, conv):
        super().__init__()
        if not self.supports(conv):
            raise ValueError(f"NarrowConv2d needs an odd KxK, stride-1 convolution with K // 2 padding and at most "
                             f"{self.CHANNEL_BLOCK // 2} output channels, got {conv}")
        K, O = conv.kernel_size[0], conv.out_channels
        groups = min(K, self.CHANNEL_BLOCK // O)
        self.rows = -(-K // groups)  # r, rows per group
        self.groups = -(-K // self.rows)  # G, with G r - K <= r - 1 zero rows
        self.conv = conv
        weight = conv.weight.detach()
        # (G r, O, I, K): the kernel's rows, zero rows past K; then (G O, I, r, K), group g holding rows g r ...
        rows = torch.cat([weight, weight.new_zeros(O, weight.shape[1], self.groups * self.rows - K, K)], dim=2)
        grouped = rows.view(O, -1, self.groups, self.rows, K).permute(2, 0, 1, 3, 4)
        # A buffer, so that ``.to(device / memory_format)`` moves it with the module; not saved in state dicts.
        self.register_buffer("weight", grouped.reshape(self.groups * O, -1, self.rows, K).contiguous(
            memory_format=torch.channels_last if is_channels_last(weight) else torch.contiguous_format),
            persistent=False)

    @classmethod
    def supports(cls, conv):
        K = conv.kernel_size[0]
        return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (K, K) and K % 2 == 1 and K > 1
                and conv.stride == (1, 1) and conv.padding == (K // 2, K // 2) and conv.dilation == (1, 1)
                and conv.groups == 1 and conv.padding_mode == "zeros" and 2 * conv.out_channels <= cls.CHANNEL_BLOCK)

    def forward(self, x):
        H = x.shape[2]
        K, O, r = self.conv.kernel_size[0], self.conv.out_channels, self.rows
        p, e = K // 2, self.groups * r - K  # e: the zero rows past the kernel's last
        # Padded by e more rows top and bottom (the convolution pads: no padded copy of x), so that every group's
        # rows exist; group g's map starts at row g r + e.
        q = F.conv2d(x, self.weight, padding=(p + e, p))  # (B, G O, H + 2 (p + e) - r + 1, W)
        out = q[:, :O, e:e + H] + (self.conv.bias.view(1, O, 1, 1) if self.conv.bias is not None else 0)
        for g in range(1, self.groups):
            out += q[:, g * O:(g + 1) * O, g * r + e:g * r + e + H]
        return out  # (B, O, H, W)


@torch.no_grad()
def merge_heads(module):
    """Give each flow predictor with an occlusion head one convolution computing both heads (the same input, the
    same 7x7 kernel size): one pass, and one kernel call whose output channels fill a block. In place; returns
    ``module``."""
    for block in module.modules():
        if isinstance(block, FastPixelwiseFlowPredictor) and block.occlusion is not None:
            mask, occlusion = block.mask, block.occlusion
            if (mask.kernel_size, mask.padding, mask.stride) != (occlusion.kernel_size, occlusion.padding,
                                                                 occlusion.stride):
                continue
            merged = nn.Conv2d(mask.in_channels, mask.out_channels + occlusion.out_channels, mask.kernel_size,
                               padding=mask.padding).to(mask.weight.device, mask.weight.dtype)
            merged.weight.copy_(torch.cat([mask.weight, occlusion.weight]))
            merged.bias.copy_(torch.cat([mask.bias, occlusion.bias]))
            merged.requires_grad_(False)
            block.merged_heads = merged
    return module


def use_narrow_convolutions(module):
    """Replace, in place, the generator's final convolution by a :class:`NarrowConv2d` over it where it can;
    returns ``module``."""
    for block in module.modules():
        if isinstance(block, Generator) and NarrowConv2d.supports(block.final):
            block.final = NarrowConv2d(block.final)
    return module


# Each block and network of the method -> its fast twin: a subclass with the same attributes, so swapping the
# class of a module keeps its parameters (the same objects) and its state-dict keys.
FAST_FORMS = {ResBlock2d: FastResBlock2d, UpBlock2d: FastUpBlock2d, DownBlock2d: FastDownBlock2d,
              SameBlock2d: FastSameBlock2d, PixelwiseFlowPredictor: FastPixelwiseFlowPredictor,
              Generator: FastGenerator}
PLAIN_FORMS = {fast: plain for plain, fast in FAST_FORMS.items()}


def use_fast_paths(module, enabled=True):
    """Switch the blocks of ``module`` to (or back from) their fast twins (``FAST_FORMS``), in place; returns
    ``module``."""
    forms = FAST_FORMS if enabled else PLAIN_FORMS
    for block in module.modules():
        if type(block) in forms:
            block.__class__ = forms[type(block)]
    return module


def fold_batch_norms(module, memory_format=torch.contiguous_format):
    """Fold each batch norm that directly follows a convolution into it, in place (eval mode only); the folded
    weights are written in ``memory_format``.

    The pre-activation norm of a residual block acts on the residual stream, not on a convolution's output:
    it stays. Returns ``module``.
    """
    if module.training:
        raise ValueError("batch norms can only be folded in eval mode (training uses the batch statistics)")
    for block in module.modules():
        if isinstance(block, ResBlock2d):
            conv, name = block.conv1, "norm2"
        elif isinstance(block, (DownBlock2d, UpBlock2d, SameBlock2d)):
            conv, name = block.conv, "norm"
        else:
            continue
        norm = getattr(block, name)
        if isinstance(norm, nn.BatchNorm2d):
            _fold(conv, norm, memory_format)
            setattr(block, name, nn.Identity())
    return module


@torch.no_grad()
def _fold(conv, norm, memory_format):
    """Give ``conv`` new weights that compute ``norm(conv(x))`` (per-channel factors in float64); its old
    weight tensors are left untouched, so a :func:`_shallow_copy` never writes into the module it copied."""
    scale, _ = batch_norm_factors(norm, torch.float64)  # (O,)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    dtype = conv.weight.dtype
    weight = torch.empty_like(conv.weight, memory_format=memory_format)  # one pass: no copy to re-layout it
    torch.mul(conv.weight, scale.to(dtype).view(-1, 1, 1, 1), out=weight)
    conv.weight = nn.Parameter(weight, requires_grad=False)
    conv.bias = nn.Parameter(((bias - norm.running_mean.double()) * scale + norm.bias.double()).to(dtype),
                             requires_grad=False)


def _shallow_copy(module):
    """A copy of ``module``'s tree of modules whose parameters and buffers are new tensor objects over the same
    memory: cheap, and safe as long as the copy's tensors are replaced, never written in place."""
    memo = {id(p): nn.Parameter(p.detach(), requires_grad=False) for p in module.parameters()}
    memo.update({id(b): b.detach() for b in module.buffers()})
    return copy.deepcopy(module, memo)


def optimize_for_inference(module, channels_last=True, winograd=False, narrow=False):
    """An eval-mode copy of ``module``, batch norms folded, up-sampling transposed (its kernels made once),
    heads merged, optionally channels-last and, for CPUs (cuDNN picks its own algorithms), with ``winograd`` its
    3x3 convolutions of 64 input channels or more by Winograd's F(m x m, 3x3) (``modules/winograd.py``), with
    ``narrow`` its final convolution as a :class:`NarrowConv2d`.

    Feed it channels-last inputs when ``channels_last`` (``x.contiguous(memory_format=torch.channels_last)``).
    """
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    module = merge_heads(use_fast_paths(fold_batch_norms(_shallow_copy(module).eval(), memory_format)))
    for block in module.modules():
        if isinstance(block, FastUpBlock2d):
            block.keeps_kernel = True
    if winograd:
        use_winograd(module)
    if narrow:
        use_narrow_convolutions(module)
    return module.to(memory_format=memory_format) if channels_last else module


def use_winograd(module, min_channels=64):
    """Replace, in place, each 3x3 stride-1 convolution of a residual, down or same block with ``min_channels``
    inputs or more by a :class:`WinogradConv2d` over it (fewer inputs leave the products too small to gain; up
    blocks have their transposed form, which at 2 threads was as fast as Winograd on the up-sampled map's
    phases); returns ``module``."""
    for block in list(module.modules()):
        if isinstance(block, (ResBlock2d, DownBlock2d, SameBlock2d)):
            for name, conv in list(block.named_children()):
                if WinogradConv2d.supports(conv) and conv.in_channels >= min_channels:
                    setattr(block, name, WinogradConv2d(conv))
    return module


# Convolutions with more weights than this run on maps of 8x8 or less in the published models, where PyTorch
# convolves by im2col and a matrix product on contiguous weights: in training, channels-last copies of them would
# be made back for every forward and backward pass.
LARGE_WEIGHTS = 1 << 21


def optimize_for_training(module, channels_last=True):
    """The fast paths and, optionally, channels-last weights (bar the ``LARGE_WEIGHTS`` ones), in place; returns
    ``module``. Parameters stay the same objects, so an optimizer made before still holds them."""
    use_fast_paths(module)
    if channels_last:
        for param in module.parameters():
            if param.dim() == 4 and param.numel() <= LARGE_WEIGHTS:
                param.data = param.data.contiguous(memory_format=torch.channels_last)
    return module


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def compiled(function, how):
    """``torch.compile(function)``: ``how`` True (inductor's default), one of ``COMPILE_MODES``, or a backend name
    (``"aot_eager"`` in the tests: the same tracing and autograd, no code generation)."""
    if how is True:
        return torch.compile(function)
    if how in COMPILE_MODES:
        return torch.compile(function, mode=how)
    return torch.compile(function, backend=how)
