"""Which fast forms the generator's optimised copy uses, decided by timing them on the machine at hand.

``modules.optimize.optimize_for_inference`` has three switches, each a different way to compute the same numbers
(float rounding aside):

- ``channels_last``: weights and maps laid out (B, H, W, C), which oneDNN convolves without reordering them;
- ``winograd``: the 3x3 convolutions of residual, down and same blocks by Winograd's F(m x m, 3x3), which compute
  in float32 whatever the precision (``modules/winograd.py``);
- ``narrow``: the final 7x7 convolution to RGB by groups of rows (``modules.optimize.NarrowConv2d``).

Which is faster depends on the machine, not on the device's type: on a 2-core AMD EPYC without AMX, Winograd in
float32 was as fast as oneDNN's direct bf16 kernels; on an Intel Xeon with AMX the direct bf16 convolutions run 8.8
times faster than float32, so there Winograd throws bf16's speed away. So :func:`choose` times each candidate at
the model's own layer shapes (every convolution the switch changes, each distinct one timed once and counted as
often as the generator has it, at the frame size animated, at the batch animated on GPUs and batch 1 on CPUs, under
the precision's autocast), the candidates interleaved and the best of ``REPEATS`` runs kept, and takes the faster.

A choice is made once per machine and model shape: it is cached in ``$MRAA_CACHE_DIR/kernels.json`` (by default
``~/.cache/mraa/kernels.json``) under a key of the CPU's model and instruction-set flags (or the GPU's name), the
torch version, the threads, the precision, the batch timed, the frame size and the generator's convolutions. For
vox256 at 256x256 on a 2-core AMD EPYC (AVX2, 2 threads), measuring took 4.5 s. ``MRAA_KERNELS=defaults`` skips
measuring and takes the device-type rules of ``modules.optimize`` (``wants_*``), as the tests do so that every run
computes alike; ``tools/benchmark.py`` prints the choice, its timings and why.

Training has one switch, the layout (:func:`choose_training_layout`): every convolution of the first stage's model
(its networks and VGG-19 at each pyramid scale) timed forward and backward in each layout, at the batch trained on
GPUs and batch 1 on CPUs, cached the same way.
"""
import contextlib
import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from modules.optimize import NarrowConv2d, wants_channels_last, wants_narrow_convolutions, wants_winograd
from modules.util import DownBlock2d, ResBlock2d, SameBlock2d
from modules.winograd import WinogradConv2d

REPEATS = 2  # timed runs of each candidate, interleaved after a warm-up run; the best is kept
POLICIES = ("measure", "defaults")
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CACHE_FORMAT = 1


@dataclass(frozen=True)
class KernelChoice:
    """The three switches of ``optimize_for_inference``, how they were decided ('measured', 'cached' or
    'defaults') and, when measured, the seconds each candidate took per decision."""
    channels_last: bool
    winograd: bool
    narrow: bool
    source: str = "defaults"
    timings: dict = field(default_factory=dict, compare=False)

    def options(self):
        """Keyword arguments of ``optimize_for_inference``."""
        return {"channels_last": self.channels_last, "winograd": self.winograd, "narrow": self.narrow}

    def why(self):
        """One line a person reads: each switch, and the timings that decided it."""
        parts = []
        for name in ("channels_last", "winograd", "narrow"):
            times = self.timings.get(name)
            said = f"{name}={'on' if getattr(self, name) else 'off'}"
            if times:
                said += " (" + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in times.items()) + ")"
            parts.append(said)
        return f"{self.source}: " + "; ".join(parts)


def default_choice(device, precision="fp32"):
    """The device-type rules of ``modules.optimize``, measured once on a 2-core AMD EPYC."""
    return KernelChoice(wants_channels_last(device, precision), wants_winograd(device, precision),
                        wants_narrow_convolutions(device))


def policy():
    """``MRAA_KERNELS``: 'measure' (the default) or 'defaults'; anything else is a ValueError naming both."""
    value = os.environ.get("MRAA_KERNELS", "measure")
    if value not in POLICIES:
        raise ValueError(f"MRAA_KERNELS={value!r}: use one of {', '.join(POLICIES)}")
    return value


def cache_path():
    root = os.environ.get("MRAA_CACHE_DIR") or Path.home() / ".cache" / "mraa"
    return Path(root) / "kernels.json"


def machine_description(device):
    """What makes kernels run at other speeds: the CPU's model and ISA flags, or the GPU; torch; the threads."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return {"gpu": torch.cuda.get_device_name(index), "capability": list(torch.cuda.get_device_capability(index)),
                "torch": torch.__version__}
    name, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    return {"cpu": name, "flags": [f for f in ISA_FLAGS if f in flags], "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def convolution_signature(generator):
    """The generator's convolutions as (in, out, kernel, stride) rows: its shape, without running it."""
    return [[m.in_channels, m.out_channels, *m.kernel_size, *m.stride] for m in generator.modules()
            if isinstance(m, nn.Conv2d)]


