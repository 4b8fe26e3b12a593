"""Speed and memory of animation and training, as JSON (the numbers behind the README's Performance table).

    python tools/benchmark.py                                   # config/vox256.yaml at 256x256, random weights
    python tools/benchmark.py --config config/ted384.yaml --size 384 --parts inference
    python tools/benchmark.py --checkpoint vox256.pth --frames 16 --repeats 3 --threads 1 --out bench.json
    python tools/benchmark.py --parts memory                    # demo peak RSS: 100- vs 3000-frame driving video
    python tools/benchmark.py --parts demo --threads 2          # the demo end to end against the model alone
    python tools/benchmark.py --parts inference --sides fp32,bf16  # no ONNX export
    python tools/benchmark.py --quick                           # a small model and a few frames: a smoke test
    python tools/benchmark.py --parts metrics --threads 2       # AKD/MKR of a 100-frame 256x256 clip: seconds
    python tools/benchmark.py --device cuda --parts inference,model,precision,demo,training --compile  # one GPU

Parts (``--parts``, comma-separated; default inference,training,loader):

- ``inference``: in one interleaved run, :func:`reference_make_animation`, our emulation of the reference demo loop
  (batch 1, the generator's encoder run on the source for every frame, ``torch.no_grad``, the LAPACK SVD on the
  CPU), against ``animate.make_animation`` (batched, source encoded once, optimised generator) in float32, in each
  reduced precision the device computes natively (bf16 and fp16 on CUDA; bf16 on CPUs with AVX-512 BF16 or AMX, fp16
  with AMX-FP16), with its PSNR against the float32 frames, and the ONNX Runtime backend (when installed, on the
  CPU; exported to a temporary folder), each at the best float32 batch size, all in this process (the allocator set
  alike for all). Numpy frames in and out on every side, as the demo has them. Our timed runs reuse the model's
  optimised copies, as a web page or ``--mode animate`` does from its second video on; what the first video pays on
  top is reported apart (``model_preparation_seconds``). FLOPs per frame counted by ``torch.utils.flop_counter``
  (the multiply-adds of convolutions and matrix products, so Winograd's additions are not counted; the ONNX graphs
  are counted as the same fast form without Winograd); each side's GFLOP/s as a fraction (``conv_fraction``) of the
  machine's measured rate of a large 3x3 convolution in its number format (``conv3x3_gflops``,
  ``conv3x3_bf16_gflops``, at the same threads; bf16's Winograd convolutions compute in float32, so its fraction
  understates); ``effective`` GFLOP/s: the reference's FLOPs per frame over our float32 time. ``kernels``: which
  fast forms ``kernel_choice.choose`` took on this machine for each precision and batch size (channels-last,
  Winograd, narrow), measured or read from its cache before any timing, with the milliseconds that decided each
  (also printed to stderr).
- ``model``: the model alone (``Animator``), the driving frames already on the device and the predictions left
  there, frames/s for each precision and batch size, and with ``--compile`` through ``torch.compile`` too (its
  compile time apart): the ceiling of any pipeline around it.
- ``precision``: for each reduced precision the device computes natively, the animation's PSNR against float32
  and the five convolutions of the generator and of the region predictor that lose most in it (relative error on
  the same float32 input); on a GPU under cuDNN's benchmark mode on and off, and cuBLAS's reduced-precision
  reductions allowed and not: whether a loss comes from the kernels picked or from the operations themselves.
- ``training``: one optimiser step of the first stage as ``train.py`` takes it (``optimize_for_training``, its
  layout as ``train.py`` chooses it (``channels_last`` in the results), fused Adam, glibc keeping freed memory as
  ``run.py`` sets it) against a straightforward step (plain modules and Adam, a plain process), each in its own
  process and stepping in turn; then both in this process, where the allocator is the same for both. Same weights,
  inputs and random warp: same losses. On a GPU instead: the step of ``train.py`` in float32 and in each native
  mixed precision (``--train_batch_size``, 14 by default there: the paper's vox256 batch), its losses against
  float32's and peak GPU memory; with ``--compile`` also the step as ``run.py --compile`` takes it (bf16 where
  native), compiled plain and with CUDA graphs, with its compile seconds.
- ``loader``: the training DataLoader on a generated dataset, items per second by number of workers.
- ``demo``: the demo end to end in this process (``pipeline.animate_files``: the networks loaded, a
  ``--demo_input_size`` H.264 driving video decoded and resized to ``--size``, animated, encoded) against the model
  alone on the same frames, decoded and resized beforehand (``make_animation``), both at the demo's CPU batch size,
  warm (kernels chosen, weights prepared), interleaved: frames/s of each and their ratio (``demo_over_model``).
- ``memory``: ``demo.py`` in subprocesses on generated driving videos of 100 and 3000 frames: peak RSS of each.
- ``metrics``: the keypoint metrics (``keypoint_metrics.evaluate_pairs``, as ``tools/eval_metrics.py`` runs them)
  on a 100-frame 256x256 clip against a copy shifted by 5 pixels, both PNG folders: faces on a pan over
  scikit-image's astronaut, bodies on the real footage of ``../shared/realworld`` (the astronaut where it is absent).

``--device cuda`` runs inference, model, demo and training on the GPU, float32 without TF32 (torch's default for
products, set for convolutions too) and cuDNN's benchmark mode as the demo sets it; each time ends when the GPU has
finished. Both sides of a comparison run interleaved (ours, reference, ours, ...), so a machine shared with other
work slows both alike; each part reports the load average around it. Times are the best of the repeats (the least
disturbed run), medians alongside. On a CPU shared with other jobs, ``--threads 1`` gives steadier numbers: two
threads waiting on each other at every layer were up to 5x slower there. Nothing is written but the JSON (stdout, or
``--out``).
"""
import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import animate  # noqa: E402
from animate import (PRECISIONS, Animator, batched, choose_kernels, default_batch_size,  # noqa: E402
                     forget_prepared, frames_to_tensor, get_animation_region_params, make_animation)
from checkpoint import save_checkpoint  # noqa: E402
from config import load_config  # noqa: E402
from device import configure, has_native_bf16, keep_freed_memory, native_precisions, pick_device  # noqa: E402,E501
from frames_dataset import FramesDataset  # noqa: E402
from inference import load_networks  # noqa: E402
from losses import RandomTransform, Vgg19  # noqa: E402
from media import VideoWriter  # noqa: E402
from modules.build import build_models  # noqa: E402
from modules.optimize import compiled, optimize_for_training  # noqa: E402
from modules.winograd import WinogradConv2d  # noqa: E402
from train import NETWORKS, ReconstructionModel, training_layout  # noqa: E402
from trainer import MixedPrecision, adam  # noqa: E402

