"""Second training stage, ``--mode train_avd`` (docs/method.md §8; paper Sec. 3.4): the AVD network learns to put the
driving frame's pose on the source's region shapes, from a first-stage checkpoint.

The region predictor (which makes the targets), the generator and the background predictor are frozen: no
gradients, eval mode throughout (their batch-norm statistics never move), weights written back unchanged.
Pose params come from the driving frame scaled by a random diag(u_x, u_y) per sample; the target is the
unscaled driving params. Checkpoints ``{epoch:08d}-cpk-avd.pth`` hold all four networks, ``optimizer_avd``,
``scheduler_avd``, ``epoch_avd``, and the first stage's ``optimizer_reconstruction`` / ``epoch_reconstruction``
carried over from the input checkpoint, each under its own key.
"""
import torch
from torch import nn

from config import ConfigError, require_section
from logger import Logger
from losses import avd_losses
from modules.util import as_float32
from trainer import (MixedPrecision, Schedule, Stage, TrainingError, adam, check_params, distribute, make_loader,
                     nothing_to_train, rank_and_world, resume, train_epochs)
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


def train_avd(config, models, checkpoint_path, log_dir, dataset, device, seed=0, verbose=False, config_name=None):
    """Train the AVD network from a first-stage checkpoint (or resume an AVD checkpoint).

    Returns the path of the last checkpoint written (None when there was nothing to train).
    """
    config_name = config_name or "the config"
    params = require_section(config, "train_avd_params", config_name)
    check_params(params, "train_avd_params", config_name)
    if checkpoint_path is None:
        raise TrainingError("--mode train_avd needs --checkpoint: a first-stage checkpoint "
                            "(<log dir>/<epoch>-cpk-reconstruction.pth) whose region predictor it learns from")
    if not config["model_params"]["estimate_affine"]:
        raise ConfigError(f"{config_name}: AVD learns region shapes: model_params.estimate_affine must be true")
    if params["lambda_shift"] == 0 and params["lambda_affine"] == 0:
        raise ConfigError(f"{config_name}: train_avd_params.lambda_shift and lambda_affine are both 0: there is "
                          f"nothing to learn from; give at least one of them a weight")
    rank, world = rank_and_world()
    if params["batch_size"] // world < 2:
        raise ConfigError(f"{config_name}: train_avd_params.batch_size gives {params['batch_size'] // world} item(s) "
                          f"per process; the AVD network's batch norms need at least 2")
    frozen = {name: models[name].to(device).eval().requires_grad_(False) for name in FROZEN}
    avd_network = models["avd_network"].to(device).train()
    stage = Stage("avd", {**frozen, "avd_network": avd_network}, adam(avd_network.parameters(), params["lr"], device),
                  Schedule.of(params), MixedPrecision("none", device), device)  # the MLP is small: float32
    state = resume(stage, checkpoint_path, config_name, optional=("avd_network",))
    stage.extra = {"config": config, **{key: state[key] for key in CARRIED if key in state}}
    if nothing_to_train(stage, params, "train_avd_params"):
        return None

    model = distribute(AVDModel(frozen["region_predictor"], avd_network, params).to(device).train(), device)
    if verbose and rank == 0:
        print(model)

    def forward(batch):
        source = batch["source"].to(device, non_blocking=True)  # (B, C, H, W)
        driving = batch["driving"].to(device, non_blocking=True)  # (B, C, H, W)
        return model(source, driving, random_scales(source.shape[0], params["random_scale"], device))

    visualizer = Visualizer(**config.get("visualizer_params", {}))
    stage.forward = forward
    stage.picture = lambda result: picture(visualizer, frozen["generator"], result.batch, result.out, device)
    loader = make_loader(dataset, params, device, "train_avd_params", seed)
    logger = Logger(log_dir, "avd", enabled=rank == 0)
    return train_epochs(stage, loader, logger, params, log_dir=log_dir, seed=seed)
