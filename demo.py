"""Animate a source image with the motion of a driving video (METHOD.md §7).

    python demo.py                                    # the bundled example (sup-mat/) with the bundled model
    python demo.py --config config/vox256.yaml --checkpoint vox256.pth --source_image face.png \\
        --driving_video talk.mp4 --result_video result.mp4 --mode relative --find_best_frame --audio

The driving video is streamed: frames are decoded, animated in batches and encoded as they go, so memory does
not grow with its length; the result keeps its frame rate and frame count. The Python API used by notebooks
keeps the reference's signatures: ``load_checkpoints`` and ``make_animation``.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import torch
from tqdm import tqdm

from animate import (ANIMATION_MODES, DEFAULT_FPS, PRECISIONS, Animator, VideoWriter, batched, default_batch_size,
                     frames_to_tensor, to_uint8)
from checkpoint import CheckpointError, load_checkpoint
from config import ConfigError, load_config
from device import configure, pick_device
from frames_dataset import VIDEO_EXTENSIONS, VideoReadError, iter_video_frames, read_image, video_info
from modules.build import build_models

REPO_ROOT = Path(__file__).resolve().parent
# The bundled example: what `python demo.py` runs with no arguments.
BUNDLED = {"config": "config/puppets64.yaml", "checkpoint": "sup-mat/puppets64.pth",
           "source_image": "sup-mat/source.png", "driving_video": "sup-mat/driving.mp4"}


class DemoError(RuntimeError):
    """Input the demo cannot use; the message names the file and what is wrong with it."""


def note(message):
    print(f"note: {message}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------------
# Python API (the reference's signatures)


def load_checkpoints(config_path, checkpoint_path, cpu=False, device=None):
    """Networks for animation from a config and a checkpoint, in eval mode on the CPU (``cpu``), on ``device``
    ('auto', 'cpu', 'cuda', 'cuda:N') or else on CUDA when present.

    Returns (generator, region_predictor, avd_network); avd_network is None when the checkpoint has none.
    """
    device = configure(torch.device("cpu") if cpu else pick_device(device or "auto"))
    models = build_models(load_config(config_path), device)
    needed = {name: models[name] for name in ("generator", "region_predictor", "avd_network")}
    checkpoint = load_checkpoint(checkpoint_path, needed, config_name=str(config_path), map_location=device,
                                 optional=("avd_network",))  # standard and relative modes do without it
    for model in needed.values():
        model.eval()
    avd_network = needed["avd_network"] if "avd_network" in checkpoint else None
    return needed["generator"], needed["region_predictor"], avd_network


def model_device(module):
    return next(module.parameters()).device


def make_animation(source_image, driving_video, generator, region_predictor, avd_network,
                   animation_mode="standard", cpu=False, batch_size=None, adapt_movement_scale=True, initial_frame=0,
                   precision="fp32", compile=False):
    """Animate ``source_image`` (H, W, 3) in [0, 1] with ``driving_video`` (a sequence of (H, W, 3) frames).

    Runs on the networks' device (``cpu`` is kept for the reference's signature; ``load_checkpoints`` decides
    the device). Relative motion is measured from driving frame ``initial_frame``. ``batch_size``: driving
    frames per forward pass (default: ``animate.default_batch_size``); ``precision`` and ``compile``: see
    ``animate.Animator``. Returns a list of (H, W, 3) float32 frames in [0, 1], one per driving frame.
    """
    device = model_device(generator)
    batch_size = batch_size or default_batch_size(device)
    source = frames_to_tensor([source_image], device)  # (1, 3, H, W)
    animator = Animator(source, generator, region_predictor, avd_network, mode=animation_mode,
                        adapt_movement_scale=adapt_movement_scale, precision=precision, compile=compile)
    animator.set_initial(frames_to_tensor([driving_video[initial_frame]], device))
    predictions = []
    for batch in batched(driving_video, batch_size):
        prediction = animator(frames_to_tensor(batch, device))["prediction"]  # (B, 3, H, W)
        predictions.extend(prediction.permute(0, 2, 3, 1).cpu().numpy())
    return predictions


# ----------------------------------------------------------------------------------------------------------
# Streaming the driving video


def read_source(path, img_shape):
    """The source image as (H, W, 3) float32 at ``img_shape``, with a note for what was changed to get there."""
    image = read_image(path, img_shape)  # raises VideoReadError naming the file
    shape = iio.improps(path).shape  # (H, W), (H, W, channels), or (N, H, W, channels) for a multi-frame file
    shape = shape[1:] if len(shape) == 4 else shape
    height, width = shape[:2]
    channels = shape[2] if len(shape) == 3 else 1
    if channels in (2, 4):
        note(f"{path} has an alpha channel; it was dropped (the image is used as RGB)")
    if channels in (1, 2):
        note(f"{path} is a grey-scale image; it was used as RGB")
    _note_resize(path, "image", height, width, img_shape)
    return image


def _note_resize(path, what, height, width, img_shape):
    if height * img_shape[1] != width * img_shape[0]:
        note(f"{path}: the {what} is {height}x{width}, not of the model's aspect ratio; it was resized to "
             f"{img_shape[0]}x{img_shape[1]} (crop it around the object for better results)")


def open_driving(path, img_shape):
    """The driving video's (num_frames, fps); raises DemoError or VideoReadError naming the file."""
    if not os.path.exists(path):
        raise DemoError(f"{path}: driving video not found")
    if os.path.isfile(path) and str(path).lower().endswith(VIDEO_EXTENSIONS) and os.path.getsize(path) > 0 \
            and not has_stream(path, "Video") and has_stream(path, "Audio"):
        raise DemoError(f"{path} contains no frames: it has a sound track and no video stream")
    info = video_info(path, img_shape)
    if not info.num_frames:
        raise DemoError(f"{path} contains no frames")
    _note_resize(path, "video", info.height, info.width, img_shape)
    fps = info.fps
    if not fps:
        note(f"{path} does not say its frame rate; the result uses {DEFAULT_FPS:g} fps")
        fps = DEFAULT_FPS
    return info.num_frames, fps


