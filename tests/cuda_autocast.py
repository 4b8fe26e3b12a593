"""CUDA's autocast, emulated on the CPU: which operations run in half precision on a GPU, so that the GPU path's
choices (region geometry in float32, predictions promoted back) are tested on machines without one.

The operation lists are those of torch's ``ATen/autocast_mode.h`` for CUDA (both the composite names that
inference mode dispatches and the decomposed ones that autograd does). An operation of the lower-precision list has
its floating inputs rounded to the half type, is computed in float32 (as cuDNN and cuBLAS accumulate) and its
output rounded to the half type; the float32 list computes in float32; the promote list in the widest input type.
What it cannot emulate is how a GPU's own kernels compute (their algorithms, reduced-precision reductions): those
are measured by ``tools/benchmark.py --device cuda --parts precision``.
"""
import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode

LOWER = {"conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d", "conv_transpose2d",
         "conv_transpose3d", "prelu", "_prelu_kernel", "addmm", "addmv", "addr", "matmul", "einsum", "mm", "mv",
         "linear", "addbmm", "baddbmm", "bmm", "linalg_vecdot", "chain_matmul", "linalg_multi_dot"}
FLOAT32 = {"acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt",
           "sinh", "tan", "pow", "softplus", "layer_norm", "native_layer_norm", "group_norm", "native_group_norm",
           "logsumexp", "upsample_nearest2d", "_upsample_nearest_exact2d", "upsample_bilinear2d",
           "_upsample_bilinear2d_aa", "upsample_bicubic2d", "prod", "softmax", "_softmax", "log_softmax",
           "_log_softmax", "cumprod", "cumsum", "linalg_vector_norm", "sum", "cdist", "dist"}
PROMOTE = {"addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "grid_sampler", "grid_sampler_2d", "index_put",
           "tensordot", "scatter_add"}
HALF = (torch.float16, torch.bfloat16)


def _map(value, fn):
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_map(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    return value


class CudaAutocast(TorchDispatchMode):
    """Within it (and while ``enabled``), CUDA's autocast to ``dtype`` as above, on any device."""

    def __init__(self, dtype):
        super().__init__()
        self.dtype, self.enabled = dtype, True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._overloadpacket.__name__
        if not self.enabled:
            return func(*args, **kwargs)
        if name in LOWER:
            def rounded(t):  # the half type's value, held in float32
                return t.to(self.dtype).float() if t.is_floating_point() and t.dtype == torch.float32 or \
                    t.dtype in HALF else t
            return _map(func(*_map(args, rounded), **_map(kwargs, rounded)), lambda t: t.to(self.dtype))
        if name in FLOAT32 or name in PROMOTE:  # promote: the widest input is float32 wherever one input is
            widen = any(isinstance(a, torch.Tensor) and a.dtype == torch.float32 for a in args) or name in FLOAT32
            if widen:
                return func(*_map(args, lambda t: t.float() if t.dtype in HALF else t),
                            **_map(kwargs, lambda t: t.float() if t.dtype in HALF else t))
        return func(*args, **kwargs)

    @contextlib.contextmanager
    def off(self, *_):
        """What ``torch.autocast(..., enabled=False)`` is to autocast: ``modules.util.float32_geometry``'s stand-in."""
        saved, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = saved
