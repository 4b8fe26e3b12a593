"""Animation (docs/method.md §7): the animation modes, the batched animation of one source (``Animator``, and the
reference's ``make_animation``), a driving video streamed from disk (the demo's), and ``--mode animate``."""
import contextlib
import itertools
import weakref
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import ConvexHull, QhullError
from tqdm import tqdm

from config import require_section
from device import native_precisions
from frames_dataset import PairedDataset
from errors import signals_as_interrupts
from inference import load_into
from media import (BackgroundWriter, VideoWriter, iter_video_frames, prefetched, staged_folder, strip_extension,
                   write_image)
import kernel_choice
from modules.optimize import compiled, optimize_for_inference
from modules.util import as_float32, float32_geometry, inverse
from visualizer import Visualizer

ANIMATION_MODES = ("standard", "relative", "avd")
DEFAULT_FPS = 25.0  # of the visualisation videos, and of results whose driving video does not say its rate


def _hull_area(shift, what):
    """Area of the convex hull of one frame's region centres (K, 2); fails clearly when it has none."""
    points = shift.detach().float().cpu().numpy()
    try:
        return ConvexHull(points).volume  # in 2-D, 'volume' is the area
    except (QhullError, ValueError):
        raise ValueError(f"the region centres of the {what} are degenerate (they lie on a line or coincide), so "
                         "their convex hull has no area and relative motion cannot be scaled: use "
                         "adapt_movement_scale=False (--no-adapt_scale) or another mode") from None


def movement_scale(source_region_params, driving_region_params_initial):
    """sqrt(source hull area / initial driving hull area) of the region centres, batch item 0 (a float)."""
    source_area = _hull_area(source_region_params["shift"][0], "source")
    driving_area = _hull_area(driving_region_params_initial["shift"][0], "initial driving frame")
    return float(np.sqrt(source_area) / np.sqrt(driving_area))


def get_animation_region_params(source_region_params, driving_region_params, driving_region_params_initial,
                                mode="standard", avd_network=None, adapt_movement_scale=True, scale=None):
    """Region params to render the source in the driving frame's motion.

    - ``standard``: the driving params as they are.
    - ``relative``: the driving motion since the first driving frame, applied to the source's regions:
      shift = (p_d - p_d0) * scale + p_s; affine = (A_d A_d0^-1) A_s. ``scale`` is the square root of the ratio
      of the convex-hull areas of the source and initial driving centres (batch item 0) when
      ``adapt_movement_scale``, else 1. Other entries (covar, heatmap) are the driving frame's.
    - ``avd``: the AVD network's reconstruction of the driving pose on the source's shape (Sec. 3.4).

    All params are dicts with ``shift`` (B, K, 2) and, for relative and avd, ``affine`` (B, K, 2, 2).
    ``scale``, when given, is the relative mode's movement scale, computed once per video by the caller.
    """
    if mode not in ANIMATION_MODES:
        raise ValueError(f"unknown animation mode {mode!r}: use one of {', '.join(ANIMATION_MODES)}")
    new_region_params = dict(driving_region_params)
    if mode == "standard":
        return new_region_params
    if mode == "avd":
        return _require_avd(avd_network)(source_region_params, driving_region_params)

    if scale is None:
        scale = movement_scale(source_region_params, driving_region_params_initial) if adapt_movement_scale else 1.0
    shift_diff = driving_region_params["shift"] - driving_region_params_initial["shift"]  # (B, K, 2)
    new_region_params["shift"] = shift_diff * scale + source_region_params["shift"]
    if "affine" in driving_region_params:
        affine_diff = driving_region_params["affine"] @ inverse(driving_region_params_initial["affine"])
        new_region_params["affine"] = affine_diff @ source_region_params["affine"]  # (B, K, 2, 2)
    return new_region_params


def _require_avd(avd_network):
    if avd_network is None:
        raise ValueError("mode 'avd' needs an AVD network: the checkpoint has none (use relative or standard, "
                         "or train one with --mode train_avd)")
    return avd_network


def expand_batch(params, B):
    """Region params of batch 1 viewed as batch B (no copy): {key: (1, ...)} -> {key: (B, ...)}."""
    return {key: value.expand(B, *value.shape[1:]) for key, value in params.items()}


