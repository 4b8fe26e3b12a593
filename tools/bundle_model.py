#!/usr/bin/env python
"""Bundle a trained model with the project: the checkpoint in the published format and the demo's sample media.

    python tools/bundle_model.py --checkpoint log/puppets64_.../00000019-cpk-avd.pth --config config/puppets64.yaml
    python tools/bundle_model.py --config config/puppets64.yaml --only teaser     # redo the teaser alone

Writes to ``--out`` (default ``sup-mat``), checking every input first and replacing the previous files only
when every step has succeeded:

- ``<config name>.pth``: the generator, region predictor, background predictor and AVD network state dicts and
  the epochs, without optimizer states, floating weights stored in float16 (they load into float32 modules);
  refused above ``--max-mb`` megabytes. Read back and loaded strictly before the tool says it is done.
- ``source.png``: the first frame of the source video of a test pair (``--pair``, a row of test_pairs.csv).
- ``driving.mp4``: the pair's driving video, a clip of another test identity, at ``--fps``.
- ``teaser.gif``: the driving video in the first column, then test identities animated by it with the bundled
  model in avd mode; above each animation its source frame. Cells are enlarged ``--zoom`` times (at 64x64, four
  sources and 48 frames make about 1.5 MB at zoom 1, 3.5 MB at zoom 2).
"""
import argparse
import os
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: the project's modules live one folder up
    sys.path.insert(0, str(REPO_ROOT))

from animate import Animator, frames_to_tensor, tensor_to_uint8  # noqa: E402
from checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint  # noqa: E402
from config import ConfigError, load_config  # noqa: E402
from device import pick_device  # noqa: E402
from errors import one_line  # noqa: E402
from frames_dataset import identity_of  # noqa: E402
from inference import load_networks, missing_avd_error  # noqa: E402
from media import VideoReadError, VideoWriter, check_outputs, read_video, staged_folder  # noqa: E402
from modules.build import MODEL_NAMES, build_models  # noqa: E402
from tools.eval_cli import EvalError, frame_size  # noqa: E402
from tools.eval_transfer import read_test_pairs  # noqa: E402

STEPS = ("checkpoint", "media", "teaser")
MAX_MB = 20  # upper bound, in 10**6 bytes: the bundle ships inside the repository, so every clone carries it
EPOCHS = ("epoch_reconstruction", "epoch_avd")


class BundleError(RuntimeError):
    """The bundle cannot be made; the message names the file and what is wrong with it."""


def export_checkpoint(checkpoint_path, config_path, out_path, max_mb=MAX_MB):
    """Write the four networks of ``checkpoint_path`` (and its epochs) to ``out_path`` in float16; returns bytes.

    Every network must be in the checkpoint and fit ``config_path`` strictly (a second-stage checkpoint).
    """
    config = load_config(config_path)
    if "avd_network" not in read_checkpoint(checkpoint_path):
        raise missing_avd_error(checkpoint_path, "a bundle", "bundle the second stage's, <epoch>-cpk-avd.pth")
    models = build_models(config)
    checkpoint = load_checkpoint(checkpoint_path, models, config_name=str(config_path))
    epochs = {key: checkpoint[key] for key in EPOCHS if key in checkpoint}
    for name, model in models.items():
        if not all(torch.isfinite(value.half()).all() for value in model.state_dict().values()
                   if value.is_floating_point()):
            raise BundleError(f"{checkpoint_path}: the {name} weights overflow float16 (or are not finite)")
    new = save_checkpoint(Path(out_path).with_name(Path(out_path).name + ".new"), models, half=True, **epochs)
    size = new.stat().st_size
    try:  # a bundle already at out_path stays until the new one is known good
        if size > max_mb * 10 ** 6:
            raise BundleError(f"{out_path}: {size / 10 ** 6:.1f} MB in float16, over the {max_mb} MB limit: use a "
                              "smaller model")
        load_checkpoint(new, build_models(config), config_name=str(config_path))  # it loads back strictly
    except BaseException:
        new.unlink()
        raise
    os.replace(new, out_path)
    return size


def describe_checkpoint(path):
    """One line on a bundled file: size, networks, epochs, dtypes of its floating weights."""
    checkpoint = read_checkpoint(path)
    dtypes = {str(value.dtype) for name in MODEL_NAMES if name in checkpoint for value in checkpoint[name].values()
              if value.is_floating_point()}
    epochs = ", ".join(f"{key} {checkpoint[key]}" for key in EPOCHS if key in checkpoint)
    return (f"{path}: {Path(path).stat().st_size / 10 ** 6:.2f} MB, networks "
            f"{', '.join(name for name in MODEL_NAMES if name in checkpoint)}; {epochs}; weights {', '.join(dtypes)}")


# ----------------------------------------------------------------------------------------------------------
# Sample media


