"""One source image and one driving video file in, one result video out: what the demo and the web page run.

``Request`` holds the choices (the demo's flags, field for field); ``animate_files(request)`` checks every input
before any work, optionally crops the inputs (``cropping``), loads the networks (``inference``, or ONNX Runtime
with ``backend='onnxruntime'``), then streams the driving video through an ``animate.Animator`` into a result
written atomically (``media.VideoWriter``). Everything a user should know about how their input was used (a
resize, a dropped alpha channel, a truncated video) goes to ``notify`` as one line, so the demo prints it and the
page shows it.
"""
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import torch

import kernel_choice
from animate import AUTO, DEFAULT_FPS, Animator, animate_video, choose_precision, default_batch_size, find_best_frame, \
    first_batch, frames_to_tensor, read_frame
from config import check_frame_size, load_config
from inference import load_networks, missing_avd_error
from media import (MAX_PIXELS, MediaError, TooManyPixelsError, VideoWriter, check_not_an_input, check_pixels,
                   check_writable, ends_early, image_info, read_image, stored_frame_size, video_info)
from model_cards import card_for, where_to_get

AUTHORS_IMG_SHAPE = (384, 384)  # the authors' demo's --img_shape, for configs whose frame_shape is null
BACKENDS = ("torch", "onnxruntime")
CROPS = ("none", "auto", "face", "person")


class InputError(RuntimeError):
    """Input that cannot be animated; the message names the file and what is wrong with it."""


def print_note(message):
    print(f"note: {message}", file=sys.stderr)


@dataclass
class Request:
    """What to animate and how; the fields are the demo's flags."""
    config: str
    checkpoint: str
    source_image: str
    driving_video: str
    result_video: str = "result.mp4"
    mode: str = "avd"
    img_shape: Optional[Tuple[int, int]] = None  # None: the config's frame_shape (384,384 when it is null)
    device: str = "auto"
    backend: str = "torch"
    adapt_scale: bool = True
    batch_size: Optional[int] = None  # None: default_batch_size of the device
    precision: str = "auto"  # fp32, bf16, fp16, or auto: animate.choose_precision
    compile: object = False  # False, or True / a mode of modules.optimize.COMPILE_MODES: torch.compile the per-frame path
    find_best_frame: bool = False
    best_frame: Optional[int] = None
    audio: bool = False
    crop: str = "none"  # none, auto, face or person (cropping.crop_inputs)
    crop_box: Optional[object] = None  # a cropping.Box in the source's pixels: crop the source by hand
    max_pixels: int = MAX_PIXELS  # images and video frames beyond this are refused from their header
    progress: bool = True

    @property
    def crop_preview(self):
        """Where the crop's preview is written: beside the result."""
        return Path(self.result_video).with_suffix(".crop.png")


# ----------------------------------------------------------------------------------------------------------
# Inputs, with a note for each thing changed to use them


def read_source(path, img_shape, notify=print_note):
    """The source image as (H, W, 3) float32 at ``img_shape``; raises MediaError naming the file."""
    image = read_image(path, img_shape)
    info = image_info(path)
    if info.alpha:
        notify(f"{path} has an alpha channel; it was dropped (the image is used as RGB)")
    if info.grey:
        notify(f"{path} is a grey-scale image; it was used as RGB")
    if min(info.height / img_shape[0], info.width / img_shape[1]) < 0.25:
        notify(f"{path} is only {info.height}x{info.width} pixels; it was enlarged to {img_shape[0]}x{img_shape[1]}, "
               "so the result will be blurry: use a larger image")
    _note_resize(path, "image", info.height, info.width, img_shape, notify)
    return image


def _note_resize(path, what, height, width, img_shape, notify):
    if height * img_shape[1] != width * img_shape[0]:
        notify(f"{path}: the {what} is {height}x{width}, not of the model's aspect ratio; it was resized to "
               f"{img_shape[0]}x{img_shape[1]} (crop it around the object for better results: --crop auto)")


def note_smaller_result(request, img_shape, notify=print_note):
    """Say so when the result will be smaller than both of the user's inputs (before any crop): a model animates
    at the size it was trained at."""
    source, driving = image_info(request.source_image)[:2], stored_frame_size(request.driving_video)
    if min(source[0], driving[0]) > img_shape[0] and min(source[1], driving[1]) > img_shape[1]:
        notify(f"the result is {img_shape[0]}x{img_shape[1]}, smaller than the inputs (source {source[0]}x"
               f"{source[1]}, driving {driving[0]}x{driving[1]}): the model animates at the size of its training "
               f"data; --img_shape H,W asks for another size, at some cost in quality")