def measured_batch(batch_size, device):
    """The batch kernels are timed at: the one animated on GPUs, where small batches leave the device idle and
    can favour other kernels; 1 on CPUs, whose time per frame hardly depends on it (a 2-core AMD EPYC chose alike
    at batches 1, 2 and 4, their times within 6% of proportional), so that one measurement serves every batch."""
    return batch_size if torch.device(device).type == "cuda" else 1


def cache_key(generator, frame_shape, batch_size, device, precision, training=False):
    """(the cache entry's key, what it describes): inference's kernel choice, or, ``training``, training's layout."""
    batch_size = measured_batch(batch_size, device)
    described = {"machine": machine_description(device), "precision": precision, "batch": batch_size,
                 "frame": list(frame_shape), "convolutions": convolution_signature(generator)}
    key = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]
    return (f"training-{key}", {**described, "stage": "training"}) if training else (key, described)


def read_cache(path):
    """The cache's entries, or {} when it is missing or not ours (a damaged cache is measured again)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return data["entries"] if data.get("format") == CACHE_FORMAT and isinstance(data["entries"], dict) else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return {}


def write_cache(path, entries):
    """Write the entries atomically; a cache that cannot be written only means measuring again next time."""
    from media import atomic_file
    with contextlib.suppress(OSError):
        with atomic_file(Path(path)) as temporary:
            Path(temporary).write_text(json.dumps({"format": CACHE_FORMAT, "entries": entries}, indent=1))


def needs_measuring(generator, frame_shape, batch_size, device, precision="fp32", training=False):
    """Whether :func:`choose` (or, ``training``, :func:`choose_training_layout` for that model) will time kernels
    for this (no cached choice, and measuring is on): a caller says so before the wait."""
    if policy() == "defaults":
        return False
    key, _ = cache_key(generator, frame_shape, batch_size, device, precision, training)
    return not isinstance(read_cache(cache_path()).get(key), dict)


def choose(generator, run_once, frame_shape, batch_size, device, precision="fp32"):
    """The :class:`KernelChoice` for ``generator`` (plain, eval mode) at ``frame_shape`` and ``batch_size``.

    ``run_once()`` runs the plain generator once (any batch): on a cache miss it shows which convolutions see which
    maps. With ``MRAA_KERNELS=defaults``, the device-type rules, unmeasured.
    """
    if policy() == "defaults":
        return default_choice(device, precision)
    key, described = cache_key(generator, frame_shape, batch_size, device, precision)
    entries = read_cache(cache_path())
    entry = entries.get(key)
    if isinstance(entry, dict):
        with contextlib.suppress(TypeError, KeyError):
            return KernelChoice(**{**entry["choice"], "source": "cached", "timings": entry.get("timings", {})})
    choice = measure(generator, run_once, measured_batch(batch_size, device), device, precision)
    entries[key] = {"described": described, "choice": choice.options(), "timings": choice.timings,
                    "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_cache(cache_path(), entries)
    return choice


# ----------------------------------------------------------------------------------------------------------
# Measuring


def input_shapes(generator, run_once, gradients=False):
    """{convolution module: the (C, H, W) of its input} in one run of the generator (with autograd on when
    ``gradients``: a training forward takes derivatives of its own)."""
    shapes, hooks = {}, []

    def record(module, args):  # returns None: the inputs go on unchanged
        shapes.setdefault(module, tuple(args[0].shape[1:]))
    for module in generator.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_pre_hook(record))
    try:
        with torch.set_grad_enabled(gradients):
            run_once()
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def autocast(device_type, precision):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=DTYPES[precision])


def best_times(candidates, device, repeats=REPEATS):
    """{name: best seconds of ``repeats`` runs} of callables run interleaved after one warm-up run each."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for run in candidates.values():
        run()
    sync()
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(repeats):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            sync()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def grouped(convolutions, shapes):
    """[(conv, input shape, how many convolutions share its shape)]: each distinct layer shape timed once."""
    groups = {}
    for conv in convolutions:
        if conv in shapes:
            signature = (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         shapes[conv])
            first, count = groups.get(signature, (conv, 0))
            groups[signature] = (first, count + 1)
    return [(conv, signature[-1], count) for signature, (conv, count) in groups.items()]


def time_forms(layers, forms, batch_size, device, precision):
    """{form: seconds} of the layers in each form: each distinct layer timed once per form (interleaved, best of
    ``REPEATS``) and counted as often as the generator has it. ``forms``: {form: (build from a convolution, memory
    format)}. Inputs are random, of the layer's shape, in the precision's dtype (as the layer before hands them on
    under autocast)."""
    totals = dict.fromkeys(forms, 0.0)
    for conv, (C, H, W), count in layers:
        x = torch.randn(batch_size, C, H, W, device=device, dtype=DTYPES[precision])
        runs = {}
        for form, (make, memory_format) in forms.items():
            layer, inputs = make(conv), x.contiguous(memory_format=memory_format)

            def run(layer=layer, inputs=inputs):
                with torch.inference_mode(), autocast(torch.device(device).type, precision):
                    layer(inputs)
            runs[form] = run
        for form, seconds in best_times(runs, device).items():
            totals[form] += count * seconds
    return totals