def region_layout(shift):
    """Region centres (B, K, 2) centred on their mean and scaled to unit RMS radius: a pose without position
    or size, comparable between a source and a driving frame of any object the regions were learned on."""
    centred = shift - shift.mean(dim=1, keepdim=True)  # (B, K, 2)
    radius = centred.pow(2).sum(dim=2).mean(dim=1).sqrt().clamp_min(1e-6)  # (B,)
    return centred / radius[:, None, None]  # (B, K, 2)


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
AUTO = "auto"  # the demo's and the web page's default: the fastest precision whose frames measure close to float32's
AUTO_BAR_DB = 45.0  # PSNR against float32 a reduced precision must reach on the first frames (RMS 1.4 of 255 levels)


def check_precision(precision):
    """``precision`` itself when it is one of ``PRECISIONS``; else a ValueError naming them."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    return precision


def psnr_db(images, reference):
    """PSNR in dB of images against reference images (tensors in [0, 1]) over all their pixels; inf when equal,
    NaN when either holds a non-finite value (which no bar passes)."""
    mse = float((images.double() - reference.double()).pow(2).mean())
    return 10 * np.log10(1 / mse) if mse > 0 else float("inf") if mse == 0 else float("nan")


def choose_precision(make_animator, read_probe, device, bar_db=AUTO_BAR_DB):
    """The precision of ``--precision auto``, chosen by measured quality: the first of the device's native reduced
    precisions (``device.native_precisions``, fastest first: fp16 then bf16 on CUDA, bf16 on CPUs with AVX-512
    BF16 or AMX) whose frames are at least ``bar_db`` from float32's on ``read_probe()`` (B, 3, H, W), the first
    driving frames; else float32. Devices with none (most CPUs) take float32 without decoding or animating anything,
    and so does ``MRAA_KERNELS=defaults`` (nothing measured: the tests keep every CPU computing alike so).

    ``make_animator(precision)`` -> an :class:`Animator`. On an H200 with random weights, fp16 stayed within 49.5 dB
    of float32 on vox256 and 41 on ted384 while bf16 fell to 26.5 on ted384: a model decides, not a rule.
    Returns (precision, a note saying why, or None when there was no choice to make).
    """
    candidates = native_precisions(device) if kernel_choice.policy() == "measure" else []
    if not candidates:
        return "fp32", None
    probe = read_probe()  # (B, 3, H, W)
    reference = make_animator("fp32")(probe)["prediction"]  # (B, 3, H, W)
    measured = []
    for candidate in candidates:
        quality = psnr_db(make_animator(candidate)(probe)["prediction"], reference)
        measured.append(f"{candidate} {quality:.1f} dB" if quality == quality else f"{candidate} non-finite frames")
        if quality >= bar_db:
            return candidate, (f"precision auto: {candidate}, {quality:.1f} dB from float32 on the first "
                               f"{probe.shape[0]} frame(s) (at least {bar_db:g} dB; --precision fp32 for float32's "
                               "frames)")
    return "fp32", (f"precision auto: float32; the faster {', '.join(measured)} (against float32 on the first "
                    f"{probe.shape[0]} frame(s)), under {bar_db:g} dB")


def autocast_for(device_type, precision):
    """The context networks run in at ``precision``: nothing for 'fp32', else autocast to bf16 / fp16 (the
    region geometry inside the networks turns it off again, ``modules.util.float32_geometry``)."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=PRECISIONS[precision])


def choose_kernels(generator, region_predictor, source_image, precision, batch_size):
    """``kernel_choice.choose`` for animating ``source_image`` (1, C, H, W) with these networks."""
    def run_once():  # the plain generator on the source in its own pose: which convolution sees which map
        with autocast_for(source_image.device.type, precision):
            params = as_float32(region_predictor(source_image))
            generator(source_image, params, params)
    return kernel_choice.choose(generator, run_once, tuple(source_image.shape[-2:]), batch_size,
                                source_image.device, precision)


_PREPARED = weakref.WeakKeyDictionary()  # network -> {options: (fingerprint, its optimised copy)}


def prepared_for_inference(network, **options):
    """``optimize_for_inference(network, **options)``, made once and reused while ``network``'s parameters and
    buffers are the same tensors, unchanged since (their in-place version counters; ``load_state_dict`` and
    optimiser steps move them).

    Each ``Animator`` of a batch run (``--mode animate`` makes one per pair), each request of the web page and
    each benchmark repeat would otherwise fold, copy and transform the same weights again: 0.1-0.2 s for a
    256x256 model on 2 CPU threads, the time of a frame or more. The copy and its Winograd kernels (about 7 times
    the 3x3 kernels' size) live as long as ``network`` does.
    """
    tensors = list(itertools.chain(network.parameters(), network.buffers()))
    if any(t.is_inference() for t in tensors):  # made under inference_mode: no version counter tells a change
        return optimize_for_inference(network, **options)
    fingerprint = tuple((t.data_ptr(), t._version) for t in tensors)
    key = tuple(sorted(options.items()))
    per_network = _PREPARED.setdefault(network, {})
    if key not in per_network or per_network[key][0] != fingerprint:
        per_network[key] = (fingerprint, optimize_for_inference(network, **options))
    return per_network[key][1]