PARTS = ("inference", "model", "precision", "training", "loader", "memory", "demo", "metrics")
SIDES = ("fp32", "bf16", "fp16", "onnxruntime")
REDUCED = ("bf16", "fp16")  # the reduced precisions, run where the device computes them natively
DEVICE_DEFAULTS = {  # what --batch_sizes, --sides and --train_batch_size mean when not given
    "cpu": {"batch_sizes": [1, 2, 4], "sides": "fp32,bf16,onnxruntime", "train_batch_size": 2},
    "cuda": {"batch_sizes": [1, 8, 32], "sides": "fp32,bf16,fp16", "train_batch_size": 14},  # the paper's vox batch
}
QUICK = {"config": "config/puppets64.yaml", "size": 64, "frames": 3, "repeats": 1, "batch_sizes": "1,2",
         "demo_frames": 6, "demo_input_size": 96, "metrics_frames": 10,
         "memory_frames": "10,40", "memory_size": 64, "threads": 1}


# ----------------------------------------------------------------------------------------------------------
# Measuring


def reset_peak_rss():
    """Start a new peak-RSS window where Linux allows it (``/proc/self/clear_refs``); returns whether it did."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb():
    """Peak resident memory of this process in MB: since the last reset on Linux, else since it started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def reset_peak_device_memory(device):
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_device_memory_mb(device):
    """Peak memory torch allocated on a GPU since the last reset, in MB; None on the CPU (see ``peak_rss_mb``)."""
    if torch.device(device).type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)


def load_average():
    return [round(x, 2) for x in os.getloadavg()]


def synchronize(device):
    """Wait for the device's queued work (a GPU runs ahead of the host), so that a time covers it all."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(runs, repeats, device="cpu"):
    """Time each callable of ``runs`` (name -> fn) ``repeats`` times, round-robin; name -> list of seconds.
    On a GPU each time ends when the device has finished the run's work."""
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def summary(seconds, per=1):
    """Best and median of a list of seconds, divided by ``per`` (frames or steps)."""
    return min(seconds) / per, float(np.median(seconds)) / per


def count_flops(run):
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def matmul_gflops(n=2048, repeats=5, device="cpu"):
    """The device's float32 matrix-product rate: best of ``repeats`` n x n products."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    seconds = min(interleaved({"mm": lambda: a @ b}, repeats + 1, device)["mm"][1:])
    return 2 * n ** 3 / seconds / 1e9


def conv_gflops(channels=256, size=64, batch=4, dtype=torch.float32, repeats=5, device="cpu"):
    """The rate of a large channels-last 3x3 convolution like the generator's bottleneck (oneDNN's direct kernel on
    the CPU, cuDNN's on a GPU), in ``dtype``: what the device's convolutions can do, the yardstick of each side's
    GFLOP/s."""
    x = torch.randn(batch, channels, size, size, dtype=dtype, device=device).contiguous(
        memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3, dtype=dtype, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        seconds = min(interleaved({"conv": lambda: F.conv2d(x, w, padding=1)}, repeats + 1, device)["conv"][1:])
    return 2 * batch * channels * channels * 9 * size * size / seconds / 1e9


def machine(threads, device="cpu"):
    """The machine: CPU, threads, torch; the device's matrix-product and 3x3 convolution rates in each precision
    it computes natively; the GPU's name, capability and memory when ``device`` is one."""
    rates = {"matmul_gflops": round(matmul_gflops(device=device), 1),
             "conv3x3_gflops": round(conv_gflops(device=device), 1)}
    for precision in native_precisions(device):
        rates[f"conv3x3_{precision}_gflops"] = round(conv_gflops(dtype=PRECISIONS[precision], device=device), 1)
    description = {"cpus": os.cpu_count(), "threads": threads, "torch": torch.__version__,
                   "python": platform.python_version(), "processor": cpu_name(), "fast_bf16": has_native_bf16(),
                   "device": str(device), "load_average": load_average(), **rates}
    if torch.device(device).type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        description.update(gpu=properties.name, capability=f"{properties.major}.{properties.minor}",
                           gpu_memory_gb=round(properties.total_memory / 2 ** 30, 1), cuda=torch.version.cuda,
                           tf32=torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32,
                           cudnn_benchmark=torch.backends.cudnn.benchmark)
    return description


def cpu_name():
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------------------------------------
# Models and inputs


def animation_models(config_path, checkpoint, seed=0, device="cpu"):
    """(generator, region_predictor, avd_network) in eval mode on ``device``: from ``checkpoint``, else random."""
    if checkpoint:
        return tuple(load_networks(config_path, checkpoint, device).values())
    torch.manual_seed(seed)
    models = build_models(load_config(config_path))
    return tuple(models[name].eval().to(device) for name in ("generator", "region_predictor", "avd_network"))


def random_frames(num_frames, size, seed=0):
    """Smooth random images (T, H, W, 3) float32 in [0, 1]: noise blurred by up-sampling."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_frames, 3, max(size // 16, 2), max(size // 16, 2), generator=generator)
    frames = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)  # (T, 3, H, W)
    return frames.permute(0, 2, 3, 1).contiguous().numpy()


# ----------------------------------------------------------------------------------------------------------
# Inference


def reference_make_animation(source_image, driving_video, generator, region_predictor, avd_network,
                             animation_mode="relative", device="cpu"):
    """The reference demo's animation loop, emulated with our modules as they are built (plain, NCHW).

    Frame by frame at batch 1 under ``torch.no_grad``; the generator encodes the source again for every
    frame; relative mode's hull areas are recomputed for every frame; the whole driving video is one tensor on
    the host, each frame copied to ``device`` as it is animated, each prediction copied back.
    """
    with torch.no_grad():
        predictions = []
        source = torch.tensor(source_image[np.newaxis].astype(np.float32)).permute(0, 3, 1, 2)  # (1, 3, H, W)
        source = source.to(device)
        driving = torch.tensor(np.array(driving_video)[np.newaxis].astype(np.float32)).permute(0, 4, 1, 2, 3)
        source_region_params = region_predictor(source)
        driving_region_params_initial = region_predictor(driving[:, :, 0].to(device))
        for frame_idx in range(driving.shape[2]):
            driving_frame = driving[:, :, frame_idx].to(device)  # (1, 3, H, W)
            driving_region_params = region_predictor(driving_frame)
            new_region_params = get_animation_region_params(source_region_params, driving_region_params,
                                                            driving_region_params_initial, mode=animation_mode,
                                                            avd_network=avd_network)
            out = generator(source, source_region_params=source_region_params,
                            driving_region_params=new_region_params)
            predictions.append(np.transpose(out["prediction"].data.cpu().numpy(), [0, 2, 3, 1])[0])
    return predictions


@contextlib.contextmanager
def direct_convolutions():
    """Within it, no map is large enough for a Winograd convolution (``WinogradConv2d.MIN_PIXELS``)."""
    saved = WinogradConv2d.MIN_PIXELS
    WinogradConv2d.MIN_PIXELS = float("inf")
    try:
        yield
    finally:
        WinogradConv2d.MIN_PIXELS = saved


def per_frame_flops(animate, frames):
    """FLOPs of one more frame (the difference between a 2- and a 1-frame video), and of the video's set-up."""
    one, two = count_flops(lambda: animate(frames[:1])), count_flops(lambda: animate(frames[:2]))
    return two - one, 2 * one - two


