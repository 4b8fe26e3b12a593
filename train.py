"""First training stage, ``--mode train`` (docs/method.md §8; paper Sec. 3.5): region predictor, background motion
predictor and generator learn to reconstruct the driving frame of a pair from its source frame.

Each epoch: the mean losses go to ``log.txt`` / ``losses.jsonl`` and the loss curve, a picture of the last batch
to ``train-vis/``, and every ``checkpoint_freq`` epochs (and at the last) a checkpoint
``{epoch:08d}-cpk-reconstruction.pth``. A checkpoint holds the three networks, ``optimizer_reconstruction``,
``scheduler_reconstruction``, ``epoch_reconstruction`` (the last finished epoch) and the config; training from
it continues at the next epoch. SIGINT/SIGTERM write ``{epoch:08d}-interrupted-cpk-reconstruction.pth`` (the
weights so far; resuming from it trains that epoch again). Only rank 0 writes.
"""
import contextlib
import random
from itertools import chain

import numpy as np
import torch
from torch import nn

from config import ConfigError, require_section
from logger import Logger
from losses import (ImagePyramid, RandomTransform, Vgg19, ensure_vgg19_weights, equivariance_losses, perceptual_loss,
                    pixel_l1_loss)
import kernel_choice
from modules.optimize import compiled, optimize_for_training, wants_channels_last
from modules.util import as_float32, float32_geometry
from trainer import (DATA_ERRORS, MixedPrecision, Schedule, Stage, adam, barrier, check_params, distribute,
                     is_distributed, make_loader, nothing_to_train, rank_and_world, resume, train_epochs)
from visualizer import Visualizer

NETWORKS = ("generator", "region_predictor", "bg_predictor")
VIS_ROWS = 8  # batch items shown in the per-epoch picture


class ReconstructionModel(nn.Module):
    """The three networks of the first stage and the losses, as one module so that DDP sees one forward.

    A loss whose weights are all 0 is not computed, and is absent from the losses returned (and from the logs).
    """

    def __init__(self, generator, region_predictor, bg_predictor, vgg, train_params, model_params):
        super().__init__()
        self.generator, self.region_predictor, self.bg_predictor = generator, region_predictor, bg_predictor
        self.vgg = vgg
        self.pyramid = ImagePyramid(train_params["scales"], model_params["num_channels"])
        self.loss_weights = train_params["loss_weights"]
        self.revert_axis_swap = model_params["revert_axis_swap"]

    def forward(self, source, driving, transform):
        """source, driving (B, C, H, W); transform a RandomTransform. Returns (losses, generated)."""
        weights = self.loss_weights
        source_params = as_float32(self.region_predictor(source))
        driving_params = as_float32(self.region_predictor(driving))
        bg_params = self.bg_predictor(source, driving).float()  # (B, 3, 3)
        generated = self.generator(source, driving_region_params=driving_params,
                                   source_region_params=source_params, bg_params=bg_params)
        generated.update(source_region_params=source_params, driving_region_params=driving_params)
        losses = {}
        if any(weights["perceptual"]):
            losses["perceptual"] = perceptual_loss(self.vgg, self.pyramid, generated["prediction"], driving,
                                                   weights["perceptual"])
        if weights["l1"] != 0:
            losses["l1"] = pixel_l1_loss(generated["prediction"], driving, weights["l1"])
        if weights["equivariance_shift"] != 0 or weights["equivariance_affine"] != 0:
            with float32_geometry(source.device.type):
                transformed_frame = transform.transform_frame(driving)  # (B, C, H, W)
            transformed_params = as_float32(self.region_predictor(transformed_frame))
            generated.update(transformed_frame=transformed_frame, transformed_region_params=transformed_params)
            with float32_geometry(source.device.type):
                losses.update(equivariance_losses(driving_params, transformed_params, transform, weights,
                                                  self.revert_axis_swap))
        return losses, generated


def build_vgg(weights, config_name, device):
    """The perceptual loss's VGG-19; rank 0 downloads the ImageNet weights if needed, the others wait."""
    rank, _ = rank_and_world()
    if weights == "imagenet":
        ensure_vgg19_weights(config_name, download=rank == 0)
        barrier()
    return Vgg19(weights).to(device)


def picture(visualizer, batch, generated, rows=VIS_ROWS):
    """The per-epoch picture of up to ``rows`` items of a batch (uint8 (rows*H, columns*W, 3))."""
    def head(x):
        return {k: head(v) for k, v in x.items()} if isinstance(x, dict) else x[:rows].detach()
    return visualizer.visualize(driving=head(batch["driving"]), source=head(batch["source"]), out=head(generated))