def forget_prepared():
    """Drop every copy ``prepared_for_inference`` keeps (tools/benchmark.py times the first video so)."""
    _PREPARED.clear()


class Animator:
    """Animates one source image by batches of driving frames (docs/method.md §7).

    The source's region params and encoder features are computed once, at construction; each call then costs
    the region predictor on the driving frames and the generator's flow and decoder. The initial driving
    frame (relative mode) is the first frame animated unless ``set_initial`` names another. Results equal
    those of the reference's frame-by-frame loop (tests/test_animate.py checks it against the parity arrays).

    The per-frame path never waits for the device: no ``.item()`` or host copy (the movement scale of relative
    mode is computed once per video, in ``set_initial``).

    Args:
        source_image: (1, C, H, W) in [0, 1], on the models' device.
        generator, region_predictor, avd_network: networks in eval mode (avd_network only for mode 'avd').
        optimize: render with the networks' copies from ``modules.optimize.optimize_for_inference``, made once
            per network (``prepared_for_inference``), with the same numbers up to float rounding: the
            generator's (channels-last, Winograd and narrow convolutions where timing them on this machine found
            them faster, ``kernel_choice.choose``; ``self.kernels`` says what was chosen) and the region predictor's
            (batch norms folded, channels-last: 12.7 ms a 256x256 frame instead of 18.4 on 2 CPU threads). In AVD
            mode the region predictor stays as it is: the AVD network feeds the region params to inverses of
            nearly singular affines, where a last-bit difference grows a thousandfold (the parity frames moved by
            1.9e-4 instead of 6.7e-5).
        precision: 'fp32', or 'bf16' / 'fp16' autocast (region geometry stays float32; predictions are float32).
        batch_size: the driving frames per call the kernels are timed at (default ``default_batch_size``).
        compile: trace the per-frame path (:meth:`render`: region predictor, AVD network, region geometry and
            generator) with ``torch.compile`` as one graph: True or 'default', 'reduce-overhead' (the graph
            replayed as a CUDA graph: no launch cost per kernel), 'max-autotune', or a backend name. A shorter
            last batch is padded to ``batch_size`` (its own frames returned), so that one graph serves a whole
            video. Meant for GPUs: on a 2-core CPU it took a minute to compile and the frames came out slower.
    """

    def __init__(self, source_image, generator, region_predictor, avd_network=None, mode="standard",
                 adapt_movement_scale=True, optimize=True, precision="fp32", compile=False, batch_size=None):
        if mode not in ANIMATION_MODES:
            raise ValueError(f"unknown animation mode {mode!r}: use one of {', '.join(ANIMATION_MODES)}")
        if mode == "avd":
            _require_avd(avd_network)
        self.device_type, self.precision = source_image.device.type, check_precision(precision)
        self.batch_size = batch_size or default_batch_size(source_image.device)
        self.kernels = None
        if optimize:
            self.kernels = choose_kernels(generator, region_predictor, source_image, precision, self.batch_size)
            generator = prepared_for_inference(generator, **self.kernels.options())
        self.channels_last = optimize and self.kernels.channels_last
        if optimize:
            if mode != "avd":
                region_predictor = prepared_for_inference(region_predictor, channels_last=self.channels_last)
        self.regions_channels_last = self.channels_last and mode != "avd"
        self.generator, self.region_predictor, self.avd_network = generator, region_predictor, avd_network
        self.mode, self.adapt_movement_scale = mode, adapt_movement_scale
        self.source_image = self.prepare(source_image)  # (1, C, H, W), for the generator
        with torch.inference_mode(), self.autocast():
            self.source_params = self.predict_regions(source_image)  # (1, K, ...)
            self.source_features = self.generator.encode(self.source_image)  # [(1, F_i, H_i, W_i)]
        self.initial_params, self.scale = None, None
        # The per-frame path traced whole, networks and geometry, as one graph (tests/test_animate.py checks that
        # it has no graph break); the source's features and the initial frame are computed once, untraced.
        self.render_batch = compiled(self.render, compile) if compile else self.render
        self.fixed_batch, self.copy_outputs = bool(compile), compile == "reduce-overhead"

    def prepare(self, images):
        """Images (B, C, H, W) in the memory format the generator was optimised for."""
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def predict_regions(self, images):
        """The region params (float32; batch B) of images (B, C, H, W), in the predictor's memory format."""
        if self.regions_channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return as_float32(self.region_predictor(images))

    def autocast(self):
        return autocast_for(self.device_type, self.precision)

    @torch.inference_mode()
    def set_initial(self, driving_frame):
        """Take the driving frame (1, C, H, W) as the one relative motion is measured from."""
        with self.autocast():
            self.initial_params = self.predict_regions(driving_frame)  # (1, K, ...)
        self.scale = None
        if self.mode == "relative":  # once per video: the hull areas need the centres on the host
            self.scale = movement_scale(self.source_params, self.initial_params) if self.adapt_movement_scale \
                else 1.0

    @torch.inference_mode()
    def layout_distance(self, driving):
        """How far each driving frame's region layout is from the source's: (B, C, H, W) -> (B,)."""
        with self.autocast():
            shift = self.predict_regions(driving)["shift"]  # (B, K, 2)
        driving_layout = region_layout(shift)  # (B, K, 2)
        source_layout = region_layout(self.source_params["shift"])  # (1, K, 2)
        return (driving_layout - source_layout).pow(2).sum(dim=(1, 2))  # (B,)

    @torch.inference_mode()
    def __call__(self, driving):
        """Animate the source in the motion of driving frames (B, C, H, W).

        Returns the generator's output dict (``prediction`` (B, C, H, W) float32 in [0, 1], ``deformed``, ...) with
        the ``source_region_params`` and ``driving_region_params`` (batch B) that the visualizer draws.
        """
        if self.initial_params is None:
            self.set_initial(driving[:1])
        B = driving.shape[0]
        if self.fixed_batch and B < self.batch_size:  # the compiled graph's batch: no recompiling for a last batch
            driving = torch.cat([driving, driving[-1:].expand(self.batch_size - B, *driving.shape[1:])])
        out = self.render_batch(driving)
        if self.copy_outputs or driving.shape[0] != B:  # a CUDA graph's outputs are overwritten by its next replay
            out = _first_items(out, B)
        return out

    def render(self, driving):
        """The per-frame path of ``__call__`` (the initial frame set): driving frames (B, C, H, W) -> its dict."""
        B = driving.shape[0]
        with self.autocast():
            driving_params = self.predict_regions(driving)  # (B, K, ...)
            source_params = expand_batch(self.source_params, B)
            with float32_geometry(self.device_type):
                params = get_animation_region_params(source_params, driving_params, self.initial_params,
                                                     mode=self.mode, avd_network=self.avd_network,
                                                     scale=self.scale)
            source = self.source_image.expand(B, *self.source_image.shape[1:])  # (B, C, H, W), no copy
            out = self.generator(source, params, source_params, source_features=self.source_features)
        out["prediction"] = out["prediction"].float()
        out.update(source_region_params=source_params, driving_region_params=driving_params)
        return out


