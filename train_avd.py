"""Second training stage, ``--mode train_avd`` (METHOD.md §8; paper Sec. 3.4): the AVD network learns to put the
driving frame's pose on the source's region shapes, from a first-stage checkpoint.

The region predictor (which makes the targets), the generator and the background predictor are frozen: no
gradients, eval mode throughout (their batch-norm statistics never move), weights written back unchanged.
Pose params come from the driving frame scaled by a random diag(u_x, u_y) per sample; the target is the
unscaled driving params. Checkpoints ``{epoch:08d}-cpk-avd.pth`` hold all four networks, ``optimizer_avd``,
``scheduler_avd``, ``epoch_avd``, and the first stage's ``optimizer_reconstruction`` / ``epoch_reconstruction``
carried over from the input checkpoint, each under its own key.
"""
from pathlib import Path

import torch
from torch import nn

from checkpoint import save_checkpoint
from config import ConfigError, require_section
from logger import Logger
from losses import avd_losses
from modules.util import as_float32
from trainer import (MixedPrecision, TrainingError, checkpoint_name, distribute, make_loader, make_scheduler,
                     rank_and_world, resume, train_epochs)
from visualizer import Visualizer

FROZEN = ("generator", "region_predictor", "bg_predictor")
CARRIED = ("optimizer_reconstruction", "scheduler_reconstruction", "epoch_reconstruction", "scaler_reconstruction")
VIS_ROWS = 8


def random_scales(batch_size, random_scale, device):
    """u ~ U(1 − s, 1 + s) per sample and axis, drawn on the CPU from torch's global generator: (B, 1, 2)."""
    return (1 - random_scale + 2 * random_scale * torch.rand(batch_size, 1, 2)).to(device)


def scale_region_params(region_params, scale):
    """diag(u) applied to every region: shift (B, K, 2) -> u * shift; affine (B, K, 2, 2) -> diag(u) A."""
    return {"shift": region_params["shift"] * scale,  # (B, K, 2)
            "affine": region_params["affine"] * scale.unsqueeze(-1)}  # (B, K, 2, 2): row i scaled by u_i


class AVDModel(nn.Module):
    """The frozen region predictor, the AVD network and its loss, as one module for DDP."""

    def __init__(self, region_predictor, avd_network, params):
        super().__init__()
        self.region_predictor = region_predictor.requires_grad_(False).eval()
        self.avd_network = avd_network
        self.params = params

    def train(self, mode=True):
        super().train(mode)
        self.region_predictor.eval()  # frozen: its batch-norm statistics must not drift
        return self

    def forward(self, source, driving, scale):
        """source, driving (B, C, H, W); scale (B, 1, 2). Returns (losses, region params for the picture)."""
        with torch.no_grad():
            id_params = as_float32(self.region_predictor(source))
            target = as_float32(self.region_predictor(driving))
        reconstructed = self.avd_network(id_params, scale_region_params(target, scale))
        losses = avd_losses(reconstructed, target, self.params["lambda_shift"], self.params["lambda_affine"])
        return losses, {"source_region_params": id_params, "driving_region_params": target,
                        "avd_region_params": reconstructed}


@torch.no_grad()
def picture(visualizer, generator, batch, params, device, rows=VIS_ROWS):
    """Source and driving with their regions, and the source rendered in the AVD's pose (any batch size)."""
    source = batch["source"][:rows].to(device)  # (b, C, H, W)
    def head(p):
        return {k: v[:rows].detach().float() for k, v in p.items()}
    source_params, avd_params = head(params["source_region_params"]), head(params["avd_region_params"])
    prediction = generator(source, driving_region_params=avd_params, source_region_params=source_params)
    out = {"source_region_params": source_params, "driving_region_params": head(params["driving_region_params"]),
           "prediction": prediction["prediction"], "prediction_region_params": avd_params}
    return visualizer.visualize(driving=batch["driving"][:rows], source=source, out=out)