def test_pair(data, index):
    """(source video, driving video) of row ``index`` of ``<data>/test_pairs.csv``, of different identities."""
    rows = read_test_pairs(data)
    if not 0 <= index < len(rows):
        raise BundleError(f"{Path(data) / 'test_pairs.csv'}: no pair {index}; it lists {len(rows)}")
    source, driving = rows[index]["source"], rows[index]["driving"]
    if identity_of(source) == identity_of(driving):
        raise BundleError(f"{Path(data) / 'test_pairs.csv'}: pair {index} animates {source} with a clip of the "
                          f"same identity ({driving}); choose another --pair")
    return source, driving


def to_uint8(frames):
    """Frames float in [0, 1] (..., H, W, 3) -> uint8, rounded."""
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def write_media(data, out, frame_shape, pair=0, fps=12):
    """``source.png`` and ``driving.mp4`` from test pair ``pair``; returns (source video, driving video)."""
    source, driving = test_pair(data, pair)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    iio.imwrite(out / "source.png", to_uint8(read_video(Path(data) / "test" / source, frame_shape)[0]))
    with VideoWriter(out / "driving.mp4", fps) as writer:
        writer.write(to_uint8(read_video(Path(data) / "test" / driving, frame_shape)))  # (T, H, W, 3)
    return source, driving


def teaser_sources(data, first, driving, count):
    """Up to ``count`` test videos, one per identity other than the driving video's, ``first`` first."""
    videos = sorted(path.name for path in (Path(data) / "test").iterdir() if path.is_dir())
    chosen, identities = [], {identity_of(driving)}
    for video in [first] + videos:
        if identity_of(video) not in identities and len(chosen) < count:
            chosen.append(video)
            identities.add(identity_of(video))
    return chosen


def animate_source(networks, source, driving, batch_size=16):
    """The source (1, C, H, W) animated by driving frames (T, C, H, W) in avd mode: uint8 (T, H, W, 3)."""
    generator, region_predictor, avd_network = networks
    animator = Animator(source, generator, region_predictor, avd_network, mode="avd")
    frames = [tensor_to_uint8(animator(batch)["prediction"]) for batch in torch.split(driving, batch_size)]
    return np.concatenate(frames)  # (T, H, W, 3)


def teaser_frames(driving, sources, animations, zoom=1):
    """Grid frames: the driving video, then each animation, side by side; the source frames above them.

    Args: driving (T, H, W, 3), sources [(H, W, 3)], animations [(T, H, W, 3)], all uint8.
    Returns uint8 (T, 2 * zoom * H, (1 + n) * zoom * W, 3); the top-left cell is white.
    """
    T = len(driving)
    top = np.concatenate([np.full_like(sources[0], 255)] + list(sources), axis=1)  # (H, (1 + n) W, 3)
    bottom = np.concatenate([driving] + list(animations), axis=2)  # (T, H, (1 + n) W, 3)
    grid = np.concatenate([np.broadcast_to(top, (T, *top.shape)), bottom], axis=1)  # (T, 2H, (1 + n) W, 3)
    return grid.repeat(zoom, axis=1).repeat(zoom, axis=2)  # nearest-neighbour enlargement


@torch.inference_mode()
def write_teaser(config_path, checkpoint_path, data, out, driving_path, sources, fps=12, zoom=1, device="cpu"):
    """``<out>/teaser.gif``: ``sources`` (test videos) animated by the driving video at ``driving_path``."""
    frame_shape = frame_size(load_config(config_path))
    networks = tuple(load_networks(config_path, checkpoint_path, device, avd_needed_by="the teaser (avd mode)",
                                   instead="bundle a second-stage checkpoint").values())
    driving = read_video(driving_path, frame_shape)  # (T, H, W, 3), as the demo reads it
    driving_tensor = frames_to_tensor(driving, device)  # (T, C, H, W)
    stills, animations = [], []
    for video in sources:
        still = read_video(Path(data) / "test" / video, frame_shape)[:1]  # (1, H, W, 3)
        stills.append(to_uint8(still[0]))
        animations.append(animate_source(networks, frames_to_tensor(still, device), driving_tensor))
    path = Path(out) / "teaser.gif"
    # Pillow picks a palette per frame: cleaner than the fixed, dithered one of ffmpeg (animate.VideoWriter).
    iio.imwrite(path, teaser_frames(to_uint8(driving), stills, animations, zoom), plugin="pillow",
                duration=1000 / fps, loop=0)
    return path