def best_batch_size(ours, frames, batch_sizes, device="cpu", rounds=2):
    """Seconds per frame of ``ours`` at each batch size (the best of ``rounds`` interleaved runs after a warm-up;
    a single run picked a slower size when the machine was briefly busy) and the fastest size."""
    ours(frames[:2], batch_sizes[0])  # warm-up: first calls allocate and pick kernels
    times = interleaved({b: lambda b=b: ours(frames, b) for b in batch_sizes}, rounds, device)
    by_batch = {b: min(seconds) / len(frames) for b, seconds in times.items()}
    return by_batch, min(by_batch, key=by_batch.get)


def psnr_db(frames, reference):
    """PSNR in dB of frames against reference frames, both (T, H, W, 3) in [0, 1], over the whole video."""
    return animate.psnr_db(torch.from_numpy(np.stack(frames)), torch.from_numpy(np.stack(reference)))


def onnx_networks(args, models, folder):
    """(generator, region_predictor, avd_network) run by ONNX Runtime, exported into ``folder`` from ``models``
    (through a checkpoint of them when random); None, with the reason, when ONNX Runtime cannot run here."""
    try:
        from onnx_backend import OnnxBackendError, load_onnx_checkpoints
        checkpoint = args.checkpoint or save_checkpoint(Path(folder) / "random.pth", dict(zip(
            ("generator", "region_predictor", "avd_network"), models)))
        return load_onnx_checkpoints(args.config, checkpoint, (args.size, args.size), cache_dir=folder,
                                     threads=torch.get_num_threads()), None
    except (ImportError, OnnxBackendError) as error:
        return None, str(error)


def animate_with(networks, source, video, mode, batch_size):
    """``make_animation`` for networks that are not torch modules (ONNX Runtime's): ``Animator(optimize=False)``."""
    generator, region_predictor, avd_network = networks
    animator = Animator(frames_to_tensor([source], "cpu"), generator, region_predictor, avd_network, mode=mode,
                        optimize=False)
    predictions = []
    for batch in batched(video, batch_size):
        predictions.extend(animator(frames_to_tensor(batch, "cpu"))["prediction"].permute(0, 2, 3, 1).numpy())
    return predictions


def model_preparation_seconds(animate, device="cpu", repeats=3):
    """What the first video of a model costs on top of the next ones: ``animate`` with the optimised copies
    made afresh (folded norms, Winograd kernels) against with them kept (``animate.prepared_for_inference``),
    best of ``repeats`` each. The timed runs reuse the copies, as a web page or a batch run does."""
    fresh, kept = [], []
    for _ in range(repeats):
        forget_prepared()
        for times in (fresh, kept):
            times.append(interleaved({"animate": animate}, 1, device)["animate"][0])
    return round(min(fresh) - min(kept), 3)


def side_summary(seconds, frames, flops, reference_best, conv_rate):
    """One side's seconds per frame (best, median), speed-up on the reference, GFLOP/s and their fraction of the
    machine's 3x3 convolution rate in the side's number format."""
    best, median = summary(seconds, frames)
    gflops = flops / best / 1e9
    return {"seconds_per_frame": round(best, 4), "seconds_per_frame_median": round(median, 4),
            "speedup": round(reference_best / best, 3), "flops_per_frame": flops,
            "gflops_per_second": round(gflops, 1), "conv_fraction": round(gflops / conv_rate, 3)}


def kernel_choices(models, source, precisions, batch_sizes, device="cpu"):
    """What ``kernel_choice.choose`` picks for each precision and batch size, why, and the seconds it took
    (measuring on a first run, reading ``kernels.json`` after); each choice is printed to stderr too."""
    generator, region_predictor, _ = models
    image = frames_to_tensor([source], device)  # (1, 3, H, W)
    chosen = {}
    for precision in precisions:
        for batch_size in batch_sizes:
            start = time.perf_counter()
            choice = choose_kernels(generator, region_predictor, image, precision, batch_size)
            seconds = time.perf_counter() - start
            print(f"kernels {precision} batch {batch_size}: {choice.why()} [{seconds:.1f} s]", file=sys.stderr)
            chosen.setdefault(precision, {})[str(batch_size)] = {
                **choice.options(), "source": choice.source, "seconds": round(seconds, 2),
                "timings_ms": {name: {k: round(v * 1e3, 2) for k, v in times.items()}
                               for name, times in choice.timings.items()}}
    return chosen


def reduced_sides(args):
    """The reduced precisions asked for (``--sides``) that the device computes natively, and a note for each of the
    others."""
    native = native_precisions(args.device)
    needs = {"cuda": {"bf16": " (from Ampere on)"}, "cpu": {"bf16": " (AVX-512 BF16 or AMX)", "fp16": " (AMX-FP16)"}}
    kind = torch.device(args.device).type
    run = [p for p in REDUCED if p in args.sides and p in native]
    notes = [f"{p} left out: this {'GPU' if kind == 'cuda' else 'CPU'} does not compute it natively"
             f"{needs[kind].get(p, '')}" for p in REDUCED if p in args.sides and p not in native]
    return run, notes