def _first_items(out, B):
    """The first B batch items of each tensor of an output dict (nested dicts too), as copies of their own."""
    return {key: _first_items(value, B) if isinstance(value, dict) else
            value[:B].clone() if torch.is_tensor(value) else value for key, value in out.items()}


def default_batch_size(device):
    """Driving frames per forward pass when none is given: 8 on a GPU; 4 on the CPU, measured 5-7% faster per
    256x256 frame than 1 (tools/benchmark.py; with glibc keeping freed memory, see ``device.configure``)."""
    return 8 if torch.device(device).type == "cuda" else 4


def batched(items, batch_size):
    """Lists of up to ``batch_size`` consecutive items of an iterable (the last one may be shorter)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def frames_to_tensor(frames, device):
    """Frames (H, W, 3) float in [0, 1], a list or an array (B, H, W, 3), to a tensor (B, 3, H, W) on device."""
    array = np.ascontiguousarray(np.stack(frames) if isinstance(frames, (list, tuple)) else frames)
    tensor = torch.from_numpy(array)  # (B, H, W, 3)
    if torch.device(device).type == "cuda":  # a pinned copy goes to the GPU without blocking the host
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device, dtype=torch.float32).permute(0, 3, 1, 2).contiguous()  # (B, 3, H, W)


def to_uint8(images):
    """(B, C, H, W) in [0, 1] -> uint8 (B, H, W, C) on the same device, rounded as skimage's img_as_ubyte."""
    images = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8)  # (B, C, H, W)
    return images.permute(0, 2, 3, 1)  # (B, H, W, C)


