"""The one place that loads networks for inference: config + checkpoint -> networks in eval mode on a device.

The demo, ``--mode reconstruction`` / ``--mode animate`` and the evaluation tools all load through here, so a
checkpoint that lacks a network, or does not fit the config, gets the same message everywhere, naming both
files.
"""
from pathlib import Path

import torch

from checkpoint import CheckpointError, load_checkpoint
from config import load_config
from device import configure, pick_device
from modules.build import build_models

ANIMATION_NETWORKS = ("generator", "region_predictor", "avd_network")


def missing_avd_error(checkpoint_path, needed_by, instead):
    """The one message for a checkpoint without an AVD network (a first-stage checkpoint) that ``needed_by``
    (e.g. '--mode avd') needs; ``instead`` says what the user can do (e.g. 'use --mode relative or standard')."""
    return CheckpointError(f"{checkpoint_path}: checkpoint has no avd_network (a first-stage checkpoint), which "
                           f"{needed_by} needs: {instead}, or train AVD first (python run.py --mode train_avd "
                           f"--checkpoint ...)")


def load_into(models, checkpoint_path, names=ANIMATION_NETWORKS, device="cpu", config_name="the config",
              avd_needed_by=None, instead="use --mode relative or standard"):
    """Load the networks ``names`` of ``models`` (built from the config named ``config_name``) from a checkpoint,
    and put them in eval mode on ``device``.

    ``avd_network``, when named, is optional unless ``avd_needed_by`` says what needs it. Returns {name: network}
    for the networks the checkpoint holds (without ``avd_network`` when it has none).
    """
    networks = {name: models[name] for name in names}
    checkpoint = load_checkpoint(checkpoint_path, networks, config_name=str(config_name), map_location=device,
                                 optional=("avd_network",))
    if "avd_network" in networks and "avd_network" not in checkpoint:
        if avd_needed_by:
            raise missing_avd_error(checkpoint_path, avd_needed_by, instead)
        del networks["avd_network"]
    return {name: network.to(device).eval() for name, network in networks.items()}


def load_networks(config_path, checkpoint_path, device="auto", names=ANIMATION_NETWORKS, **options):
    """Build the networks of a config file and load them from a checkpoint (see ``load_into`` for ``options``).

    ``device``: 'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:N' or a torch.device.
    """
    device = configure(device if isinstance(device, torch.device) else pick_device(device))
    # Every parameter of the networks returned is loaded (strictly), so none is initialised first: 0.4 s saved.
    models = build_models(load_config(config_path), device, initialise=False)
    return load_into(models, checkpoint_path, names, device, config_name=Path(config_path), **options)
