"""The one place that builds the networks from a config."""
from modules.avd_network import AVDNetwork
from modules.bg_motion_predictor import BGMotionPredictor
from modules.generator import Generator
from modules.region_predictor import RegionPredictor

# Checkpoint keys of the networks, in the order the published files hold them.
MODEL_NAMES = ("generator", "region_predictor", "bg_predictor", "avd_network")


def build_models(config, device=None):
    """Build the four networks from a resolved config (see ``config.load_config``) or its ``model_params``.

    Returns:
        dict with keys ``generator``, ``region_predictor``, ``bg_predictor``, ``avd_network`` (the checkpoint
        keys), each module on ``device`` (default: the CPU) and in training mode.
    """
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
    if device is not None:
        models = {name: model.to(device) for name, model in models.items()}
    return models
