"""Train, evaluate and animate from a config: the command line of the project.

    python run.py --config config/vox256.yaml                                  # first stage, new run
    python run.py --config config/vox256.yaml --checkpoint log/<run>/00000009-cpk-reconstruction.pth  # resume
    python run.py --config config/vox256.yaml --mode train_avd --checkpoint log/<run>/00000099-cpk-reconstruction.pth
    python run.py --config config/vox256.yaml --mode reconstruction --checkpoint vox256.pth
    torchrun --nproc_per_node=4 run.py --config config/vox256.yaml           # one process per GPU (DDP)

A new run writes to ``<log_dir>/<config name>_<YYYYmmdd-HHMMSS>/`` with the resolved config copied in; given
``--checkpoint``, the run continues in that checkpoint's folder. Training stopped by Ctrl-C or SIGTERM writes a
checkpoint first and exits with 130 or 143; a problem the user can fix is one ``error:`` line and exit code 1.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from checkpoint import CheckpointError
from config import ConfigError, load_config, require_section, save_config
from device import configure, pick_device
from errors import one_line
import kernel_choice
from modules.build import build_models
from modules.optimize import COMPILE_MODES

MODES = ("train", "train_avd", "reconstruction", "animate")


class UsageError(RuntimeError):
    """A command line that cannot run as given; the message says what to change."""


def parse_args(argv=None):
    first_line, _, rest = __doc__.partition("\n")
    parser = argparse.ArgumentParser(description=first_line, epilog=rest.replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="path to a YAML config (see config/)")
    parser.add_argument("--mode", default="train", choices=MODES)
    parser.add_argument("--log_dir", default="log",
                        help="training: folder under which a new run makes its own folder; reconstruction and "
                             "animate: folder their outputs go to")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint to resume from (train), to start from (train_avd) or to evaluate")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--device_ids", default=None,
                        help="kept for old command lines: the first id picks the GPU; for several GPUs use torchrun")
    parser.add_argument("--mixed_precision", default=None, choices=("none", "bf16", "fp16"),
                        help="--mode train: overrides train_params.mixed_precision (CUDA; bf16 on CPUs that have it)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                        help="--mode reconstruction and animate: fp32 (default), or bf16 / fp16 autocast (bf16 for "
                             "CPUs with AVX-512 BF16 or AMX, and GPUs; region geometry stays float32)")
    parser.add_argument("--compile", nargs="?", const="default", default=False, choices=COMPILE_MODES,
                        help="--mode train: run each step through torch.compile (mode 'default' when none is "
                             "given; 'reduce-overhead' adds CUDA graphs). For GPUs, where launching the step's ~5,000 "
                             "small operations may bound it; compiling takes minutes, once per run")
    parser.add_argument("--metrics", default=None, choices=("face", "body"),
                        help="--mode reconstruction: then AKD and MKR of the face's or the body's keypoints, offline "
                             "(tools/eval_metrics.py; pip install -r requirements-metrics.txt)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and of every epoch")
    parser.add_argument("--verbose", action="store_true", help="print the config and the networks")
    return parser.parse_args(None if argv is None else [str(a) for a in argv])  # paths welcome


def choose_device(args):
    """The device of this process: torchrun's LOCAL_RANK GPU, else --device (or the first of --device_ids)."""
    spec = args.device
    if args.device_ids is not None and spec == "auto" and torch.cuda.is_available():
        ids = [i for i in args.device_ids.split(",") if i.strip()]
        if len(ids) > 1:
            print(f"--device_ids {args.device_ids}: one process drives one GPU; for several GPUs launch with "
                  f"torchrun --nproc_per_node={len(ids)} (see README). Using cuda:{ids[0]}.")
        spec = f"cuda:{ids[0].strip()}"
    try:
        device = pick_device(spec)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return configure(device)


