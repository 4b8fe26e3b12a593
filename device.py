"""The one place that picks the device, and sets up its backends."""
import ctypes
import ctypes.util

import torch


def pick_device(spec="auto"):
    """``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N`` -> ``torch.device``.

    Raises ValueError with a message a user can act on when CUDA is asked for and not there.
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} was asked for but CUDA is not available here: use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r} was asked for but only {torch.cuda.device_count()} GPU(s) are visible")
    elif device.type != "cpu":
        raise ValueError(f"unsupported device {spec!r}: use auto, cpu, cuda or cuda:N")
    return device


def configure(device):
    """Backend settings for ``device``, returned unchanged: on CUDA, cuDNN benchmark mode (each convolution's
    fastest algorithm is measured once per input shape, and the shapes of a run repeat); on the CPU, an allocator
    that keeps freed memory (:func:`keep_freed_memory`)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    elif device.type == "cpu":
        keep_freed_memory()
    return device


def has_native_bf16():
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX, as oneDNN reports), not by emulation."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def native_precisions(device):
    """The reduced precisions ``device`` computes natively, fastest first: on CUDA fp16, and bf16 where the GPU has
    it (from Ampere on); on a CPU bf16 with AVX-512 BF16 or AMX, fp16 with AMX-FP16. Elsewhere both are emulated,
    more slowly than float32."""
    device = torch.device(device)
    if device.type == "cuda":
        return ["fp16", "bf16"] if torch.cuda.is_bf16_supported() else ["fp16"]
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return []
    fp16 = torch.ops.mkldnn._is_mkldnn_fp16_supported()
    return ["bf16"] * has_native_bf16() + ["fp16"] * bool(fp16)


# mallopt parameters of glibc's malloc.h
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory():
    """Ask glibc's malloc to serve large blocks from its heap and to keep what is freed; returns whether it could.

    By default glibc maps every block over 32 MB afresh and hands the top of its heap back to the system, so the
    large activations of each frame are page-faulted in, zero-filled, again and again: that cost 10-15% of a
    256x256 frame on a 2-core CPU (tools/benchmark.py). The same blocks are reused instead; the peak resident
    memory is that of the largest frame, as before. Does nothing where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mapped = mallopt(_M_MMAP_THRESHOLD, 1 << 30) or mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # older glibc: 32 MB max
    return bool(mapped) and bool(mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))