def copy_of(conv, device, memory_format):
    """A plain convolution with ``conv``'s weights, on ``device``, laid out in ``memory_format``."""
    copy = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     bias=conv.bias is not None).to(device).eval()
    copy.load_state_dict(conv.state_dict())
    return copy.to(memory_format=memory_format).requires_grad_(False)


@torch.no_grad()
def measure(generator, run_once, batch_size, device, precision="fp32"):
    """Time each switch's candidates at the generator's layer shapes; returns the measured KernelChoice."""
    shapes = input_shapes(generator, run_once)
    timings = {}

    def race(name, convolutions, forms):
        """Time ``forms`` ({form: (build from a convolution, memory format)}) over ``convolutions``; the fastest
        form's name, or None when none of them ran."""
        layers = grouped(convolutions, shapes)
        if not layers:
            return None
        timings[name] = time_forms(layers, forms, batch_size, device, precision)
        return min(timings[name], key=timings[name].get)

    # Layout: every convolution, (B, C, H, W) against (B, H, W, C).
    convolutions = [m for m in generator.modules() if isinstance(m, nn.Conv2d)]
    formats = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    channels_last = race("channels_last", convolutions, {
        name: (lambda conv, f=f: copy_of(conv, device, f), f) for name, f in formats.items()}) == "channels_last"
    memory_format = formats["channels_last" if channels_last else "contiguous"]

    def direct(conv):
        return copy_of(conv, device, memory_format)

    # Winograd: the 3x3 convolutions that ``modules.optimize.use_winograd`` would replace.
    blocks = [m for m in generator.modules() if isinstance(m, (ResBlock2d, DownBlock2d, SameBlock2d))]
    eligible = [conv for block in blocks for conv in block.children()
                if WinogradConv2d.supports(conv) and conv.in_channels >= 64]
    winograd = race("winograd", eligible, {"direct": (direct, memory_format),
                                           "winograd": (lambda c: WinogradConv2d(direct(c)), memory_format)})
    # Narrow: the generator's final convolution to RGB.
    final = [m.final for m in generator.modules() if hasattr(m, "final") and NarrowConv2d.supports(m.final)]
    narrow = race("narrow", final[:1], {"direct": (direct, memory_format),
                                        "narrow": (lambda c: NarrowConv2d(direct(c)), memory_format)})
    return KernelChoice(channels_last, winograd == "winograd", narrow == "narrow", "measured", timings)


# ----------------------------------------------------------------------------------------------------------
# Training: the layout


def time_training_layouts(layers, batch_size, device, precision):
    """{layout: seconds} of the layers' forward and backward passes (the input's gradient and the weights'), each
    distinct layer timed once per layout and counted as often as the model has it; the output's gradient random,
    in the output's layout, as the layer after hands it back."""
    formats = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    totals = dict.fromkeys(formats, 0.0)
    device_type = torch.device(device).type
    for conv, (C, H, W), count in layers:
        runs = {}
        for name, memory_format in formats.items():
            layer = copy_of(conv, device, memory_format).requires_grad_(True)
            x = torch.randn(batch_size, C, H, W, device=device).contiguous(memory_format=memory_format)
            x.requires_grad_(True)
            with autocast(device_type, precision):
                gradient = torch.randn_like(layer(x))  # the output's shape, dtype and layout

            def run(layer=layer, x=x, gradient=gradient):
                with torch.enable_grad(), autocast(device_type, precision):
                    torch.autograd.grad(layer(x), [x, *layer.parameters()], gradient)
            runs[name] = run
        for name, seconds in best_times(runs, device).items():
            totals[name] += count * seconds
    return totals


def choose_training_layout(model, run_once, frame_shape, batch_size, device, precision="fp32"):
    """Whether ``model`` (the first stage's, plain) trains faster channels-last at ``frame_shape``: (bool, how it was
    decided: 'measured', 'cached' or 'defaults', {layout: seconds} when measured). ``run_once()`` runs the model's
    forward once, which shows the convolutions' input shapes. ``MRAA_KERNELS=defaults``: the device-type rule."""
    if policy() == "defaults":
        return wants_channels_last(device, precision), "defaults", {}
    key, described = cache_key(model, frame_shape, batch_size, device, precision, training=True)
    entries = read_cache(cache_path())
    entry = entries.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("channels_last"), bool):
        return entry["channels_last"], "cached", entry.get("timings", {})
    shapes = input_shapes(model, run_once, gradients=True)
    layers = grouped([m for m in model.modules() if isinstance(m, nn.Conv2d)], shapes)
    timings = time_training_layouts(layers, measured_batch(batch_size, device), device, precision)
    channels_last = timings["channels_last"] < timings["contiguous"]
    entries[key] = {"described": described, "channels_last": channels_last,
                    "timings": timings, "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_cache(cache_path(), entries)
    return channels_last, "measured", timings
