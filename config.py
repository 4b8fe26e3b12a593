"""Reading and validating YAML configs, the one place that knows every key.

The reference configs (``config/vox256.yaml`` ...) and users' own configs in that format load unchanged. A key
that is unknown, a required key that is missing, or a value of the wrong kind is a :class:`ConfigError` that
names the key's full path (``model_params.region_predictor_params.temprature: unknown key``). All problems of a
file are reported at once. Optional keys missing from a file are filled with their defaults, so the config a
run saves next to its outputs is the resolved one.
"""
import difflib
import re
from pathlib import Path

import yaml

REQUIRED = object()


class ConfigError(ValueError):
    """A config file cannot be used; the message names the file and every offending key."""


class Kind:
    """A kind of value: a name for messages and a check that returns the (possibly converted) value."""

    def __init__(self, name, check):
        self.name, self.check = name, check


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_FLOAT_STRING = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _check_float(v):
    # PyYAML reads `1e-3` (no dot) as a string: accept such spellings of numbers rather than fail on them.
    if isinstance(v, str) and _FLOAT_STRING.match(v.strip()):
        return float(v)
    if not _is_number(v):
        raise TypeError
    return v


def _check_int(v):
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError
    return v


def _check_bool(v):
    if not isinstance(v, bool):
        raise TypeError
    return v


def _check_str(v):
    if not isinstance(v, str):
        raise TypeError
    return v


def _list_of(check):
    def checker(v):
        if not isinstance(v, (list, tuple)):
            raise TypeError
        return [check(x) for x in v]
    return checker


def _optional(check):
    def checker(v):
        return None if v is None else check(v)
    return checker


def _choice(*options):
    def checker(v):
        if v not in options:
            raise TypeError
        return v
    return checker


INT = Kind("an integer", _check_int)
FLOAT = Kind("a number", _check_float)
BOOL = Kind("true or false", _check_bool)
STR = Kind("a string", _check_str)
OPT_STR = Kind("a string or null", _optional(_check_str))
OPT_INT = Kind("an integer or null", _optional(_check_int))
INT_LIST = Kind("a list of integers", _list_of(_check_int))
FLOAT_LIST = Kind("a list of numbers", _list_of(_check_float))


def choice(*options):
    return Kind("one of " + ", ".join(repr(o) for o in options), _choice(*options))


class Section(dict):
    """A mapping of key -> (Kind, default) or nested Section. ``required``: whether the section must be there."""

    def __init__(self, fields, required=True):
        super().__init__(fields)
        self.required = required


def _field(kind, default=REQUIRED):
    return kind, default


AUGMENTATION = Section({
    "flip_param": Section({"horizontal_flip": _field(BOOL, False), "time_flip": _field(BOOL, False)}, False),
    "rotation_param": Section({"degrees": _field(FLOAT)}, False),
    "resize_param": Section({"ratio": _field(FLOAT_LIST)}, False),
    "crop_param": Section({"size": _field(INT_LIST)}, False),
    "jitter_param": Section({k: _field(FLOAT, 0.0) for k in ("brightness", "contrast", "saturation", "hue")},
                            False),
}, required=False)

DATASET = Section({
    "root_dir": _field(STR),
    "frame_shape": _field(INT_LIST, [256, 256, 3]),
    "id_sampling": _field(BOOL, False),
    "pairs_list": _field(OPT_STR, None),
    "augmentation_params": AUGMENTATION,
}, required=False)

# Model sections: the defaults are those of the module constructors (tests/test_config.py checks they agree).
REGION_PREDICTOR = Section({
    "temperature": _field(FLOAT),
    "block_expansion": _field(INT),
    "max_features": _field(INT),
    "num_blocks": _field(INT),
    "scale_factor": _field(FLOAT, 1),
    "pca_based": _field(BOOL, False),
    "fast_svd": _field(BOOL, False),
    "pad": _field(INT, 3),
})

BG_PREDICTOR = Section({
    "block_expansion": _field(INT),
    "max_features": _field(INT),
    "num_blocks": _field(INT),
    "bg_type": _field(choice("zero", "shift", "affine", "perspective"), "zero"),
})