def open_driving(path, img_shape, notify=print_note):
    """Probe the driving video: its VideoInfo, with the rate the result is written at as ``fps``."""
    if not Path(path).exists():
        raise InputError(f"{path}: driving video not found")
    info = video_info(path, img_shape)  # raises MediaError naming the file
    _note_resize(path, "video", info.height, info.width, img_shape, notify)
    if ends_early(info):
        notify(f"{path} ends early, at frame {info.num_frames} of the {info.expected_frames} its header promises "
               f"(a truncated file?); the result has {info.num_frames} frames")
    if not info.fps:
        notify(f"{path} does not say its frame rate; the result uses {DEFAULT_FPS:g} fps")
        info = info._replace(fps=DEFAULT_FPS)
    return info


def check_request(request):
    """Before any work: the inputs exist and are not too large, the result (and the crop's picture) is writable
    in a format we write, and names no input."""
    for key in ("config", "checkpoint", "source_image", "driving_video"):
        if not Path(getattr(request, key)).exists():
            where = where_to_get(request.checkpoint) if key == "checkpoint" else ""
            raise InputError(f"{getattr(request, key)}: {key.replace('_', ' ')} not found{where}")
    if request.backend not in BACKENDS:
        raise InputError(f"backend {request.backend!r}: expected one of {', '.join(BACKENDS)}")
    if request.crop not in CROPS:
        raise InputError(f"crop {request.crop!r}: expected one of {', '.join(CROPS)}")
    result = Path(request.result_video)
    inputs = {key.replace("_", " "): getattr(request, key)
              for key in ("config", "checkpoint", "source_image", "driving_video")}
    check_not_an_input(result, inputs)
    check_writable(result)
    VideoWriter(result, DEFAULT_FPS, audio_from=request.driving_video if request.audio else None)  # a format it writes
    check_input_pixels(request)
    if request.crop != "none" or request.crop_box is not None:
        check_crop(request, {**inputs, "result": result})


def check_input_pixels(request):
    """Refuse a source image or driving frames of more than ``request.max_pixels`` from their headers, before
    anything is decoded: a decompression bomb is a few KB that decode to gigabytes."""
    check_pixels(request.source_image, request.max_pixels)
    try:
        check_pixels(request.driving_video, request.max_pixels, video=True)
    except TooManyPixelsError:
        raise
    except MediaError:  # not a video it can read: the probe says exactly what is wrong with it
        video_info(request.driving_video)
        raise


def check_crop(request, inputs):
    """The crop's picture (beside the result) names no input and can be written; a box drawn by hand lies inside
    the source. Named by the demo's flag, as the rest of a Request."""
    preview = request.crop_preview
    check_not_an_input(preview, inputs)
    if preview.is_dir():
        raise InputError(f"{preview} is a folder: --crop draws its boxes in a picture of that name, beside the "
                         "result; move the folder or choose another --result_video")
    check_writable(preview)
    box = request.crop_box
    if box is not None:
        height, width = image_info(request.source_image)[:2]
        if box.right > width or box.bottom > height:
            raise InputError(f"--crop {','.join(map(str, box))}: outside {request.source_image}, which is "
                             f"{width}x{height} pixels (width x height): give a box inside it")


def choose_img_shape(config_path, img_shape=None, notify=print_note):
    """The (H, W) a model animates at: ``img_shape`` (--img_shape), else the config's frame_shape, else (null) the
    authors' 384,384, with a note; checked against the config's networks (ConfigError naming the multiple)."""
    config = load_config(config_path)
    what = "--img_shape"
    if img_shape is None:
        frame_shape = config.get("dataset_params", {}).get("frame_shape", (256, 256))
        img_shape, what = (tuple(frame_shape[:2]), "dataset_params.frame_shape") if frame_shape \
            else (AUTHORS_IMG_SHAPE, "the authors' default --img_shape")
        if not frame_shape:
            notify(f"{config_path} has frame_shape null (frames at their stored size); the demo works at "
                   f"{img_shape[0]}x{img_shape[1]}, as the authors' demo does: pass --img_shape to change it")
    check_frame_size(config, *img_shape, what, config_path)
    return tuple(img_shape)


def choose_initial_frame(animator, request, img_shape, num_frames, batch_size, notify=print_note):
    """Measure relative motion from --best_frame, from the frame --find_best_frame finds, or else (by default)
    from the first driving frame."""
    device = animator.source_image.device
    if request.find_best_frame:
        index, frame = find_best_frame(animator, request.driving_video, img_shape, batch_size, device, num_frames,
                                       progress=request.progress)
        notify(f"best frame: {index}")
        animator.set_initial(frame)
    elif request.best_frame is not None:
        if not 0 <= request.best_frame < num_frames:
            raise InputError(f"{request.driving_video}: --best_frame {request.best_frame} is not a frame of its "
                             f"{num_frames} (0 to {num_frames - 1})")
        animator.set_initial(read_frame(request.driving_video, img_shape, request.best_frame, device))


# ----------------------------------------------------------------------------------------------------------
# Networks and the run


