"""``--mode reconstruction``: every test video rebuilt from its first frame, with L1, PSNR and SSIM (paper Sec. 4).

For each video the first frame is the source; every frame is reconstructed from it with the frame's own region
params and the background motion of (source, frame). Frames are streamed from disk and go through the networks
in batches. Outputs under ``<log_dir>/reconstruction/``: ``png/<video>.png`` (the predicted frames side by side,
lossless, for external keypoint metrics), ``<video><format>`` visualisations and ``metrics.json``.
"""
import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import mean_squared_error, structural_similarity
from tqdm import tqdm

from animate import (DEFAULT_FPS, autocast_for, batched, check_precision, default_batch_size, expand_batch,
                     frames_to_tensor, tensor_to_uint8)
from config import require_section
from frames_dataset import FrameSizeError
from errors import signals_as_interrupts
from inference import load_into
from media import VideoReadError, VideoWriter, staged_folder, strip_extension, write_image
from modules.util import as_float32
from visualizer import Visualizer

METRICS = ("l1", "psnr", "ssim", "copy_l1")  # copy_l1: the L1 of copying the first frame, the baseline to beat


def frame_metrics(prediction, target):
    """Per-frame L1 (mean absolute error), MSE and SSIM (scikit-image) of frames (B, H, W, 3) in [0, 1].

    Returns {"l1", "mse", "ssim": list of B floats}.
    """
    prediction, target = np.asarray(prediction, np.float64), np.asarray(target, np.float64)
    metrics = {"l1": [], "mse": [], "ssim": []}
    for predicted, real in zip(prediction, target):
        metrics["l1"].append(float(np.abs(predicted - real).mean()))
        metrics["mse"].append(float(mean_squared_error(real, predicted)))
        metrics["ssim"].append(float(structural_similarity(real, predicted, channel_axis=2, data_range=1.0)))
    return metrics


def summarise(per_frame):
    """A video's metrics from its per-frame ones: mean L1 and SSIM over frames, and the PSNR of the whole video
    (from the mean MSE: what scikit-image's peak_signal_noise_ratio gives on all frames at once; unlike a mean
    of per-frame PSNRs it stays finite when some frame is reproduced exactly)."""
    mse = float(np.mean(per_frame["mse"]))
    psnr = 10 * math.log10(1.0 / mse) if mse > 0 else math.inf
    video = {"l1": float(np.mean(per_frame["l1"])), "psnr": psnr, "ssim": float(np.mean(per_frame["ssim"])),
             "num_frames": len(per_frame["l1"])}
    if per_frame.get("copy_l1"):
        video["copy_l1"] = float(np.mean(per_frame["copy_l1"]))
    return video


