#!/usr/bin/env python
"""How well a model's region centres locate the true joints of the synthetic puppets (the unsupervised-landmark
protocol: a linear map from the learned landmarks to the annotated ones, fitted on training frames).

    python tools/eval_keypoints.py --config config/puppets64.yaml --checkpoint sup-mat/puppets64.pth

Each frame's region centres (``shift``, K x 2, x then y in [-1, 1]) are flattened to 2K features, and a ridge
regression with an intercept (closed form) maps them to the frame's ground-truth joints (J x 2) from
``<data>/keypoints/``. It is fitted on training frames (at most ``--max-train-frames``, spread evenly over the
training videos and over time). Its regularisation is the one of ``ALPHAS`` with the lowest joint error on a
held-out fifth of the training videos (whole videos: neighbouring frames are near copies of each other), and the
regression is then refitted on all of them. On the test frames we report the mean joint error (the Euclidean
distance between predicted and true joint, in pixels of the data's frames and as a fraction of the image side)
next to the mean-pose baseline: the mean training pose predicted for every frame. The numbers are printed as
JSON (and written to ``--out``).

Python API (``from tools import eval_keypoints``): ``ridge_fit``, ``ridge_predict``, ``choose_alpha``,
``joint_error`` and ``evaluate_landmarks`` work on numpy arrays; ``evaluate_checkpoint`` runs the whole protocol.
"""
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: the project's modules live one folder up
    sys.path.insert(0, str(REPO_ROOT))

from animate import batched, frames_to_tensor  # noqa: E402
from checkpoint import load_checkpoint  # noqa: E402
from config import load_config  # noqa: E402
from device import pick_device  # noqa: E402
from media import list_frames, read_image  # noqa: E402
from modules.build import build_models  # noqa: E402
from tools.eval_cli import EvalError, frame_size, inputs_of, make_parser, parse_with_out, report  # noqa: E402

# Ridge penalties tried, on the mean squared error per frame; the features are coordinates in [-1, 1].
ALPHAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
HELD_OUT = 0.2  # fraction of the training videos that choose the penalty
DEFAULT_MAX_TRAIN_FRAMES = 2400  # 12 frames of each of the 200 training videos of the default set


# ----------------------------------------------------------------------------------------------------------
# The regression and the metric (numpy)


def ridge_fit(X, Y, alpha):
    """Ridge regression with an intercept: minimises mean_n |x_n W + b - y_n|^2 + alpha |W|^2, in closed form.

    Args: X (N, D) features, Y (N, M) targets, alpha > 0. Returns (W (D, M), b (M,)), float64.
    """
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    N, D = X.shape
    x_mean, y_mean = X.mean(0), Y.mean(0)  # (D,), (M,)
    Xc, Yc = X - x_mean, Y - y_mean  # (N, D), (N, M)
    W = np.linalg.solve(Xc.T @ Xc / N + alpha * np.eye(D), Xc.T @ Yc / N)  # (D, M)
    return W, y_mean - x_mean @ W


def ridge_predict(model, X):
    """Targets (N, M) of features X (N, D) under a model (W, b) of ``ridge_fit``."""
    W, b = model
    return np.asarray(X, np.float64) @ W + b  # (N, M)


def joint_error(predicted, true, image_shape):
    """Distances in pixels between predicted and true joints (N, J, 2) in [-1, 1]: (N, J).

    A coordinate x in [-1, 1] is pixel (x + 1) / 2 * (W - 1) (pixel centres, ``modules/__init__.py``), so a
    difference dx is dx * (W - 1) / 2 pixels; likewise y with H.
    """
    H, W = image_shape
    scale = np.array([(W - 1) / 2, (H - 1) / 2])  # (2,) pixels per unit of x, y
    return np.linalg.norm((np.asarray(predicted) - np.asarray(true)) * scale, axis=-1)  # (N, J)


def _held_out_split(groups, fraction, seed):
    """Boolean mask (N,) of the frames of a random ``fraction`` of the groups (at least one, never all)."""
    groups = np.asarray(groups)
    names = np.unique(groups)
    if len(names) < 2:  # one video: hold out its last frames instead
        mask = np.zeros(len(groups), bool)
        mask[int(round(len(groups) * (1 - fraction))):] = True
        return mask
    count = min(len(names) - 1, max(1, int(round(len(names) * fraction))))
    held = np.random.default_rng(seed).permutation(names)[:count]
    return np.isin(groups, held)


