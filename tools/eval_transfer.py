#!/usr/bin/env python
"""Motion transfer against a ground truth on the synthetic puppets: does a mode keep the source's proportions?

    python tools/eval_transfer.py --config config/puppets64.yaml --checkpoint sup-mat/puppets64.pth

For each row (source, driving, ground_truth) of ``<data>/test_pairs.csv``, the first frame of the source video
is animated by every frame of the driving video in each mode (docs/method.md §7, ``animate.Animator``; relative
motion is measured from the first driving frame), and each generated frame is compared (L1, the mean absolute
difference of RGB values in [0, 1]) with the same frame of ``<data>/<ground_truth>/``: the source's identity
rendered by tools/make_puppets.py in the driving clip's motion. Next to the modes, the copy-the-source baseline:
the L1 between the source frame itself and every ground-truth frame. The bar (docs/bundled-model.md): avd
closer to the ground truth than standard, which moves the source with the driving figure's own proportions.

Prints a JSON of the per-pair and mean L1 of each mode (and writes it to ``--out``).
"""
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: the project's modules live one folder up
    sys.path.insert(0, str(REPO_ROOT))

from animate import ANIMATION_MODES, Animator, frames_to_tensor  # noqa: E402
from config import load_config  # noqa: E402
from device import pick_device  # noqa: E402
from inference import load_networks, missing_avd_error  # noqa: E402
from media import read_video  # noqa: E402
from tools.eval_cli import EvalError, frame_size, inputs_of, make_parser, parse_with_out, report  # noqa: E402

BASELINE = "copy_source"


def read_test_pairs(data):
    """Rows of ``<data>/test_pairs.csv`` as dicts with ``source``, ``driving`` and ``ground_truth``."""
    path = Path(data) / "test_pairs.csv"
    if not path.is_file():
        raise EvalError(f"{path}: not found: make the data with tools/make_puppets.py (with --pairs > 0)")
    with open(path, newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        rows = [{key: (value or "").strip() for key, value in row.items()} for row in reader]
        columns = reader.fieldnames or []
    if not {"source", "driving", "ground_truth"} <= set(columns):
        raise EvalError(f"{path}: needs the columns source, driving and ground_truth; found {', '.join(columns)}")
    if not rows:
        raise EvalError(f"{path}: no pairs listed")
    return rows


def pair_l1(networks, source, driving, truth, modes, batch_size):
    """Per-frame L1 of each mode's animation against the ground truth, and of copying the source.

    Args:
        networks: (generator, region_predictor, avd_network) in eval mode.
        source: (1, C, H, W); driving and truth: (T, C, H, W), all in [0, 1] on the networks' device.
    Returns {mode or BASELINE: list of T floats}.
    """
    generator, region_predictor, avd_network = networks
    l1 = {BASELINE: (truth - source).abs().mean(dim=(1, 2, 3)).tolist()}  # (T,)
    for mode in modes:
        animator = Animator(source, generator, region_predictor, avd_network, mode=mode)
        animator.set_initial(driving[:1])
        l1[mode] = []
        for start in range(0, len(driving), batch_size):
            prediction = animator(driving[start:start + batch_size])["prediction"].float()  # (B, C, H, W)
            l1[mode] += (prediction - truth[start:start + batch_size]).abs().mean(dim=(1, 2, 3)).tolist()
    return l1


def read_pair(data, row, frame_shape, device, max_frames=None):
    """(source (1, C, H, W), driving (T, C, H, W), truth (T, C, H, W)) of a test_pairs.csv row, on ``device``."""
    data = Path(data)
    source = read_video(data / "test" / row["source"], frame_shape)[:1]  # (1, H, W, 3)
    driving = read_video(data / "test" / row["driving"], frame_shape)[:max_frames]  # (T, H, W, 3)
    truth = read_video(data / row["ground_truth"], frame_shape)[:max_frames]  # (T, H, W, 3)
    if len(driving) != len(truth):
        raise EvalError(f"{data / row['ground_truth']}: {len(truth)} frames, its driving video "
                        f"{data / 'test' / row['driving']} has {len(driving)}")
    return tuple(frames_to_tensor(frames, device) for frames in (source, driving, truth))


def check_modes(modes, avd_network, checkpoint_path):
    """Refuse modes the checkpoint cannot run, before any work."""
    unknown = [mode for mode in modes if mode not in ANIMATION_MODES]
    if unknown:
        raise EvalError(f"unknown mode {unknown[0]!r}: use {', '.join(ANIMATION_MODES)}")
    if "avd" in modes and avd_network is None:
        raise missing_avd_error(checkpoint_path, "avd mode (the mode this evaluation is about)",
                                "pass --modes standard relative")


@torch.inference_mode()
def evaluate_checkpoint(config_path, checkpoint_path, data="data/puppets", device="cpu", modes=ANIMATION_MODES,
                        max_pairs=None, max_frames=None, batch_size=16):
    """Animate every test pair in every mode and compare with the ground truth; returns the results dict."""
    start = time.perf_counter()
    rows = read_test_pairs(data)[:max_pairs]
    frame_shape = frame_size(load_config(config_path))
    networks = load_networks(config_path, checkpoint_path, device)
    networks = networks["generator"], networks["region_predictor"], networks.get("avd_network")
    check_modes(modes, networks[2], checkpoint_path)
    pairs = []
    for row in rows:
        l1 = pair_l1(networks, *read_pair(data, row, frame_shape, device, max_frames), modes, batch_size)
        pairs.append({"source": row["source"], "driving": row["driving"], "num_frames": len(l1[BASELINE]),
                      "l1": {key: float(np.mean(values)) for key, values in l1.items()}})
    keys = [*modes, BASELINE]
    mean = {key: float(np.mean([pair["l1"][key] for pair in pairs])) for key in keys}
    results = {"config": str(config_path), "checkpoint": str(checkpoint_path), "data": str(data),
               "modes": list(modes), "num_pairs": len(pairs), "num_frames": sum(p["num_frames"] for p in pairs),
               "mean_l1": mean}
    if "avd" in modes and "standard" in modes:
        results["avd_over_standard"] = mean["avd"] / mean["standard"] if mean["standard"] > 0 else None
        results["avd_closer_than_standard"] = mean["avd"] < mean["standard"]
        results["pairs_avd_closer"] = sum(p["l1"]["avd"] < p["l1"]["standard"] for p in pairs)
    return {**results, "pairs": pairs, "seconds": round(time.perf_counter() - start, 1)}


def parse_args(argv=None):
    parser = make_parser(__doc__, "checkpoint with an AVD network (second stage)")
    parser.add_argument("--modes", nargs="+", default=list(ANIMATION_MODES), choices=ANIMATION_MODES,
                        help=f"animation modes to measure (default: {' '.join(ANIMATION_MODES)})")
    parser.add_argument("--max-pairs", type=int, default=None, help="only the first N pairs (default: all)")
    parser.add_argument("--max-frames", type=int, default=None, help="only the first N frames of each pair")
    parser.add_argument("--batch-size", type=int, default=16, help="driving frames per forward pass (default: 16)")
    return parse_with_out(parser, argv, ("max_pairs", "max_frames", "batch_size"))

def main(argv=None):
    args = parse_args(argv)
    return report(lambda: evaluate_checkpoint(args.config, args.checkpoint, args.data, pick_device(args.device),
                                              tuple(dict.fromkeys(args.modes)), args.max_pairs, args.max_frames,
                                              args.batch_size), args.out, inputs_of(args))

if __name__ == "__main__":
    sys.exit(main())
