"""Tiny model configs for unit tests: the model of ``tests/data/tiny.yaml`` (the one tiny test config, which the
training tests use whole) and variants of it that cover every switch of the published models, at toy widths."""
import copy
from pathlib import Path

import yaml

TINY_CONFIG = Path(__file__).parent / "data" / "tiny.yaml"
BASE = yaml.safe_load(TINY_CONFIG.read_text())["model_params"]

# name -> overrides as {dotted.path: value}
VARIANTS = {
    "mraa": {},
    "regression": {"region_predictor_params.pca_based": False},
    "keypoints": {"estimate_affine": False, "region_predictor_params.pca_based": False,
                  "generator_params.pixelwise_flow_predictor_params.use_covar_heatmap": False},
    "bg_zero": {"bg_predictor_params.bg_type": "zero"},
    "bg_shift": {"bg_predictor_params.bg_type": "shift"},
    "bg_perspective": {"bg_predictor_params.bg_type": "perspective"},
    "no_skips_no_occlusion": {"generator_params.skips": False,
                              "generator_params.pixelwise_flow_predictor_params.estimate_occlusion_map": False},
    "plain_heatmaps": {"generator_params.pixelwise_flow_predictor_params.use_covar_heatmap": False,
                       "generator_params.pixelwise_flow_predictor_params.use_deformed_source": False},
    "no_axis_swap_pad3": {"revert_axis_swap": False, "region_predictor_params.pad": 3,
                          "region_predictor_params.scale_factor": 0.5, "region_predictor_params.num_blocks": 3,
                          "generator_params.pixelwise_flow_predictor_params.num_blocks": 3},
}


def tiny_model_params(variant="mraa", **overrides):
    """``model_params`` of a tiny model: the named variant, then ``overrides`` (dotted paths with '__')."""
    params = copy.deepcopy(BASE)
    changes = dict(VARIANTS[variant])
    changes.update({k.replace("__", "."): v for k, v in overrides.items()})
    for path, value in changes.items():
        *parents, key = path.split(".")
        node = params
        for parent in parents:
            node = node[parent]
        node[key] = value
    return params