FLOW_PREDICTOR = Section({
    "block_expansion": _field(INT),
    "max_features": _field(INT),
    "num_blocks": _field(INT),
    "scale_factor": _field(FLOAT, 1),
    "region_var": _field(FLOAT, 0.01),
    "use_covar_heatmap": _field(BOOL, False),
    "use_deformed_source": _field(BOOL, True),
    "estimate_occlusion_map": _field(BOOL, False),
}, required=False)

GENERATOR = Section({
    "block_expansion": _field(INT),
    "max_features": _field(INT),
    "num_down_blocks": _field(INT),
    "num_bottleneck_blocks": _field(INT),
    "skips": _field(BOOL, False),
    "pixelwise_flow_predictor_params": FLOW_PREDICTOR,
})

AVD = Section({
    "id_bottle_size": _field(INT, 64),
    "pose_bottle_size": _field(INT, 64),
}, required=False)

MODEL = Section({
    "num_regions": _field(INT),
    "num_channels": _field(INT),
    "estimate_affine": _field(BOOL),
    "revert_axis_swap": _field(BOOL),
    "bg_predictor_params": BG_PREDICTOR,
    "region_predictor_params": REGION_PREDICTOR,
    "generator_params": GENERATOR,
    "avd_network_params": AVD,
})

TRAIN = Section({
    "num_epochs": _field(INT),
    "num_repeats": _field(INT, 1),
    "epoch_milestones": _field(INT_LIST, []),
    "lr": _field(FLOAT),
    "batch_size": _field(INT),
    "dataloader_workers": _field(INT, 0),
    "checkpoint_freq": _field(INT),
    "scales": _field(FLOAT_LIST),
    "use_sync_bn": _field(BOOL, False),
    # Perceptual features: 'imagenet' (torchvision's VGG-19 weights, as published) or 'random' (fixed random
    # VGG-19 weights: for offline tests and the synthetic data only, never chosen silently).
    "vgg_weights": _field(choice("imagenet", "random"), "imagenet"),
    # Mixed precision on CUDA: 'none', 'bf16' or 'fp16' (with a grad scaler); ignored on the CPU.
    "mixed_precision": _field(choice("none", "bf16", "fp16"), "none"),
    "transform_params": Section({
        "sigma_affine": _field(FLOAT),
        "sigma_tps": _field(FLOAT),
        "points_tps": _field(INT),
    }),
    "loss_weights": Section({
        "perceptual": _field(FLOAT_LIST),
        "equivariance_shift": _field(FLOAT, 0),
        "equivariance_affine": _field(FLOAT, 0),
        "l1": _field(FLOAT, 0),  # a pixel L1 term; not in the published training (0)
    }),
}, required=False)

TRAIN_AVD = Section({
    "num_epochs": _field(INT),
    "num_repeats": _field(INT, 1),
    "batch_size": _field(INT),
    "dataloader_workers": _field(INT, 0),
    "checkpoint_freq": _field(INT),
    "epoch_milestones": _field(INT_LIST, []),
    "lr": _field(FLOAT),
    "lambda_shift": _field(FLOAT),
    "lambda_affine": _field(FLOAT),
    "random_scale": _field(FLOAT),
}, required=False)

RECONSTRUCTION = Section({
    "num_videos": _field(OPT_INT, None),
    "format": _field(STR, ".mp4"),
}, required=False)

ANIMATE = Section({
    "num_pairs": _field(INT, 50),
    "format": _field(STR, ".mp4"),
    "mode": _field(choice("standard", "relative", "avd"), "avd"),
}, required=False)

VISUALIZER = Section({
    "kp_size": _field(INT, 5),
    "draw_border": _field(BOOL, True),
    "colormap": _field(STR, "gist_rainbow"),
    "region_bg_color": _field(FLOAT_LIST, [1, 1, 1]),
}, required=False)