def finite_or_none(value):
    """Floats as JSON allows them: inf (the PSNR of an exact copy) becomes null, recursively."""
    if isinstance(value, dict):
        return {key: finite_or_none(v) for key, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@torch.inference_mode()
def reconstruct(frames, generator, region_predictor, bg_predictor, batch_size, device, precision="fp32"):
    """Reconstruct a video from its first frame, a batch at a time.

    Args: frames, an iterable of (H, W, 3) float frames in [0, 1]; networks in eval mode; ``precision``: 'fp32',
    or 'bf16' / 'fp16' autocast (region and background geometry in float32, predictions float32).
    Yields (driving (B, 3, H, W), source (B, 3, H, W), output dict of the generator with the region params).
    """
    source = None
    autocast = autocast_for(torch.device(device).type, precision)
    for batch in batched(frames, batch_size):
        driving = frames_to_tensor(batch, device)  # (B, 3, H, W)
        with autocast:
            if source is None:  # the source's work is done once per video
                source = driving[:1].clone()  # (1, 3, H, W)
                source_params = as_float32(region_predictor(source))  # (1, K, ...)
                source_features = generator.encode(source)
            B = driving.shape[0]
            sources = source.expand(B, -1, -1, -1)  # (B, 3, H, W), no copy
            source_params_b = expand_batch(source_params, B)
            driving_params = as_float32(region_predictor(driving))  # (B, K, ...)
            bg_params = bg_predictor(sources, driving).float()  # (B, 3, 3)
            out = generator(sources, driving_params, source_params_b, bg_params=bg_params,
                            source_features=source_features)
        out["prediction"] = out["prediction"].float()
        out.update(source_region_params=source_params_b, driving_region_params=driving_params)
        yield driving, sources, out


def test_video_frames(dataset, index):
    """(name, frames) of test video ``index``: frames (H, W, 3) streamed from disk when the dataset can
    (FramesDataset.stream: memory does not grow with the video), else taken from its item (C, T, H, W)."""
    if hasattr(dataset, "stream"):
        return dataset.stream(index)
    item = dataset[index]
    return item["name"], iter(np.asarray(item["video"]).transpose(1, 2, 3, 0))


def evaluate_video(frames, networks, out_path, png_path, visualizer, batch_size, device, precision="fp32"):
    """Reconstruct one video, writing its visualisation and PNG strip; returns per-frame metrics (frame_metrics,
    and ``copy_l1``: the L1 of the first frame itself, what a model that copies its source would score)."""
    metrics = {"l1": [], "mse": [], "ssim": [], "copy_l1": []}
    predictions = []
    with VideoWriter(out_path, DEFAULT_FPS) as writer:
        for driving, sources, out in reconstruct(frames, networks["generator"], networks["region_predictor"],
                                                 networks["bg_predictor"], batch_size, device, precision):
            B, _, H, _ = driving.shape
            prediction = out["prediction"].float().permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
            for name, values in frame_metrics(prediction, driving.permute(0, 2, 3, 1).cpu().numpy()).items():
                metrics[name].extend(values)
            metrics["copy_l1"].extend((sources - driving).abs().mean(dim=(1, 2, 3)).tolist())
            predictions.append(tensor_to_uint8(out["prediction"]))  # (B, H, W, 3)
            writer.write(visualizer.visualize(driving, sources, out).reshape(B, H, -1, 3))  # (B, H, n * W, 3)
    write_image(png_path, np.concatenate(np.concatenate(predictions), axis=1))  # (H, T * W, 3)
    return metrics


def reconstruction(config, models, checkpoint_path, log_dir, dataset, device, batch_size=None,
                   config_name="the config", precision="fp32"):
    """Evaluate a checkpoint's reconstruction of the test videos; writes ``<log_dir>/reconstruction/`` and
    returns the metrics dict saved as ``metrics.json`` (per video, and the means over videos).

    The outputs are written to a temporary folder and moved into place once every video is done, so a run that
    is stopped leaves an earlier run's videos and metrics.json together, as they were. ``precision``: see
    ``reconstruct``; metrics.json records it.
    """
    check_precision(precision)
    params = require_section(config, "reconstruction_params", config_name)
    networks = load_into(models, checkpoint_path, ("generator", "region_predictor", "bg_predictor"), device,
                         config_name)
    visualizer = Visualizer(**config.get("visualizer_params", {}))
    batch_size = batch_size or default_batch_size(device)
    num_videos = len(dataset) if params["num_videos"] is None else params["num_videos"]
    if num_videos > len(dataset):
        warnings.warn(f"reconstruction_params.num_videos is {num_videos}, the test set has {len(dataset)} videos: "
                      "evaluating all of them")
        num_videos = len(dataset)
    out_dir = Path(log_dir) / "reconstruction"
    videos, skipped = {}, {}
    # SIGTERM as Ctrl-C: the earlier outputs kept as they were; a complete run replaces them whole
    inputs = {"checkpoint": checkpoint_path, "dataset": dataset.root_dir}
    with signals_as_interrupts(), staged_folder(out_dir, replace=True, inputs=inputs) as staging:
        for index in tqdm(range(num_videos), desc="reconstruction", unit="video"):
            name, frames = test_video_frames(dataset, index)
            stem = strip_extension(name)
            out_path, png_path = staging / (stem + params["format"]), staging / "png" / (stem + ".png")
            try:
                videos[name] = summarise(evaluate_video(frames, networks, out_path, png_path, visualizer,
                                                        batch_size, device, precision))
            except FrameSizeError:
                raise
            except VideoReadError as error:  # report it and go on with the other videos
                warnings.warn(f"skipping test video {name}: {error}")
                skipped[name] = str(error)
        means = {name: float(np.mean([v[name] for v in videos.values()])) if videos else math.nan
                 for name in METRICS}
        metrics = {"checkpoint": str(checkpoint_path), "precision": precision, "num_videos": len(videos),
                   "num_frames": sum(v["num_frames"] for v in videos.values()), "mean": means,
                   "videos": videos, "skipped": skipped}
        (staging / "metrics.json").write_text(json.dumps(finite_or_none(metrics), indent=2))
    print(f"reconstruction of {len(videos)} videos ({metrics['num_frames']} frames): "
          + ", ".join(f"{name} {value:.4f}" for name, value in means.items())
          + (f"; l1 / copy_l1 = {means['l1'] / means['copy_l1']:.3f}" if videos and means["copy_l1"] > 0 else ""))
    return metrics