def inference_benchmark(args, machine_rates):
    """The reference loop, ours in float32, in each reduced precision the device computes natively and ONNX
    Runtime (when installed, on the CPU), timed interleaved on the same frames (see the module docstring)."""
    device = args.device
    models = animation_models(args.config, args.checkpoint, args.seed, device)
    generator, region_predictor, avd_network = models
    avd = avd_network if args.mode == "avd" else None
    frames = list(random_frames(args.frames + 1, args.size, args.seed))
    source, driving = frames[0], frames[1:]

    def ours(video, batch_size, precision="fp32"):
        return make_animation(source, video, generator, region_predictor, avd, animation_mode=args.mode,
                              batch_size=batch_size, precision=precision)

    def reference(video):
        return reference_make_animation(source, video, generator, region_predictor, avd, animation_mode=args.mode,
                                        device=device)

    load_before = load_average()
    reset_peak_rss()
    reset_peak_device_memory(device)
    reduced, notes = reduced_sides(args)
    kernels = kernel_choices(models, source, ["fp32", *reduced], args.batch_sizes, device)  # before any timing
    by_batch, batch_size = best_batch_size(ours, driving, args.batch_sizes, device)
    fp32 = ours(driving, batch_size)
    preparation = model_preparation_seconds(lambda: ours(driving[:batch_size], batch_size), device)
    difference = float(np.abs(np.stack(fp32[:2]) - np.stack(reference(driving[:2]))).max())
    runs = {"fp32": lambda: ours(driving, batch_size), "reference": lambda: reference(driving)}
    flops = {"fp32": per_frame_flops(lambda v: ours(v, 1), driving)[0]}
    result = {"mode": args.mode, "device": str(device), "frames": len(driving), "repeats": args.repeats,
              "notes": notes, "kernels": kernels}
    for precision in reduced:
        runs[precision] = lambda precision=precision: ours(driving, batch_size, precision)
        flops[precision] = per_frame_flops(lambda v, precision=precision: ours(v, 1, precision), driving)[0]
        result[f"{precision}_psnr_db"] = round(psnr_db(runs[precision](), fp32), 2)
    with tempfile.TemporaryDirectory() as folder:
        onnx, why_not = None, None
        if "onnxruntime" in args.sides:
            onnx, why_not = onnx_networks(args, models, folder) if torch.device(device).type == "cpu" else (
                None, f"our ONNX Runtime backend runs on the CPU, not on --device {device}")
        if onnx is not None:
            runs["onnxruntime"] = lambda: animate_with(onnx, source, driving, args.mode, batch_size)
            with direct_convolutions():  # the graphs hold the fast form's plain convolutions, no Winograd
                flops["onnxruntime"] = per_frame_flops(lambda v: ours(v, 1), driving)[0]
            result["onnxruntime_max_abs_difference"] = float(np.abs(np.stack(runs["onnxruntime"]())
                                                                    - np.stack(fp32)).max())
        elif why_not:
            result["notes"].append(f"onnxruntime left out: {why_not}")
        runs["fp32"]()  # every side warm before timing
        times = interleaved(runs, args.repeats, device)
    ref_best, ref_median = summary(times["reference"], len(driving))
    ref_flops, ref_setup_flops = per_frame_flops(reference, driving)
    rates = {name: machine_rates["conv3x3_gflops"] for name in ("fp32", "reference", "onnxruntime")}
    rates.update({p: machine_rates[f"conv3x3_{p}_gflops"] for p in reduced})
    flops["reference"] = ref_flops
    sides = {name: side_summary(seconds, len(driving), flops[name], ref_best, rates[name])
             for name, seconds in times.items()}
    ours_side = sides["fp32"]
    result.update({
        "seconds_per_frame_by_batch_size": {str(b): round(s, 4) for b, s in by_batch.items()},
        "best_batch_size": batch_size, "sides": sides,
        "seconds_per_frame": ours_side["seconds_per_frame"],
        "seconds_per_frame_median": ours_side["seconds_per_frame_median"],
        "reference_seconds_per_frame": round(ref_best, 4), "reference_seconds_per_frame_median": round(ref_median, 4),
        "speedup": ours_side["speedup"], "speedup_median": round(ref_median / ours_side["seconds_per_frame_median"], 3),
        "flops_per_frame": flops["fp32"], "reference_flops_per_frame": ref_flops,
        "reference_flops_per_video": ref_setup_flops,
        "gflops_per_second": ours_side["gflops_per_second"],
        "reference_gflops_per_second": sides["reference"]["gflops_per_second"],
        "effective_gflops_per_second": round(ref_flops / ours_side["seconds_per_frame"] / 1e9, 1),
        "matmul_ratio": round(ours_side["gflops_per_second"] / machine_rates["matmul_gflops"], 3),
        "model_preparation_seconds": preparation,
        "max_abs_difference": difference, "peak_rss_mb": round(peak_rss_mb(), 1),
        "load_average": [load_before, load_average()],
    })
    if torch.device(device).type == "cuda":
        result["peak_gpu_memory_mb"] = peak_device_memory_mb(device)
    return result


# ----------------------------------------------------------------------------------------------------------
# The model alone, frames kept on the device


def model_benchmark(args):
    """Frames per second of the model alone (``Animator``: region predictor, animation, generator), the driving
    frames already on the device as tensors and the predictions left there: the ceiling of any pipeline around it.
    For each precision the device computes natively, at each batch size, eager and (``--compile``) compiled."""
    device = args.device
    generator, region_predictor, avd_network = animation_models(args.config, args.checkpoint, args.seed, device)
    frames = frames_to_tensor(random_frames(max(args.batch_sizes) + 1, args.size, args.seed), device)  # (T, 3, H, W)
    source, driving = frames[:1], frames[1:]
    reduced, notes = reduced_sides(args)
    load_before = load_average()
    result = {"mode": args.mode, "device": str(device), "notes": notes, "frames_per_second": {}}
    compile_modes = [False, *compile_modes_of(device)] if args.compile else [False]
    for precision in ["fp32", *reduced]:
        for how in compile_modes:
            for batch_size in args.batch_sizes:
                start = time.perf_counter()
                animator = Animator(source, generator, region_predictor, avd_network if args.mode == "avd" else None,
                                    mode=args.mode, precision=precision, compile=how, batch_size=batch_size)
                batch = driving[:batch_size]
                animator(batch)  # the initial frame set, kernels chosen; compiled here when compiling
                synchronize(device)
                warm_up = time.perf_counter() - start
                seconds = min(interleaved({"model": lambda: animator(batch)}, args.repeats + 1, device)["model"][1:])
                key = f"{precision} compiled {how}" if how else precision
                result["frames_per_second"].setdefault(key, {})[str(batch_size)] = round(batch_size / seconds, 1)
                if how:
                    result.setdefault("compile_seconds", {}).setdefault(key, {})[str(batch_size)] = round(warm_up, 1)
    result["load_average"] = [load_before, load_average()]
    return result


# ----------------------------------------------------------------------------------------------------------
# Precision: where the reduced precisions lose quality


def layer_errors(network, run, device_type, precision, top=5):
    """Each convolution of ``network`` in ``precision`` against float32 on the same float32 input, as the kernels
    the device picks compute it: the ``top`` largest relative errors (||low - fp32|| / ||fp32||), by module name."""
    captured = {}
    convolutions = {name: m for name, m in network.named_modules() if isinstance(m, (torch.nn.Conv2d,
                                                                                      torch.nn.ConvTranspose2d))}

    def keep(name):
        def hook(module, inputs, output):  # the first call's input and output; returns None: output unchanged
            captured.setdefault(name, (inputs[0].detach().float(), output.detach().float()))
        return hook
    hooks = [m.register_forward_hook(keep(name)) for name, m in convolutions.items()]
    try:
        with torch.inference_mode():
            run()
    finally:
        for hook in hooks:
            hook.remove()
    errors = {}
    with torch.inference_mode(), torch.autocast(device_type, dtype=PRECISIONS[precision]):
        for name, (inputs, output) in captured.items():
            low = convolutions[name](inputs).float()
            errors[name] = float(f"{float((low - output).norm() / output.norm().clamp_min(1e-30)):.3g}")
    return dict(sorted(errors.items(), key=lambda item: -item[1])[:top])