def init_distributed(device):
    """Join the process group torchrun (or a test) set up through the environment; NCCL on GPUs, gloo on CPUs."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def make_log_dir(args, rank):
    """The run's folder. Evaluation modes write under --log_dir itself, so a checkpoint in a read-only folder can
    be evaluated; training continues in the checkpoint's folder when given one, else makes a new time-stamped
    folder under --log_dir (made by rank 0, shared with the other processes)."""
    if args.mode in ("reconstruction", "animate"):
        log_dir = Path(args.log_dir)
        _make_folder(log_dir, f"--log_dir {log_dir}", exist_ok=True)
        if not os.access(log_dir, os.W_OK | os.X_OK):
            raise UsageError(f"--log_dir {log_dir}: the folder is not writable; choose a --log_dir you can write to")
    elif args.checkpoint is not None:
        log_dir = Path(args.checkpoint).parent
        if not os.access(log_dir, os.W_OK | os.X_OK):
            raise UsageError(f"{log_dir}: training continues in the checkpoint's folder, which is not writable: "
                             f"copy the checkpoint into a folder you can write to")
    elif rank == 0:
        log_dir = new_run_folder(Path(args.log_dir), f"{Path(args.config).stem}_{time.strftime('%Y%m%d-%H%M%S')}")
    else:
        log_dir = None
    if dist.is_initialized():
        shared = [str(log_dir) if log_dir is not None else None]
        dist.broadcast_object_list(shared, src=0)
        log_dir = Path(shared[0])
    return log_dir


def new_run_folder(parent, stem):
    """Make ``parent/stem``, or ``stem-2``, ``stem-3``... when another run made it first (two runs started in the
    same second): a folder is claimed by creating it, so no two runs ever share one."""
    for n in range(1, 1000):
        log_dir = parent / (stem if n == 1 else f"{stem}-{n}")
        if _make_folder(log_dir, f"--log_dir {parent}", exist_ok=False):
            return log_dir
    raise UsageError(f"--log_dir {parent}: {stem} and its 998 suffixed names are all taken")


def _make_folder(path, named, exist_ok):
    """mkdir -p ``path``; False when it exists and ``exist_ok`` is False. A folder that cannot be made is a
    UsageError about ``named`` (the argument as the user gave it)."""
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        if not exist_ok:
            return False
        raise UsageError(f"{named}: expected a folder, found a file") from None
    except NotADirectoryError:
        raise UsageError(f"{named}: expected a folder, but a file is in the way ({path})") from None
    except PermissionError:
        raise UsageError(f"{named}: cannot make {path} (permission denied); choose a --log_dir you can write "
                         f"to") from None
    except OSError as e:
        raise UsageError(f"{named}: cannot make {path} ({e.strerror or e})") from None
    return True


def copy_config(config, config_path, log_dir):
    """Save the resolved config in the run's folder; a resumed run with a changed config adds a dated copy."""
    target = log_dir / Path(config_path).name
    if target.exists():
        try:
            if load_config(target) == config:
                return target
        except ConfigError:
            pass
        target = log_dir / f"{Path(config_path).stem}_{time.strftime('%Y%m%d-%H%M%S')}{Path(config_path).suffix}"
    save_config(config, target)
    return target


def make_dataset(config, mode, config_name):
    from config import check_frame_size
    from frames_dataset import FramesDataset
    params = require_section(config, "dataset_params", config_name)
    dataset = FramesDataset(is_train=mode in ("train", "train_avd"), **params)
    if params["frame_shape"] is None:  # frames at their stored size: the first video's must suit the networks
        check_frame_size(config, *dataset.frame_size, f"{dataset.root_dir / dataset.size_source} (frame_shape "
                                                      f"null in {config_name})")
    return dataset


