"""Animate a source image with the motion of a driving video (docs/method.md §7).

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

from animate import ANIMATION_MODES, AUTO, AUTO_BAR_DB, PRECISIONS
from animate import make_animation  # noqa: F401 (the reference's API, imported from demo.py)
from checkpoint import CheckpointError
from config import ConfigError
from errors import Interrupted, one_line, signals_as_interrupts
from inference import load_networks
from media import MAX_PIXELS, MediaError
from modules.optimize import COMPILE_MODES
from pipeline import BACKENDS, CROPS, InputError, Request, animate_files

REPO_ROOT = Path(__file__).resolve().parent
# The bundled example: what `python demo.py` runs with no arguments.
BUNDLED = {"config": "config/puppets64.yaml", "checkpoint": "sup-mat/puppets64.pth",
           "source_image": "sup-mat/source.png", "driving_video": "sup-mat/driving.mp4"}
MAX_THREADS = 1024  # far above any CPU's cores; torch hangs creating 100000


DemoError = InputError  # the name older callers catch


def load_checkpoints(config_path, checkpoint_path, cpu=False, device=None):
    """The reference's API: (generator, region_predictor, avd_network) in eval mode on the CPU (``cpu``), on
    ``device`` ('auto', 'cpu', 'cuda', 'cuda:N') or else on CUDA when present; avd_network is None when the
    checkpoint has none."""
    networks = load_networks(config_path, checkpoint_path, "cpu" if cpu else (device or "auto"))
    return networks["generator"], networks["region_predictor"], networks.get("avd_network")


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
    parser.add_argument("--precision", default=AUTO, choices=(AUTO, *PRECISIONS),
                        help="auto (default: the fastest precision the device computes natively whose first frames "
                             f"are within {AUTO_BAR_DB:g} dB of float32's, else fp32; fp32 on CPUs without AVX-512 "
                             "BF16 or AMX), fp32, or bf16 / fp16 autocast (region geometry stays float32)")
    parser.add_argument("--compile", nargs="?", const="default", default=False, choices=COMPILE_MODES,
                        help="torch.compile the networks (slow start, faster frames); --compile reduce-overhead replays "
                             "them as CUDA graphs")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads, 1 to 1024 (default: one per core; on a CPU busy with other work, 1 can be "
                             "faster)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--find_best_frame", action="store_true",
                       help="measure relative motion from the driving frame whose region layout best matches the "
                            "source's (animating forwards and backwards from it)")
    start.add_argument("--best_frame", type=int, default=None, metavar="N",
                       help="measure relative motion from driving frame N")
    parser.add_argument("--audio", action="store_true", help="copy the driving video's sound into the result")
    parser.add_argument("--crop", default="none", metavar="none|auto|face|person|L,T,R,B",
                        help="first crop the source around its face or person (auto: whichever fits) and the "
                             "driving video so its object has the same scale and place, or crop the source to a box "
                             "in its pixels; the boxes are drawn in RESULT.crop.png (needs requirements-app.txt)")
    parser.add_argument("--max_pixels", type=int, default=MAX_PIXELS,
                        help=f"refuse a source image or driving frames of more pixels, from their header, before any "
                             f"work (default {MAX_PIXELS:_}: a 48 MP photo or an 8K frame passes, a decompression bomb "
                             "does not)")
    parser.add_argument("--backend", default="torch", choices=BACKENDS,
                        help="torch (default), or onnxruntime on the CPU (needs requirements-onnx.txt; the graphs "
                             "are exported once per config, checkpoint and size, into ~/.cache/mraa/onnx)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.crop not in CROPS and not all(p.strip().isdigit() for p in args.crop.split(",")):
        parser.error(f"--crop must be one of {', '.join(CROPS)} or LEFT,TOP,RIGHT,BOTTOM, got {args.crop!r}")
    for name in ("batch_size", "threads", "max_pixels"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.threads is not None and args.threads > MAX_THREADS:  # 100000 hangs torch; 2**64 overflows it
        parser.error(f"--threads must be 1 to {MAX_THREADS}, got {args.threads}")
    return args


def resolve_inputs(args):
    """Fill unset paths with the bundled example's."""
    missing = []
    for key, bundled in BUNDLED.items():
        if getattr(args, key) is None:
            setattr(args, key, str(REPO_ROOT / bundled))
            missing += [] if (REPO_ROOT / bundled).exists() else [bundled]
    if missing:
        raise DemoError(f"the bundled example is incomplete: {', '.join(missing)} missing in {REPO_ROOT} (the "
                        f"bundled model is not published yet); pass --config, --checkpoint, --source_image and "
                        f"--driving_video")
    return args


def parse_box(text):
    """--crop LEFT,TOP,RIGHT,BOTTOM: a cropping.Box in source pixels (a CropError, a ValueError, says why not)."""
    import cropping  # optional: requirements-app.txt (OpenCV)
    try:
        return cropping.parse_box(text)
    except cropping.CropError as error:
        raise DemoError(str(error).replace("--box", "--crop", 1)) from None


def request_of(args):
    """The pipeline's Request for parsed arguments."""
    box = parse_box(args.crop) if args.crop not in CROPS else None
    return Request(config=args.config, checkpoint=args.checkpoint, source_image=args.source_image,
                   driving_video=args.driving_video, result_video=args.result_video, mode=args.mode,
                   img_shape=args.img_shape, device="cpu" if args.cpu else args.device, backend=args.backend,
                   adapt_scale=args.adapt_scale, batch_size=args.batch_size, precision=args.precision,
                   compile=args.compile, find_best_frame=args.find_best_frame, best_frame=args.best_frame,
                   audio=args.audio, crop="none" if box else args.crop, crop_box=box, max_pixels=args.max_pixels,
                   progress=not args.quiet)


def demo(args):
    """Run the demo for parsed arguments; returns the result's path."""
    args = resolve_inputs(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    return animate_files(request_of(args))


def with_demo_flags(message):
    """The cropper's hint for a crop by hand names tools/crop.py's flag; the demo's own is --crop."""
    from cropping import HAND_BOX_HINT  # imports without OpenCV
    return message.replace(HAND_BOX_HINT, "give the crop by hand with --crop LEFT,TOP,RIGHT,BOTTOM (pixels of the "
                                          "source image)")


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
        print(f"error: {with_demo_flags(one_line(error))}", file=sys.stderr)
        return 1
    except OSError as error:  # a disk that fills up, a folder made read-only meanwhile
        print(f"error: {error.filename or args.result_video}: {error.strerror or error}", file=sys.stderr)
        return 1
    print(f"wrote {result}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
