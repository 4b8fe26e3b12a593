"""Tiny model configs for unit tests: every switch of the published models, at toy widths."""
import copy

BASE = {
    "num_regions": 4,
    "num_channels": 3,
    "estimate_affine": True,
    "revert_axis_swap": True,
    "bg_predictor_params": {"block_expansion": 4, "max_features": 16, "num_blocks": 2, "bg_type": "affine"},
    "region_predictor_params": {"temperature": 0.1, "block_expansion": 4, "max_features": 16, "num_blocks": 3,
                                "scale_factor": 0.5, "pca_based": True, "pad": 3},
    "generator_params": {
        "block_expansion": 4, "max_features": 16, "num_down_blocks": 2, "num_bottleneck_blocks": 1, "skips": True,
        "pixelwise_flow_predictor_params": {"block_expansion": 4, "max_features": 16, "num_blocks": 3,
                                            "scale_factor": 0.5, "use_deformed_source": True,
                                            "use_covar_heatmap": True, "estimate_occlusion_map": True}},
    "avd_network_params": {"id_bottle_size": 8, "pose_bottle_size": 8},
}

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
    "no_axis_swap_pad0": {"revert_axis_swap": False, "region_predictor_params.pad": 0,
                          "region_predictor_params.scale_factor": 1},
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