def load_animation_networks(request, img_shape, notify=print_note):
    """(generator, region_predictor, avd_network or None) for the request's backend and device."""
    avd_needed_by = "--mode avd" if request.mode == "avd" else None
    if request.backend == "onnxruntime":
        import onnx_backend  # optional: requirements-onnx.txt
        if torch.device(request.device if request.device != "auto" else "cpu").type != "cpu":
            raise InputError(f"--backend onnxruntime runs on the CPU; got --device {request.device}")
        if request.precision not in ("fp32", AUTO):
            notify(f"--backend onnxruntime runs its graphs in float32; --precision {request.precision} applies to "
                   "the torch backend only")
        networks = onnx_backend.load_onnx_checkpoints(request.config, request.checkpoint, img_shape,
                                                      notify=notify)
        if avd_needed_by and networks[2] is None:
            raise missing_avd_error(request.checkpoint, avd_needed_by, "use --mode relative or standard")
        return networks
    networks = load_networks(request.config, request.checkpoint, request.device, avd_needed_by=avd_needed_by)
    return networks["generator"], networks["region_predictor"], networks.get("avd_network")


def crop_request(request, folder, img_shape, notify=print_note):
    """The request with its inputs cropped into ``folder`` (cropping.crop_inputs), the preview beside the result."""
    import cropping  # optional: requirements-app.txt (OpenCV)
    target = request.crop if request.crop != "none" else "auto"
    cropped = cropping.crop_inputs(request.source_image, request.driving_video, target, folder,
                                   size=max(img_shape), box=request.crop_box, preview=request.crop_preview,
                                   max_pixels=request.max_pixels)
    notify(f"cropped the inputs (boxes in {request.crop_preview})")
    return Request(**{**request.__dict__, "source_image": str(cropped.source), "driving_video": str(cropped.driving)})


def naming_users_files(notify, cropped, original):
    """``notify`` with the temporary paths of the cropped inputs replaced by 'the crop of <the user's file>':
    a note names a file the user knows."""
    keys = [key for key in ("source_image", "driving_video") if getattr(cropped, key) != getattr(original, key)]
    names = {getattr(cropped, key): f"the crop of {getattr(original, key)}" for key in keys}

    def renamed(message):
        for temporary, name in names.items():
            message = message.replace(temporary, name)
        notify(message)
    return renamed


def animate_files(request, notify=print_note):
    """Run a request; returns the result's path. Raises InputError, MediaError, ConfigError, CheckpointError (each
    naming the file) for input it cannot use; the result is written whole or not at all."""
    check_request(request)
    img_shape = choose_img_shape(request.config, request.img_shape, notify)
    original = request  # the user's files, which the notes name
    with tempfile.TemporaryDirectory(prefix="mraa-crop-") as folder:
        if request.crop != "none" or request.crop_box is not None:
            request = crop_request(request, folder, img_shape, notify)
            notify = naming_users_files(notify, request, original)
        card = card_for(request.checkpoint, request.config)
        if card is not None:  # what the model can animate, before a face is fed to a model of puppets
            notify(f"model {Path(request.checkpoint).name}: {card.line()}")
        generator, region_predictor, avd_network = load_animation_networks(request, img_shape, notify)
        torch_backend = isinstance(generator, torch.nn.Module)
        device = next(generator.parameters()).device if torch_backend else torch.device("cpu")
        batch_size = request.batch_size or default_batch_size(device)
        source = frames_to_tensor([read_source(request.source_image, img_shape, notify)], device)  # (1, 3, H, W)
        info = open_driving(request.driving_video, img_shape, notify)
        note_smaller_result(original, img_shape, notify)
        if request.audio and not info.audio:
            notify(f"{original.driving_video} has no sound track; the result is silent")

        def make_animator(precision, compile=False):
            if torch_backend and kernel_choice.needs_measuring(generator, img_shape, batch_size, device, precision):
                notify("timing the convolution kernels on this machine (once for this model, size, batch and "
                       "precision; about 10 s)")
            return Animator(source, generator, region_predictor, avd_network, mode=request.mode,
                            adapt_movement_scale=request.adapt_scale, optimize=torch_backend, precision=precision,
                            compile=compile, batch_size=batch_size)
        precision = request.precision if torch_backend else "fp32"
        if precision == AUTO:
            precision, note = choose_precision(
                make_animator, lambda: first_batch(request.driving_video, img_shape, batch_size, device), device)
            if note:
                notify(note)
        animator = make_animator(precision, compile=request.compile if torch_backend else False)
        choose_initial_frame(animator, request, img_shape, info.num_frames, batch_size, notify)
        with VideoWriter(request.result_video, info.fps,
                         audio_from=request.driving_video if request.audio else None) as writer:
            animate_video(animator, request.driving_video, writer, img_shape, batch_size, info.num_frames,
                          progress=request.progress)
    return Path(request.result_video)