@contextlib.contextmanager
def gpu_settings(cudnn_benchmark, reduced_reductions):
    """cuDNN's benchmark mode and cuBLAS's reduced-precision reductions in half precisions, set for a while."""
    matmul = torch.backends.cuda.matmul
    saved = (torch.backends.cudnn.benchmark, matmul.allow_bf16_reduced_precision_reduction,
             matmul.allow_fp16_reduced_precision_reduction)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    matmul.allow_bf16_reduced_precision_reduction = matmul.allow_fp16_reduced_precision_reduction = reduced_reductions
    try:
        yield
    finally:
        (torch.backends.cudnn.benchmark, matmul.allow_bf16_reduced_precision_reduction,
         matmul.allow_fp16_reduced_precision_reduction) = saved


def precision_benchmark(args):
    """For each reduced precision the device computes natively: the PSNR of the animation against float32, and
    the convolutions that lose most (:func:`layer_errors`), in the generator and the region predictor; on a GPU
    under each of cuDNN's benchmark mode on / off and cuBLAS's reduced-precision reductions allowed / not, so that
    a loss can be traced to the kernels the device picks rather than to which operations run in low precision."""
    device = args.device
    generator, region_predictor, avd_network = animation_models(args.config, args.checkpoint, args.seed, device)
    avd = avd_network if args.mode == "avd" else None
    frames = list(random_frames(args.frames + 1, args.size, args.seed))
    source, driving = frames[0], frames[1:]
    batch_size = max(args.batch_sizes)

    def animation(precision):
        return make_animation(source, driving, generator, region_predictor, avd, animation_mode=args.mode,
                              batch_size=batch_size, precision=precision)

    image = frames_to_tensor(frames[:2], device)  # (2, 3, H, W): the source and a driving frame

    def plain_generator():  # the plain modules, each convolution as torch runs it, at float32
        params = region_predictor(image)
        generator(image[:1].expand_as(image), {k: v[:1].expand_as(v) for k, v in params.items()}, params)

    reduced, notes = reduced_sides(args)
    cuda = torch.device(device).type == "cuda"
    settings = [(True, True), (False, True), (True, False), (False, False)] if cuda else [(None, None)]
    result = {"device": str(device), "mode": args.mode, "frames": len(driving), "batch_size": batch_size,
              "notes": notes, "by_precision": {}}
    load_before = load_average()
    for precision in reduced:
        for cudnn_benchmark, reduced_reductions in settings:
            with gpu_settings(cudnn_benchmark, reduced_reductions) if cuda else contextlib.nullcontext():
                fp32 = animation("fp32")
                entry = {"psnr_db": round(psnr_db(animation(precision), fp32), 2),
                         "worst_convolutions": {
                             "generator": layer_errors(generator, plain_generator, device.type, precision),
                             "region_predictor": layer_errors(region_predictor, lambda: region_predictor(image),
                                                              device.type, precision)}}
            key = "as set" if not cuda else (f"cudnn_benchmark={'on' if cudnn_benchmark else 'off'}, "
                                             f"reduced_precision_reductions={'on' if reduced_reductions else 'off'}")
            result["by_precision"].setdefault(precision, {})[key] = entry
    result["load_average"] = [load_before, load_average()]
    return result


# ----------------------------------------------------------------------------------------------------------
# Training


class TrainingSide:
    """One side of the training comparison, built from the seed alone (so that two processes build the same):
    the first stage's networks and Adam, plain or as ``train.py`` makes them (``optimize_for_training``,
    channels-last inputs where ``train.py`` takes them, fused Adam, ``mixed`` precision: 'none', 'bf16' or 'fp16'),
    on ``device``, with random VGG-19 weights (the same work as ImageNet's, no download)."""

    def __init__(self, args, optimized, device="cpu", mixed="none", compile=False):
        config = load_config(args.config)
        device = torch.device(device)
        torch.manual_seed(args.seed)
        networks = {name: model for name, model in build_models(config).items() if name in NETWORKS}
        self.model = ReconstructionModel(**networks, vgg=Vgg19("random"), train_params=config["train_params"],
                                         model_params=config["model_params"]).to(device)
        parameters = [p for network in networks.values() for p in network.parameters()]
        lr = config["train_params"]["lr"]
        frames = torch.from_numpy(random_frames(2 * args.train_batch_size, args.size, args.seed))
        frames = frames.permute(0, 3, 1, 2).to(device)  # (2B, 3, H, W)
        self.mixed = MixedPrecision(mixed, device)
        self.channels_last = False
        if optimized:  # the layout as train.py chooses it (timed once per machine, or the device rule)
            first_pair = [{"source": frames[0].cpu().numpy(), "driving": frames[args.train_batch_size].cpu().numpy()}]
            params = {**config["train_params"], "mixed_precision": mixed, "batch_size": args.train_batch_size}
            self.channels_last = training_layout(self.model, first_pair, params, device, self.mixed)
            optimize_for_training(self.model, channels_last=self.channels_last)
            self.optimizer = adam(parameters, lr, device)
            if self.channels_last:
                frames = frames.contiguous(memory_format=torch.channels_last)
        else:
            self.optimizer = torch.optim.Adam(parameters, lr=lr, betas=(0.5, 0.999))
        self.source, self.driving = frames.split(args.train_batch_size)  # (B, 3, H, W) each
        self.transform_params, self.seed, self.device = config["train_params"]["transform_params"], args.seed, device
        self.forward = compiled(self.model, compile) if compile else self.model  # as train.py --compile does

    def step(self):
        """One step (forward, losses, backward, Adam), the random warp drawn from the seed: (seconds, losses)."""
        synchronize(self.device)
        start = time.perf_counter()
        torch.manual_seed(self.seed)
        transform = RandomTransform(self.source.shape[0], **self.transform_params, device=self.device)
        if self.forward is not self.model:  # compiled: a new step for CUDA graphs, as in train.py
            torch.compiler.cudagraph_mark_step_begin()
        with self.mixed.autocast():
            losses, _ = self.forward(self.source, self.driving, transform)
        self.mixed.backward_and_step(sum(losses.values()), self.optimizer)
        synchronize(self.device)
        return time.perf_counter() - start, {name: value.item() for name, value in losses.items()}


def _training_worker(connection, args, optimized):
    """A process for one side: glibc's allocator as a plain process has it, or as ``run.py`` sets it."""
    torch.set_num_threads(args.threads or torch.get_num_threads())
    if optimized and not args.default_allocator:
        keep_freed_memory()
    reset_peak_rss()
    side = TrainingSide(args, optimized)
    while connection.recv():
        connection.send(side.step())
    connection.send(peak_rss_mb())