def save_avd(log_dir, epoch, frozen, avd_network, optimizer, scheduler, config, carried, interrupted_at=None):
    """Write ``{epoch:08d}-cpk-avd.pth`` (or the interrupted epoch's file) with all four networks; returns its path."""
    extra = {"interrupted_at": interrupted_at} if interrupted_at is not None else {}
    done = epoch - 1 if interrupted_at is not None else epoch  # the last epoch trained to its end
    path = Path(log_dir) / checkpoint_name(epoch, "avd", interrupted=interrupted_at is not None)
    return save_checkpoint(path, {**frozen, "avd_network": avd_network}, {"optimizer_avd": optimizer},
                           epoch_avd=done, scheduler_avd=scheduler.state_dict(), config=config, **carried, **extra)


def train_avd(config, models, checkpoint_path, log_dir, dataset, device, seed=0, verbose=False, config_name=None):
    """Train the AVD network from a first-stage checkpoint (or resume an AVD checkpoint).

    Returns the path of the last checkpoint written (None when there was nothing to train).
    """
    config_name = config_name or "the config"
    params = require_section(config, "train_avd_params", config_name)
    if checkpoint_path is None:
        raise TrainingError("--mode train_avd needs --checkpoint: a first-stage checkpoint "
                            "(<log dir>/<epoch>-cpk-reconstruction.pth) whose region predictor it learns from")
    if not config["model_params"]["estimate_affine"]:
        raise ConfigError(f"{config_name}: AVD learns region shapes: model_params.estimate_affine must be true")
    rank, world = rank_and_world()
    main = rank == 0
    if params["batch_size"] // world < 2:
        raise ConfigError(f"{config_name}: train_avd_params.batch_size gives {params['batch_size'] // world} item(s) "
                          f"per process; the AVD network's batch norms need at least 2")
    frozen = {name: models[name].to(device).eval().requires_grad_(False) for name in FROZEN}
    avd_network = models["avd_network"].to(device).train()
    optimizer = torch.optim.Adam(avd_network.parameters(), lr=params["lr"], betas=(0.5, 0.999))
    scheduler = make_scheduler(optimizer, params["epoch_milestones"])
    first_epoch, state = resume(checkpoint_path, {**frozen, "avd_network": avd_network}, optimizer, scheduler,
                                "avd", params["lr"], config_name, device, optional=("avd_network",))
    carried = {key: state[key] for key in CARRIED if key in state}
    if first_epoch >= params["num_epochs"]:
        if main:
            print(f"{checkpoint_path} has finished AVD epoch {first_epoch - 1}, and train_avd_params.num_epochs is "
                  f"{params['num_epochs']}: nothing to train (raise num_epochs to train on)")
        return None

    model = distribute(AVDModel(frozen["region_predictor"], avd_network, params).to(device).train(), device)
    loader = make_loader(dataset, params, device, "train_avd_params", seed)
    logger = Logger(log_dir, "avd", enabled=main)
    visualizer = Visualizer(**config.get("visualizer_params", {}))
    full_precision, last_saved = MixedPrecision("none", device), checkpoint_path  # the MLP is small: float32
    if verbose and main:
        print(model)

    def forward(batch):
        source = batch["source"].to(device, non_blocking=True)  # (B, C, H, W)
        driving = batch["driving"].to(device, non_blocking=True)  # (B, C, H, W)
        return model(source, driving, random_scales(source.shape[0], params["random_scale"], device))

    def save(epoch, interrupted_at=None):
        return save_avd(log_dir, epoch, frozen, avd_network, optimizer, scheduler, config, carried, interrupted_at)

    def draw(result):
        return picture(visualizer, frozen["generator"], result.batch, result.out, device)

    return train_epochs(forward, loader, optimizer, scheduler, full_precision, logger, params, first_epoch, seed,
                        last_saved, device, save, draw, tag="avd", desc="avd epoch")