def choose_alpha(X, Y, groups, alphas=ALPHAS, fraction=HELD_OUT, seed=0):
    """The penalty of ``alphas`` whose regression, fitted on the training frames outside a held-out fraction
    of the groups (videos), predicts the held-out frames' joints best.

    Args: X (N, D), Y (N, 2J), groups (N,) a video id per frame. Returns (alpha, {alpha: mean held-out
    distance in [-1, 1] units}).
    """
    held = _held_out_split(groups, fraction, seed)  # (N,)
    if held.all() or not held.any():
        raise ValueError(f"need at least two training frames to choose the penalty, got {len(held)}")
    errors = {}
    for alpha in alphas:
        predicted = ridge_predict(ridge_fit(X[~held], Y[~held], alpha), X[held])  # (n, 2J)
        errors[alpha] = float(np.linalg.norm((predicted - Y[held]).reshape(-1, 2), axis=1).mean())
    return min(errors, key=errors.get), errors


def evaluate_landmarks(train_centres, train_joints, train_groups, test_centres, test_joints, image_shape,
                       alphas=ALPHAS, seed=0):
    """The protocol on arrays: region centres (N, K, 2) and true joints (N, J, 2), all in [-1, 1].

    Returns a dict of the chosen ``alpha``, the held-out errors, and on the test frames the mean joint error of
    the regression and of the mean-pose baseline, in pixels (``image_shape`` (H, W)) and as a fraction of the
    image side (max(H, W)), their ratio, and the error per joint (pixels).
    """
    N, J, _ = train_joints.shape
    X_train, Y_train = train_centres.reshape(N, -1), train_joints.reshape(N, -1)  # (N, 2K), (N, 2J)
    alpha, held_out = choose_alpha(X_train, Y_train, train_groups, alphas, seed=seed)
    model = ridge_fit(X_train, Y_train, alpha)
    predicted = ridge_predict(model, test_centres.reshape(len(test_centres), -1)).reshape(test_joints.shape)
    mean_pose = np.broadcast_to(train_joints.mean(0), test_joints.shape)  # (N', J, 2)
    error = joint_error(predicted, test_joints, image_shape)  # (N', J)
    baseline = joint_error(mean_pose, test_joints, image_shape)  # (N', J)
    side = max(image_shape)
    return {"alpha": alpha, "held_out_error": {str(a): e for a, e in held_out.items()},
            "error_px": float(error.mean()), "error_fraction": float(error.mean() / side),
            "baseline_error_px": float(baseline.mean()), "baseline_error_fraction": float(baseline.mean() / side),
            "ratio_to_baseline": float(error.mean() / baseline.mean()) if baseline.mean() > 0 else math.nan,
            "per_joint_error_px": error.mean(0).tolist(), "per_joint_baseline_px": baseline.mean(0).tolist()}


# ----------------------------------------------------------------------------------------------------------
# Frames, joints and region centres of a split


def split_videos(data, split):
    """Sorted names of the videos of ``<data>/<split>/``, each with joints in ``<data>/keypoints/<split>/``."""
    folder, joints = Path(data) / split, Path(data) / "keypoints" / split
    if not folder.is_dir():
        raise EvalError(f"{folder}: no such folder: make the data first (python tools/make_puppets.py --out {data})")
    names = sorted(path.name for path in folder.iterdir() if path.is_dir())
    if not names:
        raise EvalError(f"{folder}: no videos (frame folders) in it")
    missing = [name for name in names if not (joints / f"{name}.npy").is_file()]
    if missing:
        raise EvalError(f"{joints}: no ground-truth joints for {len(missing)} videos of {folder} (e.g. "
                        f"{missing[0]}.npy): this evaluation needs data made by tools/make_puppets.py")
    return names