def steps_in_processes(args, repeats):
    """Each side in its own process, stepping in turn (one computes while the other waits): name -> results of
    each step, and name -> peak RSS in MB."""
    context = multiprocessing.get_context("spawn")
    sides = {}
    for name, optimized in (("straightforward", False), ("optimised", True)):
        ours, theirs = context.Pipe()
        process = context.Process(target=_training_worker, args=(theirs, args, optimized), daemon=True)
        process.start()
        sides[name] = (ours, process)
    results = {name: [] for name in sides}
    try:
        for _ in range(repeats):
            for name, (connection, _) in sides.items():
                connection.send(True)
                results[name].append(connection.recv())
        peaks = {}
        for name, (connection, process) in sides.items():
            connection.send(False)
            peaks[name] = connection.recv()
            process.join()
    finally:
        for _, process in sides.values():
            if process.is_alive():
                process.terminate()
    return results, peaks


def steps_in_this_process(args, repeats):
    """Both sides in this process (the same allocator), stepping in turn: name -> results of each step."""
    sides = {"straightforward": TrainingSide(args, False), "optimised": TrainingSide(args, True)}
    results = {name: [] for name in sides}
    for _ in range(repeats):
        for name, side in sides.items():
            results[name].append(side.step())
    return results, sides["optimised"].channels_last


def speedups(results):
    """Best and median seconds per step of each side (the first step, a warm-up, left out) and the speed-ups."""
    seconds = {name: [s for s, _ in steps[1:]] for name, steps in results.items()}
    (best, median), (plain_best, plain_median) = summary(seconds["optimised"]), summary(seconds["straightforward"])
    return {"seconds_per_step": round(best, 3), "seconds_per_step_median": round(median, 3),
            "straightforward_seconds_per_step": round(plain_best, 3),
            "straightforward_seconds_per_step_median": round(plain_median, 3),
            "speedup": round(plain_best / best, 3), "speedup_median": round(plain_median / median, 3)}


def compile_modes_of(device):
    """``torch.compile`` modes the model and training parts time with ``--compile``: CUDA graphs too where there is
    CUDA."""
    return ["default"] + (["reduce-overhead"] if torch.device(device).type == "cuda" else [])


def device_training_benchmark(args):
    """On a GPU: the step of ``train.py`` in float32 (TF32 off) and in each mixed precision the GPU computes
    natively, in this process, the same weights, frames and warp: seconds per step (the first, a warm-up, left
    out), the losses of the first step and their largest relative difference from float32's, peak GPU memory.
    With ``--compile``, the step of ``train.py --compile`` too, in bf16 where the device has it natively (else
    float32), in each of :func:`compile_modes_of`, with its compile seconds (the first step's)."""
    device = args.device
    load_before = load_average()
    result = {"device": str(device), "batch_size": args.train_batch_size, "repeats": args.repeats,
              "vgg_weights": "random", "by_precision": {}}
    precisions = ["none", *native_precisions(device)]
    sides = [(mixed, False) for mixed in precisions]
    if args.compile:
        sides += [("bf16" if "bf16" in precisions else "none", mode) for mode in compile_modes_of(device)]
    for mixed, how in sides:
        reset_peak_device_memory(device)
        side = TrainingSide(args, True, device, mixed, compile=how)
        steps = [side.step() for _ in range(args.repeats + 1)]
        best, median = summary([seconds for seconds, _ in steps[1:]])
        result["by_precision"][f"{mixed} compiled {how}" if how else mixed] = {
            "seconds_per_step": round(best, 4), "seconds_per_step_median": round(median, 4), "losses": steps[0][1],
            "peak_gpu_memory_mb": peak_device_memory_mb(device), "channels_last": side.channels_last,
            **({"compile_seconds": round(steps[0][0], 1)} if how else {})}
        del side
    plain = result["by_precision"]["none"]["losses"]
    for mixed, side in result["by_precision"].items():
        side["loss_max_relative_difference"] = max(abs(side["losses"][k] - v) / max(abs(v), 1e-12)
                                                   for k, v in plain.items())
    result["load_average"] = [load_before, load_average()]
    return result


def training_benchmark(args):
    """The step of ``train.py`` against a straightforward one, in two processes (the straightforward one with
    glibc's defaults), then both in this process (the allocator set alike for both: the code's share alone).
    On a GPU, :func:`device_training_benchmark`."""
    if torch.device(args.device).type == "cuda":
        return device_training_benchmark(args)
    load_before = load_average()
    results, peaks = steps_in_processes(args, args.repeats + 1)
    same_process, channels_last = steps_in_this_process(args, args.repeats + 1)
    plain, fast = results["straightforward"][0][1], results["optimised"][0][1]  # first steps: same weights
    return {
        "batch_size": args.train_batch_size, "repeats": args.repeats, "vgg_weights": "random",
        "channels_last": channels_last, **speedups(results),
        "same_process": dict(speedups(same_process), allocator=args.allocator),
        "losses": plain, "loss_max_relative_difference": max(abs(fast[k] - v) / max(abs(v), 1e-12)
                                                             for k, v in plain.items()),
        "peak_rss_mb": round(peaks["optimised"], 1), "straightforward_peak_rss_mb": round(peaks["straightforward"], 1),
        "load_average": [load_before, load_average()],
    }


# ----------------------------------------------------------------------------------------------------------
# Data loading


def write_frame_folders(root, num_videos, num_frames, size, seed=0):
    """``root/train/id<i>#clip/<t>.png``: smooth random frames, the layout of a prepared dataset."""
    import imageio.v3 as iio
    for v in range(num_videos):
        folder = Path(root) / "train" / f"id{v}#clip"
        folder.mkdir(parents=True)
        for t, frame in enumerate(random_frames(num_frames, size, seed + v)):
            iio.imwrite(folder / f"{t:05d}.png", (frame * 255).round().astype(np.uint8))
    return Path(root)


def loader_rate(dataset, batch_size, workers, batches):
    """Items per second the training DataLoader delivers, the first batch (workers starting) left out."""
    from trainer import make_loader
    params = {"num_repeats": batches * batch_size, "batch_size": batch_size, "dataloader_workers": workers}
    iterator = iter(make_loader(dataset, params, torch.device("cpu"), "train_params"))
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def loader_benchmark(args, training):
    config = load_config(args.config)
    dataset_params = config["dataset_params"]
    load_before = load_average()
    with tempfile.TemporaryDirectory() as root:
        write_frame_folders(root, num_videos=4, num_frames=8, size=args.size, seed=args.seed)
        dataset = FramesDataset(root, frame_shape=(args.size, args.size, 3), id_sampling=True, is_train=True,
                                augmentation_params=dataset_params.get("augmentation_params"))
        rates = {w: loader_rate(dataset, args.train_batch_size, w, args.loader_batches) for w in args.workers}
    result = {"dataset": f"4 videos x 8 PNG frames at {args.size}x{args.size}, the config's augmentations",
              "batch_size": args.train_batch_size,
              "items_per_second_by_workers": {str(w): round(r, 1) for w, r in rates.items()},
              "load_average": [load_before, load_average()]}
    if training:
        needed = args.train_batch_size / training["seconds_per_step"]
        result.update(training_items_per_second=round(needed, 2), keeps_up=max(rates.values()) >= needed)
    return result


