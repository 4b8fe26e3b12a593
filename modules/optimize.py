"""Faster forms of the networks that compute the same numbers (float rounding aside).

- :func:`optimize_for_inference`: an eval-mode copy with every batch norm that follows a convolution folded into
  it, nearest up-sampling + 3x3 convolution as one stride-2 transposed convolution, channels-last weights and,
  on CPUs, Winograd 3x3 convolutions.
- :func:`optimize_for_training`: the transposed up-sampling and channels-last weights, in place (batch norms
  keep their batch statistics, so they stay).

Neither renames a parameter: ``state_dict()`` of a module optimised for training still loads into a plain one.
Channels-last (NHWC) lets oneDNN convolve CPU tensors without reordering them on every call, and suits tensor
cores under mixed precision; for float32 on CUDA it is left to the caller. ``tests/test_optimize.py`` checks the
optimised forms against the plain ones.
"""
import copy

import torch
from torch import nn

from modules.generator import Generator
from modules.util import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d
from modules.winograd import WinogradConv2d


def wants_channels_last(device, precision="fp32"):
    """Channels-last where it was measured to help: on CPUs, and on GPUs under bf16/fp16 autocast."""
    return torch.device(device).type == "cpu" or precision != "fp32"


def wants_winograd(device, precision="fp32"):
    """Winograd convolutions where they were measured to help: float32 on CPUs."""
    return torch.device(device).type == "cpu" and precision == "fp32"


def use_fast_paths(module, enabled=True):
    """Switch the blocks of ``module`` to (or back from) their faster forms, in place; returns ``module``.

    Up-blocks take the transposed form (``UpBlock2d.transposed``), blocks write their ReLU and residual sum over
    their own intermediates (``inplace``: autograd needs none of them), and the generator blends warped features
    with one ``torch.lerp`` (``Generator.fused_blend``).
    """
    for block in module.modules():
        if isinstance(block, UpBlock2d):
            block.transposed = enabled and block.can_transpose()
        if isinstance(block, (DownBlock2d, UpBlock2d, SameBlock2d, ResBlock2d)):
            block.inplace = enabled
        if isinstance(block, Generator):
            block.fused_blend = enabled
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
    scale = norm.weight.double() * torch.rsqrt(norm.running_var.double() + norm.eps)  # (O,)
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


def optimize_for_inference(module, channels_last=True, winograd=False):
    """An eval-mode copy of ``module``, batch norms folded, up-sampling transposed, optionally channels-last and
    with its 3x3 convolutions of 64 input channels or more by Winograd's F(2x2, 3x3) (``modules/winograd.py``:
    for CPUs; cuDNN picks its own algorithms).

    Feed it channels-last inputs when ``channels_last`` (``x.contiguous(memory_format=torch.channels_last)``).
    """
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    module = use_fast_paths(fold_batch_norms(_shallow_copy(module).eval(), memory_format))
    if winograd:
        use_winograd(module)
    return module.to(memory_format=memory_format) if channels_last else module


def use_winograd(module, min_channels=64):
    """Replace, in place, each 3x3 stride-1 convolution of a residual, down or same block with ``min_channels``
    inputs or more by a :class:`WinogradConv2d` over it (fewer inputs leave the products too small to gain; up
    blocks have their transposed form); returns ``module``."""
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