def tensor_to_uint8(images):
    """(B, C, H, W) in [0, 1] on any device -> numpy uint8 (B, H, W, C)."""
    return to_uint8(images).cpu().numpy()  # (B, H, W, C)


# ----------------------------------------------------------------------------------------------------------
# A driving video streamed from disk (the demo)


def frame_batches(path, img_shape, batch_size, device):
    """Driving frames, decoded as they are needed: tensors (B, 3, H, W) on ``device``."""
    for batch in batched(iter_video_frames(path, img_shape), batch_size):
        yield frames_to_tensor(batch, device)


def first_batch(path, img_shape, batch_size, device):
    """The first ``batch_size`` driving frames (B, 3, H, W) on ``device``, the decoder closed after them."""
    with contextlib.closing(frame_batches(path, img_shape, batch_size, device)) as batches:
        return next(batches)


def read_frame(path, img_shape, index, device):
    """Driving frame ``index`` as (1, 3, H, W), decoding no further than it."""
    for t, frame in enumerate(iter_video_frames(path, img_shape)):
        if t == index:
            return frames_to_tensor([frame], device)
    raise ValueError(f"{path} has no frame {index}: it ends before it")


def find_best_frame(animator, path, img_shape, batch_size, device, num_frames=None, progress=False):
    """The driving frame whose region layout best matches the source's, by the model's own region predictor.

    Returns (index, frame (1, 3, H, W)); one decoding pass, keeping only the best frame so far.
    """
    best_index, best_distance, best_frame, start = 0, float("inf"), None, 0
    with tqdm(total=num_frames, unit="frame", disable=not progress, desc="finding the best frame") as bar:
        for driving in frame_batches(path, img_shape, batch_size, device):
            distance = animator.layout_distance(driving)  # (B,)
            i = int(distance.argmin())
            if float(distance[i]) < best_distance:
                best_index, best_distance, best_frame = start + i, float(distance[i]), driving[i:i + 1].clone()
            start += driving.shape[0]
            bar.update(driving.shape[0])
    return best_index, best_frame


def animate_video(animator, driving_path, writer, img_shape, batch_size, num_frames=None, progress=True):
    """Stream the driving video through ``animator`` into ``writer``; returns the number of frames.

    Three stages run side by side, so that a video goes at the rate of the slowest, not at the sum of their rates: a
    thread decodes and resizes the next batches (``media.prefetched``, two batches ahead), the model animates in
    this thread, and a thread encodes the frames before (``media.BackgroundWriter``, two batches behind). Each
    batch's frames are fetched from the device only after the next batch has been queued, so on a GPU the host
    copies while the device computes (the inputs go from pinned memory, without blocking: ``frames_to_tensor``).
    """
    device = animator.source_image.device
    pending = None  # the previous batch's frames, uint8 (B, H, W, 3) still on the device
    batches = batched(iter_video_frames(driving_path, img_shape), batch_size)
    with tqdm(total=num_frames, unit="frame", disable=not progress, desc="animating") as bar, \
            prefetched(np.stack(batch) for batch in batches) as decoded, BackgroundWriter(writer) as encoder:
        for frames in decoded:  # (B, H, W, 3) float32
            prediction = to_uint8(animator(frames_to_tensor(frames, device))["prediction"])  # (B, H, W, 3), queued
            if pending is not None:
                encoder.write(pending.cpu().numpy())
                bar.update(len(pending))
            pending = prediction
        if pending is not None:
            encoder.write(pending.cpu().numpy())
            bar.update(len(pending))
    return writer.num_frames


# ----------------------------------------------------------------------------------------------------------
# --mode animate


def video_frames_array(video):
    """A test item's video (C, T, H, W) as frames (T, H, W, C)."""
    return np.asarray(video).transpose(1, 2, 3, 0)


def animate_pair(animator, driving_frames, writer, visualizer, batch_size, device):
    """Animate ``driving_frames`` (T, H, W, 3), writing a visualisation frame per driving frame to ``writer``.

    Returns the generated frames, uint8 (T, H, W, 3). The visualisation is encoded in a thread beside the model
    (``media.BackgroundWriter``).
    """
    predictions = []
    with BackgroundWriter(writer) as encoder:
        for batch in batched(driving_frames, batch_size):
            driving = frames_to_tensor(batch, device)  # (B, 3, H, W)
            out = animator(driving)
            B, _, H, _ = driving.shape
            source = animator.source_image.expand(B, -1, -1, -1)  # (B, 3, H, W)
            encoder.write(visualizer.visualize(driving, source, out).reshape(B, H, -1, 3))  # (B, H, n * W, 3)
            predictions.append(tensor_to_uint8(out["prediction"]))  # (B, H, W, 3)
    return np.concatenate(predictions)  # (T, H, W, 3)