# ----------------------------------------------------------------------------------------------------------
# Memory of the demo

# Runs demo.py in a child process and prints its peak RSS in MB (ffmpeg's own processes not included). The
# child reads its own VmHWM: its getrusage maximum would include the parent's resident size at the fork.
_DEMO_CHILD = """
import resource, runpy, sys
sys.path.insert(0, {root!r})
sys.argv = ['demo.py', *{argv!r}]
try:
    runpy.run_path({root!r} + '/demo.py', run_name='__main__')
    code = 0
except SystemExit as exit:
    code = exit.code
try:
    kb = [int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:')][0]
except (OSError, IndexError):
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print('PEAK_RSS_MB', kb / 1024)
sys.exit(code)
"""


def write_demo_inputs(folder, config_path, size, frame_counts, seed=0):
    """A random-weight checkpoint, a source image and one driving video per frame count, in ``folder``."""
    import imageio.v3 as iio
    folder = Path(folder)
    torch.manual_seed(seed)
    models = build_models(load_config(config_path))
    checkpoint = save_checkpoint(folder / "model.pth", {k: v for k, v in models.items() if k != "bg_predictor"})
    frames = (random_frames(8, size, seed) * 255).round().astype(np.uint8)  # (8, H, W, 3)
    iio.imwrite(folder / "source.png", frames[0])
    videos = {}
    for count in frame_counts:
        videos[count] = folder / f"driving{count}.mp4"
        with VideoWriter(videos[count], fps=25) as writer:
            for t in range(count):
                writer.write(frames[t % len(frames)])
    return checkpoint, folder / "source.png", videos


def demo_peak_rss(config_path, checkpoint, source, driving, size, result):
    """(peak RSS in MB, seconds) of ``demo.py`` animating ``driving`` in a child process."""
    argv = ["--config", str(config_path), "--checkpoint", str(checkpoint), "--source_image", str(source),
            "--driving_video", str(driving), "--result_video", str(result), "--mode", "relative", "--cpu",
            "--quiet", "--img_shape", f"{size},{size}"]
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))  # the benchmark's thread count
    start = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", _DEMO_CHILD.format(root=str(ROOT), argv=argv)],
                           capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - start
    if child.returncode != 0:
        raise RuntimeError(f"demo.py failed on {driving}: {child.stderr.strip()[-2000:]}")
    return float(child.stdout.split("PEAK_RSS_MB")[-1].split()[0]), seconds


def memory_benchmark(args):
    load_before = load_average()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint, source, videos = write_demo_inputs(folder, args.memory_config, args.memory_size,
                                                       args.memory_frames, args.seed)
        runs = {count: demo_peak_rss(args.memory_config, checkpoint, source, video, args.memory_size,
                                     Path(folder) / f"result{count}.mp4") for count, video in videos.items()}
    short, long = min(runs), max(runs)
    return {"model": f"{args.memory_config} at {args.memory_size}x{args.memory_size}, random weights, relative mode",
            "peak_rss_mb_by_frames": {str(n): round(mb, 1) for n, (mb, _) in runs.items()},
            "seconds_by_frames": {str(n): round(s, 1) for n, (_, s) in runs.items()},
            "long_over_short": round(runs[long][0] / runs[short][0], 4),
            "load_average": [load_before, load_average()]}


def demo_benchmark(args):
    """The demo end to end against the model alone, on the same frames (see the module docstring)."""
    from media import read_image, read_video
    from pipeline import Request, animate_files
    load_before = load_average()
    img_shape = (args.size, args.size)
    device = args.device
    reduced, notes = reduced_sides(args)
    precisions = ["fp32", *reduced]
    batch_size = default_batch_size(device)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint, source, videos = write_demo_inputs(folder, args.config, args.demo_input_size,
                                                       [args.demo_frames], args.seed)
        checkpoint = args.checkpoint or checkpoint
        driving = videos[args.demo_frames]
        models = animation_models(args.config, checkpoint, device=device)
        source_frame, frames = read_image(source, img_shape), list(read_video(driving, img_shape))

        def end_to_end(precision):
            return lambda: animate_files(Request(
                args.config, str(checkpoint), str(source), str(driving), str(Path(folder) / "result.mp4"),
                mode=args.mode, img_shape=img_shape, device=str(device), batch_size=batch_size, precision=precision,
                progress=False),
                notify=lambda message: None)

        def model_alone(precision):
            return lambda: make_animation(source_frame, frames, *models, animation_mode=args.mode,
                                          batch_size=batch_size, precision=precision)
        runs = {}
        for precision in precisions:
            runs[f"demo_{precision}"], runs[f"model_{precision}"] = end_to_end(precision), model_alone(precision)
        for run in runs.values():  # warm: kernels chosen, weights prepared, as a second video finds them
            run()
        times = interleaved(runs, args.repeats, device)
    result = {"driving": f"{args.demo_frames} frames of {args.demo_input_size}x{args.demo_input_size} H.264, "
                         f"animated at {args.size}x{args.size}, batch {batch_size}, {args.mode} mode",
              "device": str(device), "notes": notes, "load_average": [load_before, load_average()]}
    for precision in precisions:
        demo, model = (min(times[f"{side}_{precision}"]) for side in ("demo", "model"))
        result[precision] = {"demo_frames_per_second": round(args.demo_frames / demo, 2),
                             "model_frames_per_second": round(args.demo_frames / model, 2),
                             "demo_over_model": round(model / demo, 3)}
    return result


def metrics_clips(num_frames=100, size=256):
    """{target: (T, size, size, 3) uint8}: a slow pan over the astronaut's portrait (face), the first frames of the
    real footage in ../shared/realworld (body; the pan where that folder is absent)."""
    from skimage import data
    from skimage.transform import resize
    photo = data.astronaut()  # (512, 512, 3)
    pan = [photo[int(20 + 20 * np.sin(i / 9)):, int(60 + 30 * np.sin(i / 13)):][:320, :320] for i in range(num_frames)]
    face = np.stack([(resize(frame, (size, size), anti_aliasing=True) * 255).round() for frame in pan]).astype(np.uint8)
    footage = ROOT.parent / "shared" / "realworld" / "driving.mp4"
    if not footage.is_file():
        return {"face": face, "body": face}, "astronaut (body too: ../shared/realworld is absent)"
    from media import read_video
    video = read_video(footage, (size, size))[:num_frames]  # (T, size, size, 3) in [0, 1]
    return {"face": face, "body": (video * 255).round().astype(np.uint8)}, "astronaut pan (face), realworld (body)"