@contextlib.contextmanager
def untouched(model, device):
    """Within it the model is in eval mode (a forward leaves the batch-norm statistics alone) and every random
    generator (Python's, NumPy's, torch's on the CPU and the device) is restored after: what happens inside changes
    nothing that training draws or learns."""
    was_training, python_state, numpy_state = model.training, random.getstate(), np.random.get_state()
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        model.eval()
        try:
            yield
        finally:
            model.train(was_training)
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def measured_layout(model, item, params, device, mixed, precision):
    """``kernel_choice.choose_training_layout`` for ``model`` at the size of a training ``item``, saying so before a
    first timing."""
    source = torch.as_tensor(item["source"])[None].to(device)  # (1, C, H, W)
    driving = torch.as_tensor(item["driving"])[None].to(device)
    frame_shape = tuple(source.shape[-2:])

    def run_once():
        with mixed.autocast():
            model(source, driving, RandomTransform(1, **params["transform_params"], device=device))
    if kernel_choice.needs_measuring(model, frame_shape, params["batch_size"], device, precision, training=True):
        print("timing the convolution layouts for training on this machine (once for this model, size, batch and "
              "precision)")
    return kernel_choice.choose_training_layout(model, run_once, frame_shape, params["batch_size"], device,
                                                precision)[0]


def training_layout(model, dataset, params, device, mixed):
    """Whether to train channels-last: ``kernel_choice.choose_training_layout`` at the first item's frame size and
    the run's batch and precision, cached per machine. Rank 0 decides and the other processes take its choice:
    every process must lay its weights out alike."""
    precision = params["mixed_precision"] if mixed.enabled else "fp32"
    channels_last = wants_channels_last(device, precision)  # MRAA_KERNELS=defaults: the device-type rule
    if rank_and_world()[0] == 0 and kernel_choice.policy() != "defaults":
        with untouched(model, device):  # an item read and a forward run, with nothing drawn from the run's generators
            try:
                item = dataset[0]
            except DATA_ERRORS:  # the loader will say what is wrong with the data, in its own words
                item = None
            if item is not None:
                channels_last = measured_layout(model, item, params, device, mixed, precision)
    if is_distributed():
        shared = torch.tensor([int(channels_last)], device=device)
        torch.distributed.broadcast(shared, 0)
        channels_last = bool(shared.item())
    return channels_last


def train(config, models, checkpoint_path, log_dir, dataset, device, seed=0, verbose=False, config_name=None,
          compile=False):
    """Train the first stage for ``train_params.num_epochs`` epochs, or resume from ``checkpoint_path``.

    ``compile``: False, or a mode of ``COMPILE_MODES`` (or a backend name) to run the step (forward, losses and
    their backward) through ``torch.compile``: the networks' and losses' ~5,000 operations fused into a few
    hundred kernels, for GPUs, where launching them may bound the step. Checkpoints hold the same networks either way.

    Returns the path of the last checkpoint written (None when there was nothing to train).
    """
    config_name = config_name or "the config"
    params = require_section(config, "train_params", config_name)
    check_params(params, "train_params", config_name)
    weights = params["loss_weights"]
    image_losses = any(weights["perceptual"]) or weights["l1"] != 0
    if not (image_losses or weights["equivariance_shift"] or weights["equivariance_affine"]):
        raise ConfigError(f"{config_name}: every weight in train_params.loss_weights is 0: there is nothing to "
                          f"learn from; give at least one loss a weight")
    networks = {name: models[name].to(device).train() for name in NETWORKS}
    optimizer = adam(chain(*(n.parameters() for n in networks.values())), params["lr"], device)
    stage = Stage("reconstruction", networks, optimizer, Schedule.of(params),
                  MixedPrecision(params["mixed_precision"], device), device, extra={"config": config})
    if checkpoint_path is not None:
        resume(stage, checkpoint_path, config_name)
    if nothing_to_train(stage, params, "train_params"):
        return None

    model = ReconstructionModel(**networks, vgg=build_vgg(params["vgg_weights"], config_name, device),
                                train_params=params, model_params=config["model_params"]).to(device)
    # Same losses, less time: transposed up-sampling, in-place ReLUs, and channels-last where it times faster here.
    channels_last = training_layout(model, dataset, params, device, stage.mixed)
    optimize_for_training(model, channels_last)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    # Without a flow predictor, regions feed only the equivariance losses; without image losses, nothing feeds the
    # generator: either may leave parameters without gradients.
    model = distribute(model, device, sync_bn=params["use_sync_bn"],
                       find_unused_parameters=networks["generator"].pixelwise_flow_predictor is None
                       or not image_losses)
    if verbose and rank_and_world()[0] == 0:
        print(model)
    if compile:
        model = compiled(model, compile)  # traced at the first step: one graph, no break (tests/test_train.py)

    def forward(batch):
        source = batch["source"].to(device, non_blocking=True).contiguous(memory_format=memory_format)  # (B, C, H, W)
        driving = batch["driving"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
        transform = RandomTransform(source.shape[0], **params["transform_params"], device=device)
        if compile:  # a new step: CUDA graphs (reduce-overhead) may reuse the last step's output memory
            torch.compiler.cudagraph_mark_step_begin()
        with stage.mixed.autocast():
            return model(source, driving, transform)

    visualizer = Visualizer(**config.get("visualizer_params", {}))
    stage.forward = forward
    stage.picture = lambda result: picture(visualizer, result.batch, result.out)
    loader = make_loader(dataset, params, device, "train_params", seed)
    logger = Logger(log_dir, "reconstruction", enabled=rank_and_world()[0] == 0)
    return train_epochs(stage, loader, logger, params, log_dir=log_dir, seed=seed)