def animate(config, models, checkpoint_path, log_dir, dataset, device, batch_size=None, config_name="the config",
            precision="fp32"):
    """``--mode animate``: each test pair's source video's first frame animated with the driving video.

    Pairs come from PairedDataset (``animate_params.num_pairs``; the dataset's ``pairs_list`` or seeded random
    pairs); the mode is ``animate_params.mode``. Writes, under ``<log_dir>/animation/``, a visualisation video
    ``<driving>-<source><format>`` per pair and the generated frames side by side as ``png/<driving>-<source>.png``;
    all of them once every pair is done, so a stopped run leaves earlier outputs as they were. ``precision``:
    see ``Animator``.
    """
    check_precision(precision)
    params = require_section(config, "animate_params", config_name)
    mode = params["mode"]
    names = ("generator", "region_predictor") + (("avd_network",) if mode == "avd" else ())
    networks = load_into(models, checkpoint_path, names, device, config_name, avd_needed_by="animate_params.mode "
                         "'avd'", instead="set animate_params.mode to relative or standard")
    pairs = PairedDataset(dataset, number_of_pairs=params["num_pairs"])
    visualizer = Visualizer(**config.get("visualizer_params", {}))
    batch_size = batch_size or default_batch_size(device)
    out_dir = Path(log_dir) / "animation"
    # SIGTERM as Ctrl-C: the earlier outputs kept as they were; a complete run replaces them whole
    inputs = {"checkpoint": checkpoint_path, "dataset": dataset.root_dir}
    with signals_as_interrupts(), staged_folder(out_dir, replace=True, inputs=inputs) as staging:
        for item in tqdm(pairs, desc=f"animating ({mode})", unit="pair"):
            source = frames_to_tensor(video_frames_array(item["source_video"])[:1], device)  # (1, 3, H, W)
            animator = Animator(source, networks["generator"], networks["region_predictor"],
                                networks.get("avd_network"), mode=mode, precision=precision, batch_size=batch_size)
            name = f"{strip_extension(item['driving_name'])}-{strip_extension(item['source_name'])}"
            with VideoWriter(staging / (name + params["format"]), fps=DEFAULT_FPS) as writer:
                frames = animate_pair(animator, video_frames_array(item["driving_video"]), writer, visualizer,
                                      batch_size, device)  # (T, H, W, 3)
            write_image(staging / "png" / (name + ".png"), np.concatenate(list(frames), axis=1))  # (H, T * W, 3)
    print(f"animated {len(pairs)} pairs ({mode}) into {out_dir}")
    return out_dir


def make_animation(source_image, driving_video, generator, region_predictor, avd_network,
                   animation_mode="standard", cpu=False, batch_size=None, adapt_movement_scale=True, initial_frame=0,
                   precision="fp32", compile=False):
    """The reference's API: animate ``source_image`` (H, W, 3) in [0, 1] with ``driving_video`` (a sequence of
    (H, W, 3) frames); returns a list of (H, W, 3) float32 frames in [0, 1], one per driving frame.

    Runs on the networks' device (``cpu`` is kept for the reference's signature). Relative motion is measured
    from driving frame ``initial_frame``. ``batch_size``: driving frames per forward pass (default:
    ``default_batch_size``); ``precision`` and ``compile``: see ``Animator``.
    """
    device = next(generator.parameters()).device
    batch_size = batch_size or default_batch_size(device)
    source = frames_to_tensor([source_image], device)  # (1, 3, H, W)
    animator = Animator(source, generator, region_predictor, avd_network, mode=animation_mode,
                        adapt_movement_scale=adapt_movement_scale, precision=precision, compile=compile,
                        batch_size=batch_size)
    animator.set_initial(frames_to_tensor([driving_video[initial_frame]], device))
    predictions = []
    for batch in batched(driving_video, batch_size):
        prediction = animator(frames_to_tensor(batch, device))["prediction"]  # (B, 3, H, W)
        predictions.extend(prediction.permute(0, 2, 3, 1).cpu().numpy())  # (H, W, 3) each
    return predictions