def frame_batches(path, img_shape, batch_size, device):
    """Driving frames, decoded as they are needed: tensors (B, 3, H, W) on ``device``."""
    for batch in batched(iter_video_frames(path, img_shape), batch_size):
        yield frames_to_tensor(batch, device)


def read_frame(path, img_shape, index, device):
    """Driving frame ``index`` as (1, 3, H, W), decoding no further than it."""
    for t, frame in enumerate(iter_video_frames(path, img_shape)):
        if t == index:
            return frames_to_tensor([frame], device)
    raise DemoError(f"{path}: --best_frame {index} is past its last frame")


def find_best_frame(animator, path, img_shape, batch_size, device, num_frames=None, progress=False):
    """The driving frame whose region layout best matches the source's, by the model's own region predictor
    (so it works for any kind of object).

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


def animate_video(animator, driving_path, result_path, img_shape, fps, num_frames, batch_size, progress=True):
    """Stream the driving video through ``animator`` into ``result_path``; returns the number of frames.

    Each batch's frames are fetched from the device only after the next batch has been queued, so on a GPU the
    host decodes and encodes while the device computes.
    """
    device = model_device(animator.generator)
    pending = None  # the previous batch's frames, uint8 (B, H, W, 3) still on the device
    with VideoWriter(result_path, fps) as writer, \
            tqdm(total=num_frames, unit="frame", disable=not progress, desc="animating") as bar:
        for driving in frame_batches(driving_path, img_shape, batch_size, device):
            prediction = to_uint8(animator(driving)["prediction"])  # (B, H, W, 3), queued
            if pending is not None:
                writer.write(pending.cpu().numpy())
                bar.update(len(pending))
            pending = prediction
        if pending is not None:
            writer.write(pending.cpu().numpy())
            bar.update(len(pending))
    return writer.num_frames


# ----------------------------------------------------------------------------------------------------------
# Sound


def has_stream(path, kind):
    """Whether a media file has a stream of ``kind`` ('Audio' or 'Video'), as ffmpeg lists its streams."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    result = subprocess.run([ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    return re.search(rf"Stream #\S+.*: {kind}:", result.stderr) is not None