def metrics_benchmark(args):
    """Seconds of the whole keypoint-metric run (reading both PNG folders, detecting, comparing) per target."""
    import imageio.v3 as iio
    import keypoint_metrics
    import landmarks
    landmarks.check_available()
    clips, source = metrics_clips(args.metrics_frames)
    threads = args.threads or 2
    results = {"clip": f"{args.metrics_frames} frames 256x256 against a copy shifted 5 px right, PNG folders; {source}",
               "threads": threads}
    with tempfile.TemporaryDirectory() as folder:
        for target, frames in clips.items():
            moved = np.pad(frames, ((0, 0), (0, 0), (5, 0), (0, 0)), mode="edge")[:, :, :frames.shape[2]]
            for side, video in (("truth", frames), ("generated", moved)):
                (Path(folder) / target / side).mkdir(parents=True)
                for i, frame in enumerate(video):
                    iio.imwrite(Path(folder) / target / side / f"{i:03d}.png", frame)
            pairs = {target: (Path(folder) / target / "truth", Path(folder) / target / "generated")}
            load_before = load_average()
            start = time.perf_counter()
            metrics = keypoint_metrics.evaluate_pairs(pairs, target, threads=threads, progress=False)
            seconds = time.perf_counter() - start
            results[target] = {"seconds": round(seconds, 2), "frames_per_second": round(2 * len(frames) / seconds, 2),
                               "akd": metrics["akd"], "mkr": metrics["mkr"],
                               "frames_without_detection": metrics["frames_without_detection"],
                               "load_average": [load_before, load_average()]}
    return results


# ----------------------------------------------------------------------------------------------------------
# Command line


def int_list(text):
    return [int(x) for x in text.split(",") if x]


def repository_path(path):
    """A config path as given, or else relative to the repository (``config/vox256.yaml`` from anywhere)."""
    return path if Path(path).exists() or Path(path).is_absolute() else str(ROOT / path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/vox256.yaml", help="model config (default: %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="frame height and width (default: %(default)s)")
    parser.add_argument("--checkpoint", help="weights to load (default: random weights from --seed)")
    parser.add_argument("--parts", default="inference,training,loader", help=f"any of {','.join(PARTS)}")
    parser.add_argument("--mode", default="relative", choices=("standard", "relative", "avd"))
    parser.add_argument("--device", default="cpu",
                        help="cpu (default), cuda, cuda:N or auto: where inference, the model, precision, the demo "
                             "and training run (the loader, memory and metrics parts run on the CPU)")
    parser.add_argument("--sides", default=None,
                        help="inference: ours in which forms besides the reference loop (default: fp32,bf16,"
                             "onnxruntime on the CPU, fp32,bf16,fp16 on CUDA; bf16 and fp16 only where the device "
                             "computes them natively, onnxruntime only when it is installed, on the CPU)")
    parser.add_argument("--compile", action="store_true",
                        help="model and GPU training parts: time torch.compile's graphs too (and replayed as CUDA "
                             "graphs on CUDA)")
    parser.add_argument("--frames", type=int, default=16, help="driving frames per animation (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each side (default: %(default)s)")
    parser.add_argument("--batch_sizes", type=int_list, default=None,
                        help="searched for the fastest (default: 1,2,4 on the CPU, 1,8,32 on CUDA)")
    parser.add_argument("--train_batch_size", type=int, default=None,
                        help="training batch (default: 2 on the CPU, 14 on CUDA: the paper's vox256 batch)")
    parser.add_argument("--workers", type=int_list, default=[0, 1, 2], help="loader workers to try (0,1,2)")
    parser.add_argument("--loader_batches", type=int, default=8, help="batches timed per worker count")
    parser.add_argument("--demo_frames", type=int, default=48, help="driving frames of the demo part (48)")
    parser.add_argument("--demo_input_size", type=int, default=384,
                        help="the demo part's driving video is this size, resized to --size (384)")
    parser.add_argument("--metrics_frames", type=int, default=100, help="frames of the metrics part's clips (100)")
    parser.add_argument("--memory_config", default="config/puppets64.yaml", help="model of the memory part")
    parser.add_argument("--memory_size", type=int, default=256, help="frame size of the memory part")
    parser.add_argument("--memory_frames", type=int_list, default=[100, 3000], help="driving lengths (100,3000)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, the cores)")
    parser.add_argument("--default_allocator", action="store_true",
                        help="leave glibc's malloc as it is (by default it keeps freed memory, as demo.py sets it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help=f"smoke test: {QUICK}")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, int_list(value) if isinstance(value, str) and "," in value else value)
        args.workers, args.loader_batches = [0], 2
    args.config, args.memory_config = repository_path(args.config), repository_path(args.memory_config)
    try:
        args.device = pick_device(args.device)
    except ValueError as error:
        parser.error(f"--device: {error}")
    for key, value in DEVICE_DEFAULTS[args.device.type].items():
        if getattr(args, key) is None:
            setattr(args, key, list(value) if isinstance(value, list) else value)
    args.parts = [p for p in args.parts.split(",") if p]
    args.sides = [s for s in args.sides.split(",") if s]
    if set(args.sides) - set(SIDES) or "fp32" not in args.sides:
        parser.error(f"--sides {','.join(args.sides)}: fp32 and any of {', '.join(SIDES[1:])}")
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}: use any of {', '.join(PARTS)}")
    return args


def run(args):
    """The benchmark's results as a dict (see the module docstring)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or threads)
    try:
        return run_parts(args)
    finally:
        torch.set_num_threads(threads)


def run_parts(args):
    args.allocator = "default" if args.default_allocator else "glibc keeps freed memory" if keep_freed_memory() \
        else "default (not glibc)"
    if args.device.type == "cuda":  # float32 is float32: no TF32 in convolutions or products (torch's choice too)
        configure(args.device)  # cuDNN benchmark mode, as the demo sets it
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    results = {"config": os.path.relpath(args.config, ROOT), "size": args.size, "checkpoint": args.checkpoint,
               "machine": dict(machine(torch.get_num_threads(), args.device), allocator=args.allocator)}
    if "inference" in args.parts:
        results["inference"] = inference_benchmark(args, results["machine"])
    if "model" in args.parts:
        results["model"] = model_benchmark(args)
    if "precision" in args.parts:
        results["precision"] = precision_benchmark(args)
    if "training" in args.parts:
        results["training"] = training_benchmark(args)
    if "loader" in args.parts:
        results["loader"] = loader_benchmark(args, results.get("training"))
    if "memory" in args.parts:
        results["memory"] = memory_benchmark(args)
    if "demo" in args.parts:
        results["demo"] = demo_benchmark(args)
    if "metrics" in args.parts:
        results["metrics"] = metrics_benchmark(args)
    return results


def main(argv=None):
    args = parse_args(argv)
    results = run(args)
    text = json.dumps(results, indent=2, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
