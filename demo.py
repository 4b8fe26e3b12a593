"""Animate a source image with the motion of a driving video (METHOD.md §7).

    python demo.py                                    # the bundled example (sup-mat/) with the bundled model
    python demo.py --config config/vox256.yaml --checkpoint vox256.pth --source_image face.png \\
        --driving_video talk.mp4 --result_video result.mp4 --mode relative --find_best_frame --audio

The driving video is streamed: frames are decoded, animated in batches and encoded as they go, so memory does
not grow with its length; the result keeps its duration and frame count. The result is written to a temporary
file and renamed at the end: Ctrl-C or SIGTERM leaves an earlier result as it was. The reference's Python API
is kept: ``load_checkpoints`` and ``make_animation``.
"""
import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from animate import (ANIMATION_MODES, DEFAULT_FPS, PRECISIONS, Animator, animate_video, default_batch_size,
                     find_best_frame, frames_to_tensor, make_animation, read_frame)  # noqa: F401 (the reference's API)
from checkpoint import CheckpointError
from config import ConfigError, check_frame_size, load_config
from errors import Interrupted, one_line, signals_as_interrupts
from inference import load_networks
from media import (MediaError, VideoWriter, check_not_an_input, check_writable, ends_early, image_info, read_image,
                   video_info)

REPO_ROOT = Path(__file__).resolve().parent
# The bundled example: what `python demo.py` runs with no arguments.
BUNDLED = {"config": "config/puppets64.yaml", "checkpoint": "sup-mat/puppets64.pth",
           "source_image": "sup-mat/source.png", "driving_video": "sup-mat/driving.mp4"}
AUTHORS_IMG_SHAPE = (384, 384)  # the authors' demo's --img_shape, for configs whose frame_shape is null


class DemoError(RuntimeError):
    """Input the demo cannot use; the message names the file and what is wrong with it."""


def note(message):
    print(f"note: {message}", file=sys.stderr)


def load_checkpoints(config_path, checkpoint_path, cpu=False, device=None):
    """The reference's API: (generator, region_predictor, avd_network) in eval mode on the CPU (``cpu``), on
    ``device`` ('auto', 'cpu', 'cuda', 'cuda:N') or else on CUDA when present; avd_network is None when the
    checkpoint has none."""
    networks = load_networks(config_path, checkpoint_path, "cpu" if cpu else (device or "auto"))
    return networks["generator"], networks["region_predictor"], networks.get("avd_network")


# ----------------------------------------------------------------------------------------------------------
# Inputs, with a note for each thing changed to use them


def read_source(path, img_shape):
    """The source image as (H, W, 3) float32 at ``img_shape``; raises MediaError naming the file."""
    image = read_image(path, img_shape)
    info = image_info(path)
    if info.alpha:
        note(f"{path} has an alpha channel; it was dropped (the image is used as RGB)")
    if info.grey:
        note(f"{path} is a grey-scale image; it was used as RGB")
    if min(info.height / img_shape[0], info.width / img_shape[1]) < 0.25:
        note(f"{path} is only {info.height}x{info.width} pixels; it was enlarged to {img_shape[0]}x{img_shape[1]}, "
             "so the result will be blurry: use a larger image")
    _note_resize(path, "image", info.height, info.width, img_shape)
    return image


def _note_resize(path, what, height, width, img_shape):
    if height * img_shape[1] != width * img_shape[0]:
        note(f"{path}: the {what} is {height}x{width}, not of the model's aspect ratio; it was resized to "
             f"{img_shape[0]}x{img_shape[1]} (crop it around the object for better results)")