def has_audio(path):
    return has_stream(path, "Audio")


def add_audio(video_path, driving_path, result_path):
    """Write ``result_path``: the frames of ``video_path`` (copied, not re-encoded) with the driving video's
    first audio track (as AAC). Returns False, copying the video alone, when the driving video has none."""
    if not has_audio(driving_path):
        note(f"{driving_path} has no sound track; the result is silent")
        shutil.copyfile(video_path, result_path)
        return False
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-i", str(video_path), "-i", str(driving_path),
               "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", str(result_path)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise DemoError(f"{result_path}: could not add the sound of {driving_path}: ffmpeg: {last}")
    return True


# ----------------------------------------------------------------------------------------------------------
# Command line


def img_shape_arg(text):
    try:
        shape = tuple(int(x) for x in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected H,W (two positive integers, e.g. 256,256), got {text!r}")
    return shape


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Animate a source image with the motion of a driving video.")
    parser.add_argument("--config", help=f"model config (default: {BUNDLED['config']})")
    parser.add_argument("--checkpoint", help=f"checkpoint of that model (default: {BUNDLED['checkpoint']})")
    parser.add_argument("--source_image", help=f"image to animate (default: {BUNDLED['source_image']})")
    parser.add_argument("--driving_video", help=f"video whose motion is copied (default: {BUNDLED['driving_video']})")
    parser.add_argument("--result_video", default="result.mp4", help="output video (.mp4, .mov, .mkv, .avi, .gif)")
    parser.add_argument("--mode", default="avd", choices=ANIMATION_MODES,
                        help="standard: the driving regions as they are; relative: the driving motion applied to "
                             "the source's regions; avd (the default, as the reference): animation via disentanglement (needs an AVD network)")
    parser.add_argument("--img_shape", type=img_shape_arg, default=None,
                        help="H,W the model works at (default: the config's dataset_params.frame_shape, else 256,256)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (same as --device cpu)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--adapt_scale", action=argparse.BooleanOptionalAction, default=True,
                        help="relative mode: scale the driving motion by the size ratio of source and driving")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="driving frames per forward pass (default: 8 on a GPU, 4 on the CPU)")
    parser.add_argument("--precision", default="fp32", choices=tuple(PRECISIONS),
                        help="fp32 (default), or bf16/fp16 autocast for GPUs (region geometry stays float32)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks (slow start, faster frames)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: one per core; on a CPU busy with other work, 1 can be faster)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--find_best_frame", action="store_true",
                       help="measure relative motion from the driving frame whose region layout best matches the "
                            "source's (animating forwards and backwards from it)")
    start.add_argument("--best_frame", type=int, default=None, metavar="N",
                       help="measure relative motion from driving frame N")
    parser.add_argument("--audio", action="store_true", help="copy the driving video's sound into the result")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    return args


def resolve_inputs(args):
    """Fill unset paths with the bundled example's; a missing bundled file is reported with all the others."""
    missing = []
    for key, bundled in BUNDLED.items():
        if getattr(args, key) is None:
            path = REPO_ROOT / bundled
            setattr(args, key, str(path))
            if not path.exists():
                missing.append(bundled)
    if missing:
        raise DemoError(f"the bundled example is incomplete: {', '.join(missing)} missing in {REPO_ROOT} (the "
                        f"bundled model is not published yet); pass --config, --checkpoint, --source_image and "
                        f"--driving_video")
    for key in ("config", "checkpoint", "source_image"):
        if not os.path.exists(getattr(args, key)):
            raise DemoError(f"{getattr(args, key)}: {key.replace('_', ' ')} not found")
    return args


