"""The one place that builds the networks from a config."""
import contextlib
import threading

from torch import nn

from modules.avd_network import AVDNetwork
from modules.bg_motion_predictor import BGMotionPredictor
from modules.generator import Generator
from modules.region_predictor import RegionPredictor

# Checkpoint keys of the networks, in the order the published files hold them.
MODEL_NAMES = ("generator", "region_predictor", "bg_predictor", "avd_network")


_INITIALISED = (nn.modules.conv._ConvNd, nn.Linear)  # the layers whose random initialisation costs
_UNINITIALISED_LOCK = threading.Lock()


@contextlib.contextmanager
def parameters_left_uninitialised():
    """Within it, convolutions and linear layers skip their random initialisation: for networks whose every
    parameter is loaded right after (vox256's four networks built in 0.02 s instead of 0.4 on a 2-core CPU). One
    thread at a time."""
    with _UNINITIALISED_LOCK:
        saved = {cls: cls.__dict__["reset_parameters"] for cls in _INITIALISED}
        for cls in _INITIALISED:
            cls.reset_parameters = lambda self: None
        try:
            yield
        finally:
            for cls, method in saved.items():
                cls.reset_parameters = method


def build_models(config, device=None, initialise=True):
    """Build the four networks from a resolved config (see ``config.load_config``) or its ``model_params``.

    ``initialise=False`` leaves the convolutions' and linear layers' parameters as allocated (any values): only for
    networks that a strict checkpoint load fills right after (``inference.load_networks``).

    Returns:
        dict with keys ``generator``, ``region_predictor``, ``bg_predictor``, ``avd_network`` (the checkpoint
        keys), each module on ``device`` (default: the CPU) and in training mode.
    """
    with contextlib.nullcontext() if initialise else parameters_left_uninitialised():
        models = _build(config)
    if device is not None:
        models = {name: model.to(device) for name, model in models.items()}
    return models


def _build(config):
    params = config.get("model_params", config)
    K, C = params["num_regions"], params["num_channels"]
    models = {
        "generator": Generator(num_regions=K, num_channels=C, revert_axis_swap=params["revert_axis_swap"],
                               **params["generator_params"]),
        "region_predictor": RegionPredictor(num_regions=K, num_channels=C,
                                            estimate_affine=params["estimate_affine"],
                                            **params["region_predictor_params"]),
        "bg_predictor": BGMotionPredictor(num_channels=C, **params["bg_predictor_params"]),
        "avd_network": AVDNetwork(num_regions=K, revert_axis_swap=params["revert_axis_swap"],
                                  **params.get("avd_network_params", {})),
    }
    return models