# ----------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="second-stage checkpoint to bundle (needed by the checkpoint step)")
    parser.add_argument("--config", default="config/puppets64.yaml", help="its config (default: config/puppets64.yaml)")
    parser.add_argument("--out", default="sup-mat", help="output folder (default: sup-mat)")
    parser.add_argument("--data", default="data/puppets", help="the puppet set (default: data/puppets)")
    parser.add_argument("--only", nargs="+", choices=STEPS, default=list(STEPS),
                        help="steps to (re)do (default: all); the teaser uses the bundled checkpoint in --out")
    parser.add_argument("--pair", type=int, default=0, help="row of test_pairs.csv for source and driving (default: 0)")
    parser.add_argument("--sources", type=int, default=4, help="identities animated in the teaser (default: 4)")
    parser.add_argument("--fps", type=float, default=12, help="frame rate of driving.mp4 and the teaser (default: 12)")
    parser.add_argument("--zoom", type=int, default=1,
                        help="enlargement of the teaser's cells (default: 1; 2 makes a GIF about 2.5 times larger)")
    parser.add_argument("--max-mb", type=float, default=MAX_MB,
                        help=f"size limit of the checkpoint in 10**6 bytes (default: {MAX_MB})")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    if "checkpoint" in args.only and not args.checkpoint:
        parser.error("--checkpoint is needed to bundle the model (or pass --only media teaser)")
    if args.sources < 1 or args.zoom < 1 or args.fps <= 0:
        parser.error("--sources and --zoom must be at least 1 and --fps positive")
    return args


def check_inputs(args):
    """Every input the steps of ``args`` need, checked before any work: returns (config, frame shape, pair)."""
    out, steps = Path(args.out), set(args.only)
    config = load_config(args.config)
    if out.exists() and not out.is_dir():
        raise BundleError(f"{out}: --out is a file; expected a folder (it is made when missing)")
    if "checkpoint" in steps and not Path(args.checkpoint).is_file():
        raise BundleError(f"{args.checkpoint}: checkpoint file not found")
    written = {"bundled checkpoint": out / f"{Path(args.config).stem}.pth" if "checkpoint" in steps else None,
               "source image": out / "source.png" if "media" in steps else None,
               "driving video": out / "driving.mp4" if "media" in steps else None,
               "teaser": out / "teaser.gif" if "teaser" in steps else None}
    check_outputs(written, {"--checkpoint": args.checkpoint, "--config": args.config})  # MediaError, one line
    pair = None
    if steps & {"media", "teaser"}:
        pair = test_pair(args.data, args.pair)
        for video in pair:
            if not (Path(args.data) / "test" / video).exists():
                raise BundleError(f"{Path(args.data) / 'test' / video}: not found (test pair {args.pair} names it)")
    # The teaser animates with the bundled checkpoint and driving video: this run's, else those already in --out.
    for step, needed in (("checkpoint", out / f"{Path(args.config).stem}.pth"), ("media", out / "driving.mp4")):
        if "teaser" in steps and step not in steps and not needed.is_file():
            raise BundleError(f"{needed}: not found; the teaser needs it: add the {step} step to --only")
    return config, frame_size(config), pair


def bundle(args):
    """Run the steps of parsed arguments; prints what each wrote.

    Every input is checked first; every file is written to a staging folder beside ``--out`` and moved over
    the previous bundle only once all steps have succeeded, so a failing step never leaves half a bundle.
    """
    config_path, steps = args.config, set(args.only)
    _, frame_shape, pair = check_inputs(args)
    out = Path(args.out)
    name = f"{Path(config_path).stem}.pth"
    with staged_folder(out) as stage:
        if "checkpoint" in steps:
            export_checkpoint(args.checkpoint, config_path, stage / name, args.max_mb)
        if "media" in steps:
            write_media(args.data, stage, frame_shape, args.pair, args.fps)
        if "teaser" in steps:
            sources = teaser_sources(args.data, *pair, args.sources)
            staged_or_bundled = {file: stage / file if (stage / file).is_file() else out / file
                                 for file in (name, "driving.mp4")}
            write_teaser(config_path, staged_or_bundled[name], args.data, stage, staged_or_bundled["driving.mp4"],
                         sources, args.fps, args.zoom, pick_device(args.device))
    if "checkpoint" in steps:
        print(describe_checkpoint(out / name))
    if "media" in steps:
        print(f"{out / 'source.png'}: first frame of {pair[0]}; {out / 'driving.mp4'}: {pair[1]}")
    if "teaser" in steps:
        print(f"{out / 'teaser.gif'}: {', '.join(sources)} animated by {out / 'driving.mp4'} "
              f"({(out / 'teaser.gif').stat().st_size / 10 ** 6:.2f} MB)")


def main(argv=None):
    args = parse_args(argv)
    try:
        bundle(args)
    except (BundleError, EvalError, ConfigError, CheckpointError, VideoReadError, ValueError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"error: interrupted; {args.out} is as it was", file=sys.stderr)
        return 130
    except OSError as error:  # a folder that cannot be written, a full disk
        print(f"error: {error.filename or args.out}: cannot write the bundle: {error.strerror or error}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