def check_result_path(result, audio):
    """Refuse a result the demo cannot write before any work; make its folder."""
    VideoWriter(result, DEFAULT_FPS)  # raises for a format it cannot write
    if audio and result.suffix.lower() == ".gif":
        raise DemoError(f"{result}: a GIF has no sound: write an .mp4, .mov or .mkv to use --audio")
    result.parent.mkdir(parents=True, exist_ok=True)


def choose_initial_frame(animator, args, img_shape, num_frames, batch_size):
    """Measure relative motion from --best_frame, from the frame --find_best_frame finds, or else (by default)
    from the first driving frame."""
    device = model_device(animator.generator)
    if args.find_best_frame:
        index, frame = find_best_frame(animator, args.driving_video, img_shape, batch_size, device, num_frames,
                                       progress=not args.quiet)
        print(f"best frame: {index}", file=sys.stderr)
        animator.set_initial(frame)
    elif args.best_frame is not None:
        if not 0 <= args.best_frame < num_frames:
            raise DemoError(f"{args.driving_video}: --best_frame {args.best_frame} is not a frame of its "
                            f"{num_frames} (0 to {num_frames - 1})")
        animator.set_initial(read_frame(args.driving_video, img_shape, args.best_frame, device))


def write_result(animator, args, img_shape, fps, num_frames, batch_size):
    """Animate the driving video into --result_video, with its sound when --audio."""
    result = Path(args.result_video)
    if not args.audio:
        animate_video(animator, args.driving_video, result, img_shape, fps, num_frames, batch_size,
                      progress=not args.quiet)
        return
    with tempfile.TemporaryDirectory(dir=result.resolve().parent) as folder:
        silent = Path(folder) / ("silent" + result.suffix)
        animate_video(animator, args.driving_video, silent, img_shape, fps, num_frames, batch_size,
                      progress=not args.quiet)
        add_audio(silent, args.driving_video, result)


def demo(args):
    """Run the demo for parsed arguments; returns the result's path."""
    args = resolve_inputs(args)
    check_result_path(Path(args.result_video), args.audio)
    if args.threads:
        torch.set_num_threads(args.threads)
    img_shape = args.img_shape or tuple(load_config(args.config).get("dataset_params", {})
                                        .get("frame_shape", (256, 256))[:2])
    generator, region_predictor, avd_network = load_checkpoints(args.config, args.checkpoint, cpu=args.cpu,
                                                                device=args.device)
    if args.mode == "avd" and avd_network is None:
        raise CheckpointError(f"{args.checkpoint}: checkpoint has no avd_network, which --mode avd needs: use "
                              "--mode relative or standard")
    device = model_device(generator)
    batch_size = args.batch_size or default_batch_size(device)
    source = frames_to_tensor([read_source(args.source_image, img_shape)], device)  # (1, 3, H, W)
    num_frames, fps = open_driving(args.driving_video, img_shape)
    animator = Animator(source, generator, region_predictor, avd_network, mode=args.mode,
                        adapt_movement_scale=args.adapt_scale, precision=args.precision, compile=args.compile)
    choose_initial_frame(animator, args, img_shape, num_frames, batch_size)
    write_result(animator, args, img_shape, fps, num_frames, batch_size)
    return Path(args.result_video)


def one_line(error):
    """An error message on one line: 'header:' lines run into the next, other lines are joined by '; '."""
    text = ""
    for line in (line.strip() for line in str(error).splitlines() if line.strip()):
        text += line if not text else (" " if text.endswith(":") else "; ") + line
    return text


def main(argv=None):
    args = parse_args(argv)
    try:
        result = demo(args)
    except (DemoError, ConfigError, CheckpointError, VideoReadError, ValueError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    print(f"wrote {result}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