def main(argv=None):
    """Run one mode; returns what the mode returns (the last checkpoint for the training modes)."""
    args = parse_args(argv)
    config = load_config(args.config)
    if args.mixed_precision is not None and args.mode == "train":
        require_section(config, "train_params", args.config)["mixed_precision"] = args.mixed_precision
    if args.compile and args.mode != "train":
        raise UsageError(f"--compile is for --mode train; --mode {args.mode} runs uncompiled")
    if args.mode != "train" and args.checkpoint is None:
        what = "a first-stage checkpoint, <run>/<epoch>-cpk-reconstruction.pth" if args.mode == "train_avd" else \
            "a trained or published checkpoint"
        raise UsageError(f"--mode {args.mode} needs --checkpoint ({what})")
    if args.precision != "fp32" and args.mode not in ("reconstruction", "animate"):
        raise UsageError(f"--precision is for --mode reconstruction and animate; --mode {args.mode} takes "
                         f"--mixed_precision (or train_params.mixed_precision)")
    if args.metrics is not None:
        check_metrics(args)
    try:
        kernel_choice.policy()  # read before any work: a bad MRAA_KERNELS is one line, not a failure mid-run
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise UsageError(f"{args.checkpoint}: checkpoint file not found")
    if args.mode in ("reconstruction", "animate") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError(f"--mode {args.mode} runs in one process: launch it with python, not torchrun")
    device = choose_device(args)
    distributed = init_distributed(device)
    log_dir = config_copy = None
    try:
        rank = dist.get_rank() if distributed else 0
        log_dir = make_log_dir(args, rank)
        if rank == 0:
            config_copy = copy_config(config, args.config, log_dir)
            print(f"{args.mode}: {log_dir} (config {config_copy.name}, device {device}"
                  f"{f', {dist.get_world_size()} processes' if distributed else ''})")
            if args.verbose:
                print(config)
        torch.manual_seed(args.seed)  # the same initial weights in every process
        models = build_models(config, device)
        dataset = make_dataset(config, args.mode, args.config)
        common = dict(config=config, models=models, checkpoint_path=args.checkpoint, log_dir=log_dir,
                      dataset=dataset, device=device)
        if args.mode == "train":
            from train import train
            return train(**common, seed=args.seed, verbose=args.verbose, config_name=args.config,
                         compile=args.compile)
        if args.mode == "train_avd":
            from train_avd import train_avd
            return train_avd(**common, seed=args.seed, verbose=args.verbose, config_name=args.config)
        if args.mode == "reconstruction":
            from reconstruction import reconstruction
            metrics = reconstruction(**common, config_name=args.config, precision=args.precision)
            if args.metrics is not None:
                from keypoint_metrics import evaluate_reconstruction, summary_line
                print(summary_line(evaluate_reconstruction(log_dir / "reconstruction", config, args.metrics,
                                                           threads=torch.get_num_threads())))
            return metrics
        from animate import animate
        return animate(**common, config_name=args.config, precision=args.precision)
    except BaseException:
        if args.mode == "train" and args.checkpoint is None and config_copy is not None:
            discard_unused_run_folder(log_dir, config_copy)
        raise
    finally:
        if distributed:
            dist.destroy_process_group()


def check_metrics(args):
    """--metrics is for --mode reconstruction, and needs its detectors: both checked before any work."""
    if args.mode != "reconstruction":
        raise UsageError(f"--metrics is for --mode reconstruction, not --mode {args.mode}")
    from landmarks import DetectorUnavailable, check_available
    try:
        check_available()
    except DetectorUnavailable as e:
        raise UsageError(f"--metrics {args.metrics}: {e}") from None


def discard_unused_run_folder(log_dir, config_copy):
    """Remove a new run's folder when the run failed before writing anything but its config copy (a missing
    dataset, VGG weights it cannot get, ...): no empty run folders pile up under --log_dir."""
    try:
        if [p.name for p in log_dir.iterdir()] == [config_copy.name]:
            config_copy.unlink()
            log_dir.rmdir()
    except OSError:
        pass


def cli(argv=None):
    """``main`` with errors a user can act on printed as one message instead of a traceback; returns the exit code."""
    from frames_dataset import DatasetError, VideoReadError
    from keypoint_metrics import MetricsError
    from losses import VGGWeightsUnavailable
    from media import MediaError
    from trainer import TrainingError, TrainingInterrupted
    try:
        main(argv)
    except TrainingInterrupted as e:
        print(str(e), file=sys.stderr)
        return e.exit_code
    except (UsageError, ConfigError, CheckpointError, TrainingError, VGGWeightsUnavailable, FileNotFoundError,
            VideoReadError, MediaError, DatasetError, MetricsError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # errors.Interrupted (SIGTERM in the evaluation modes) carries its exit code
        print("interrupted", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