def sample_frames(lengths, max_frames=None):
    """(video, frame) index pairs, at most ``max_frames`` (None: every frame), spread evenly over the videos
    and, within each, over time."""
    if max_frames is None or max_frames >= sum(lengths):
        return [(v, t) for v, T in enumerate(lengths) for t in range(T)]
    if max_frames < 1:
        raise ValueError(f"need at least one frame, got max_frames={max_frames}")
    # Spacing >= 1 between rounded linspace points, so neither choice repeats an index.
    videos = np.linspace(0, len(lengths) - 1, min(len(lengths), max_frames)).round().astype(int)
    counts = [max_frames // len(videos) + (i < max_frames % len(videos)) for i in range(len(videos))]
    return [(int(v), int(t)) for v, count in zip(videos, counts)
            for t in np.linspace(0, lengths[v] - 1, min(count, lengths[v])).round().astype(int)]


def load_split(data, split, max_frames=None):
    """The frames to evaluate of a split: (frame paths [N], joints (N, J, 2) float64, video index per frame (N,))."""
    names = split_videos(data, split)
    frames = [list_frames(Path(data) / split / name) for name in names]
    joints = [np.load(Path(data) / "keypoints" / split / f"{name}.npy") for name in names]  # [(T, J, 2)]
    for name, paths, points in zip(names, frames, joints):
        if len(paths) != len(points):
            raise EvalError(f"{Path(data) / 'keypoints' / split / name}.npy: {len(points)} frames of joints, "
                            f"the video {Path(data) / split / name} has {len(paths)} frames")
    picks = sample_frames([len(paths) for paths in frames], max_frames)
    paths = [frames[v][t] for v, t in picks]
    points = np.stack([joints[v][t] for v, t in picks]).astype(np.float64)  # (N, J, 2)
    return paths, points, np.array([v for v, _ in picks])


@torch.inference_mode()
def region_centres(region_predictor, frame_paths, frame_shape, device, batch_size=64):
    """Region centres of frames read from ``frame_paths`` at ``frame_shape`` (H, W), a batch at a time: (N, K, 2)."""
    centres = []
    for batch in batched((read_image(path, frame_shape) for path in frame_paths), batch_size):
        shift = region_predictor(frames_to_tensor(batch, device))["shift"]  # (B, K, 2)
        centres.append(shift.float().cpu().numpy())
    return np.concatenate(centres).astype(np.float64)  # (N, K, 2)


# ----------------------------------------------------------------------------------------------------------
# The whole protocol and the command line


def load_region_predictor(config_path, checkpoint_path, device):
    """(resolved config, region predictor of the checkpoint in eval mode on ``device``)."""
    config = load_config(config_path)
    region_predictor = build_models(config, device)["region_predictor"]
    load_checkpoint(checkpoint_path, {"region_predictor": region_predictor}, config_name=str(config_path),
                    map_location=device)
    return config, region_predictor.eval()


def joint_names(data, count):
    """The joints' names from ``<data>/puppets.json`` when it lists ``count`` of them, else j0, j1, ..."""
    try:
        names = json.loads((Path(data) / "puppets.json").read_text())["joints"]
    except (OSError, ValueError, KeyError):
        names = []
    return list(names) if len(names) == count else [f"j{j}" for j in range(count)]


def evaluate_checkpoint(config_path, checkpoint_path, data="data/puppets", device="cpu",
                        max_train_frames=DEFAULT_MAX_TRAIN_FRAMES, max_test_frames=None, batch_size=64):
    """Run the protocol for a checkpoint on a puppet set; returns the results dict (see the module docstring)."""
    start = time.perf_counter()
    config, region_predictor = load_region_predictor(config_path, checkpoint_path, device)
    frame_shape = frame_size(config)
    train_paths, train_joints, train_groups = load_split(data, "train", max_train_frames)
    test_paths, test_joints, _ = load_split(data, "test", max_test_frames)
    image_shape = read_image(test_paths[0]).shape[:2]  # the data's own pixels, which the joints refer to
    train_centres = region_centres(region_predictor, train_paths, frame_shape, device, batch_size)  # (N, K, 2)
    test_centres = region_centres(region_predictor, test_paths, frame_shape, device, batch_size)  # (N', K, 2)
    results = evaluate_landmarks(train_centres, train_joints, train_groups, test_centres, test_joints, image_shape)
    names = joint_names(data, train_joints.shape[1])
    for key in ("per_joint_error_px", "per_joint_baseline_px"):
        results[key] = dict(zip(names, results[key]))
    return {"config": str(config_path), "checkpoint": str(checkpoint_path), "data": str(data),
            "num_regions": int(train_centres.shape[1]), "image_size": list(image_shape),
            "num_train_videos": int(len(np.unique(train_groups))), "num_train_frames": len(train_paths),
            "num_test_frames": len(test_paths), **results, "seconds": round(time.perf_counter() - start, 1)}


def parse_args(argv=None):
    parser = make_parser(__doc__, "checkpoint with region_predictor weights")
    parser.add_argument("--max-train-frames", type=int, default=DEFAULT_MAX_TRAIN_FRAMES,
                        help=f"training frames to fit on, spread over all videos (default: {DEFAULT_MAX_TRAIN_FRAMES})")
    parser.add_argument("--max-test-frames", type=int, default=None, help="test frames (default: all)")
    parser.add_argument("--batch-size", type=int, default=64, help="frames per forward pass (default: 64)")
    return parse_with_out(parser, argv, ("max_train_frames", "max_test_frames", "batch_size"))

def main(argv=None):
    args = parse_args(argv)
    return report(lambda: evaluate_checkpoint(args.config, args.checkpoint, args.data, pick_device(args.device),
                                              args.max_train_frames, args.max_test_frames, args.batch_size),
                  args.out, inputs_of(args))

if __name__ == "__main__":
    sys.exit(main())