SCHEMA = Section({
    "dataset_params": DATASET,
    "model_params": MODEL,
    "train_params": TRAIN,
    "train_avd_params": TRAIN_AVD,
    "reconstruction_params": RECONSTRUCTION,
    "animate_params": ANIMATE,
    "visualizer_params": VISUALIZER,
})


def _validate(node, schema, path, errors):
    """Check ``node`` against ``schema``; returns the resolved copy, appending messages to ``errors``."""
    prefix = path + "." if path else ""
    if not isinstance(node, dict):
        errors.append(f"{path or '<top level>'}: expected a mapping of keys, got {type(node).__name__}")
        return node
    resolved = {}
    for key, value in node.items():
        if key not in schema:
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(schema)})"
            errors.append(f"{prefix}{key}: unknown key{hint}")
    for key, spec in schema.items():
        if isinstance(spec, Section):
            if key in node:
                resolved[key] = _validate(node[key], spec, prefix + key, errors)
            elif spec.required:
                errors.append(f"{prefix}{key}: missing section")
            continue
        kind, default = spec
        if key not in node:
            if default is REQUIRED:
                errors.append(f"{prefix}{key}: missing key (expected {kind.name})")
            else:
                resolved[key] = list(default) if isinstance(default, list) else default
            continue
        try:
            resolved[key] = kind.check(node[key])
        except (TypeError, ValueError):
            errors.append(f"{prefix}{key}: expected {kind.name}, got {node[key]!r} ({type(node[key]).__name__})")
    return resolved


def validate_config(config, source="<config>"):
    """Validate a config dict; returns the resolved copy with defaults filled, or raises ConfigError."""
    errors = []
    resolved = _validate(config, SCHEMA, "", errors)
    if errors:
        raise ConfigError(f"{source}: invalid config\n  " + "\n  ".join(errors))
    return resolved


def load_config(path):
    """Read a YAML config with ``yaml.safe_load`` and validate it; returns the resolved dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if config is None:
        raise ConfigError(f"{path}: the file is empty; expected a config with at least model_params")
    return validate_config(config, source=str(path))


def require_section(config, name, source="<config>"):
    """The section ``name`` of a resolved config, or a ConfigError saying the mode needs it."""
    if name not in config:
        raise ConfigError(f"{source}: this mode needs the section '{name}', which the config does not have")
    return config[name]


def save_config(config, path):
    """Write a (resolved) config as YAML."""
    with open(path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False, default_flow_style=None)


# TEMP (helper "media"): stand-ins for helper "config"'s versions, to be dropped at the merge.
def _check_frame_shape_or_null(v):
    return None if v is None else _list_of(_check_int)(v)


DATASET["frame_shape"] = _field(Kind("a list of integers or null", _check_frame_shape_or_null), [256, 256, 3])
MAX_FRAME_SIZE = 4096


def check_frame_size(config, height, width, what):
    """Raise ConfigError unless frames of height x width can go through the networks of ``config``."""
    import math
    params = config.get("model_params", config)
    region, generator = params["region_predictor_params"], params["generator_params"]
    flow = generator.get("pixelwise_flow_predictor_params", {})
    stages = [(region.get("scale_factor", 1), region["num_blocks"]), (flow.get("scale_factor", 1),
                                                                        flow.get("num_blocks", 0)),
              (1, generator["num_down_blocks"])]
    multiple = math.lcm(*(round(1 / scale) * 2 ** blocks for scale, blocks in stages))
    fits = all(all(int(size * scale) >= 2 ** blocks and int(size * scale) % 2 ** blocks == 0
                   for scale, blocks in stages) for size in (height, width))
    if not fits:
        raise ConfigError(f"{what}: frames of {height}x{width} cannot go through the networks (they halve the size "
                          f"several times): height and width must be multiples of {multiple}, e.g. "
                          f"{max(multiple, height // multiple * multiple)},{max(multiple, width // multiple * multiple)}")
    if max(height, width) > MAX_FRAME_SIZE:
        raise ConfigError(f"{what}: frames of {height}x{width} are larger than {MAX_FRAME_SIZE} pixels on a side, "
                          f"which the networks' memory would not allow: use at most {MAX_FRAME_SIZE}")