def open_driving(path, img_shape):
    """Probe the driving video: its VideoInfo, with the rate the result is written at as ``fps``."""
    if not Path(path).exists():
        raise DemoError(f"{path}: driving video not found")
    info = video_info(path, img_shape)  # raises MediaError naming the file
    _note_resize(path, "video", info.height, info.width, img_shape)
    if ends_early(info):
        note(f"{path} ends early, at frame {info.num_frames} of the {info.expected_frames} its header promises "
             f"(a truncated file?); the result has {info.num_frames} frames")
    if not info.fps:
        note(f"{path} does not say its frame rate; the result uses {DEFAULT_FPS:g} fps")
        info = info._replace(fps=DEFAULT_FPS)
    return info


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
                             "the source's regions; avd (the default, as the reference): animation via "
                             "disentanglement (needs an AVD network)")
    parser.add_argument("--img_shape", type=img_shape_arg, default=None,
                        help="H,W the model works at (default: the config's dataset_params.frame_shape; 384,384 "
                             "as the authors' demo when it is null)")
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
    for name in ("batch_size", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    return args


def resolve_inputs(args):
    """Fill unset paths with the bundled example's; check the inputs exist and the result can be written."""
    missing = []
    for key, bundled in BUNDLED.items():
        if getattr(args, key) is None:
            setattr(args, key, str(REPO_ROOT / bundled))
            missing += [] if (REPO_ROOT / bundled).exists() else [bundled]
    if missing:
        raise DemoError(f"the bundled example is incomplete: {', '.join(missing)} missing in {REPO_ROOT} (the "
                        f"bundled model is not published yet); pass --config, --checkpoint, --source_image and "
                        f"--driving_video")
    for key in ("config", "checkpoint", "source_image"):
        if not Path(getattr(args, key)).exists():
            raise DemoError(f"{getattr(args, key)}: {key.replace('_', ' ')} not found")
    result = Path(args.result_video)
    check_not_an_input(result, {key.replace("_", " "): getattr(args, key) for key in BUNDLED})
    VideoWriter(result, DEFAULT_FPS, audio_from=args.driving_video if args.audio else None)  # a format it writes
    check_writable(result)
    return args


def choose_img_shape(args):
    """--img_shape, else the config's frame_shape, else (null) the authors' 384,384; checked against the config."""
    config = load_config(args.config)
    img_shape, what = args.img_shape, f"--img_shape {','.join(map(str, args.img_shape or ()))}"
    if img_shape is None:
        frame_shape = config.get("dataset_params", {}).get("frame_shape", (256, 256))
        img_shape, what = (tuple(frame_shape[:2]), f"{args.config}: dataset_params.frame_shape") if frame_shape \
            else (AUTHORS_IMG_SHAPE, f"the default --img_shape {AUTHORS_IMG_SHAPE[0]},{AUTHORS_IMG_SHAPE[1]}")
        if not frame_shape:
            note(f"{args.config} has frame_shape null (frames at their stored size); the demo works at "
                 f"{img_shape[0]}x{img_shape[1]}, as the authors' demo does: pass --img_shape to change it")
    check_frame_size(config, *img_shape, f"{what} (for {args.config})")
    return img_shape


def choose_initial_frame(animator, args, img_shape, num_frames, batch_size):
    """Measure relative motion from --best_frame, from the frame --find_best_frame finds, or else (by default)
    from the first driving frame."""
    device = animator.source_image.device
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


def demo(args):
    """Run the demo for parsed arguments; returns the result's path."""
    args = resolve_inputs(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    img_shape = choose_img_shape(args)
    networks = load_networks(args.config, args.checkpoint, "cpu" if args.cpu else args.device,
                             avd_needed_by="--mode avd" if args.mode == "avd" else None)
    device = next(networks["generator"].parameters()).device
    batch_size = args.batch_size or default_batch_size(device)
    source = frames_to_tensor([read_source(args.source_image, img_shape)], device)  # (1, 3, H, W)
    info = open_driving(args.driving_video, img_shape)
    if args.audio and not info.audio:
        note(f"{args.driving_video} has no sound track; the result is silent")
    animator = Animator(source, networks["generator"], networks["region_predictor"], networks.get("avd_network"),
                        mode=args.mode, adapt_movement_scale=args.adapt_scale, precision=args.precision,
                        compile=args.compile)
    choose_initial_frame(animator, args, img_shape, info.num_frames, batch_size)
    with VideoWriter(args.result_video, info.fps, audio_from=args.driving_video if args.audio else None) as writer:
        animate_video(animator, args.driving_video, writer, img_shape, batch_size, info.num_frames,
                      progress=not args.quiet)
    return Path(args.result_video)


def main(argv=None):
    args = parse_args(argv)
    try:
        with signals_as_interrupts():
            result = demo(args)
    except Interrupted as stop:
        print(f"interrupted by {stop.signal_name}: {args.result_video} was not written (an earlier file there is "
              "kept)", file=sys.stderr)
        return stop.exit_code
    except (DemoError, ConfigError, CheckpointError, MediaError, ValueError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    except OSError as error:  # a disk that fills up, a folder made read-only meanwhile
        print(f"error: {error.filename or args.result_video}: {error.strerror or error}", file=sys.stderr)
        return 1
    print(f"wrote {result}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
