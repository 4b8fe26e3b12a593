"""Reading and validating YAML configs, the one place that knows every key.

The reference configs (``config/vox256.yaml`` ...) and users' own configs in that format load unchanged. A key
that is unknown, a required key that is missing, or a value of the wrong kind or outside its range is a
:class:`ConfigError` that names the key's full path (``model_params.region_predictor_params.temprature: unknown
key``, ``train_params.batch_size: expected an integer >= 1, got 0 (int)``). All problems of a file are reported
at once. Optional keys missing from a file are filled with their defaults, so the config a run saves next to its
outputs is the resolved one. A frame size is checked against the networks' down-sampling (``check_frame_size``).
"""
import difflib
import math
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


def _where(check, ok):
    """``check``, then a range test: a value of the right kind outside the range is refused too."""
    def checker(v):
        v = check(v)
        if not ok(v):
            raise ValueError
        return v
    return checker


def _frame_shape(v):
    """[H, W] or [H, W, 3] with positive sizes (the dataset reads RGB)."""
    shape = _list_of(_check_int)(v)
    if len(shape) not in (2, 3) or min(shape[:2]) < 1 or shape[2:] not in ([], [3]):
        raise ValueError
    return shape


BOOL = Kind("true or false", _check_bool)
STR = Kind("a string", _check_str)
OPT_STR = Kind("a string or null", _optional(_check_str))
# Ranges: a value the code cannot use is refused where the file is read, not after an epoch of training.
COUNT = Kind("an integer >= 1", _where(_check_int, lambda v: v >= 1))
OPT_COUNT = Kind("an integer >= 1 or null", _optional(_where(_check_int, lambda v: v >= 1)))
INT_0 = Kind("an integer >= 0", _where(_check_int, lambda v: v >= 0))
POSITIVE = Kind("a number > 0", _where(_check_float, lambda v: v > 0))
WEIGHT = Kind("a number >= 0", _where(_check_float, lambda v: v >= 0))
FRACTION = Kind("a number in (0, 1]", _where(_check_float, lambda v: 0 < v <= 1))
MILESTONES = Kind("a list of integers >= 1", _where(_list_of(_check_int), lambda v: all(m >= 1 for m in v)))
SCALES = Kind("a non-empty list of numbers in (0, 1]",
              _where(_list_of(_check_float), lambda v: len(v) > 0 and all(0 < s <= 1 for s in v)))
# One weight per VGG-19 stage, as in the published training; fewer use the first stages only; all zeros: off.
PERCEPTUAL = Kind("a list of at most 5 numbers >= 0",
                  _where(_list_of(_check_float), lambda v: len(v) <= 5 and all(w >= 0 for w in v)))
COLOUR = Kind("a list of 3 numbers in [0, 1]",
              _where(_list_of(_check_float), lambda v: len(v) == 3 and all(0 <= c <= 1 for c in v)))
RATIO_RANGE = Kind("a list of 2 numbers > 0, smallest first",
                   _where(_list_of(_check_float), lambda v: len(v) == 2 and 0 < v[0] <= v[1]))
CROP_SIZE = Kind("a list of 2 integers >= 1 (height, width)",
                 _where(_list_of(_check_int), lambda v: len(v) == 2 and min(v) >= 1))
# null: frames are used at their stored size (the published configs); a list: every frame is resized to it.
FRAME_SHAPE = Kind("null, [height, width] or [height, width, 3] with sizes >= 1", _optional(_frame_shape))


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
    "rotation_param": Section({"degrees": _field(WEIGHT)}, False),
    "resize_param": Section({"ratio": _field(RATIO_RANGE)}, False),
    "crop_param": Section({"size": _field(CROP_SIZE)}, False),
    "jitter_param": Section({k: _field(WEIGHT, 0.0) for k in ("brightness", "contrast", "saturation", "hue")},
                            False),
}, required=False)

DATASET = Section({
    "root_dir": _field(STR),
    "frame_shape": _field(FRAME_SHAPE, [256, 256, 3]),
    "id_sampling": _field(BOOL, False),
    "pairs_list": _field(OPT_STR, None),
    "augmentation_params": AUGMENTATION,
}, required=False)

# Model sections: the defaults are those of the module constructors (tests/test_config.py checks they agree).
REGION_PREDICTOR = Section({
    "temperature": _field(POSITIVE),
    "block_expansion": _field(COUNT),
    "max_features": _field(COUNT),
    "num_blocks": _field(COUNT),
    "scale_factor": _field(FRACTION, 1),
    "pca_based": _field(BOOL, False),
    "fast_svd": _field(BOOL, False),
    "pad": _field(INT_0, 3),
})

BG_PREDICTOR = Section({
    "block_expansion": _field(COUNT),
    "max_features": _field(COUNT),
    "num_blocks": _field(COUNT),
    "bg_type": _field(choice("zero", "shift", "affine", "perspective"), "zero"),
})

FLOW_PREDICTOR = Section({
    "block_expansion": _field(COUNT),
    "max_features": _field(COUNT),
    "num_blocks": _field(COUNT),
    "scale_factor": _field(FRACTION, 1),
    "region_var": _field(POSITIVE, 0.01),
    "use_covar_heatmap": _field(BOOL, False),
    "use_deformed_source": _field(BOOL, True),
    "estimate_occlusion_map": _field(BOOL, False),
}, required=False)

GENERATOR = Section({
    "block_expansion": _field(COUNT),
    "max_features": _field(COUNT),
    "num_down_blocks": _field(INT_0),
    "num_bottleneck_blocks": _field(INT_0),
    "skips": _field(BOOL, False),
    "pixelwise_flow_predictor_params": FLOW_PREDICTOR,
})

AVD = Section({
    "id_bottle_size": _field(COUNT, 64),
    "pose_bottle_size": _field(COUNT, 64),
}, required=False)

MODEL = Section({
    "num_regions": _field(COUNT),
    "num_channels": _field(COUNT),
    "estimate_affine": _field(BOOL),
    "revert_axis_swap": _field(BOOL),
    "bg_predictor_params": BG_PREDICTOR,
    "region_predictor_params": REGION_PREDICTOR,
    "generator_params": GENERATOR,
    "avd_network_params": AVD,
})

TRAIN = Section({
    "num_epochs": _field(COUNT),
    "num_repeats": _field(COUNT, 1),
    "epoch_milestones": _field(MILESTONES, []),
    "lr": _field(POSITIVE),
    "batch_size": _field(COUNT),
    # More workers than the machine has cores are clamped to the cores when the loader is made, with a note.
    "dataloader_workers": _field(INT_0, 0),
    "checkpoint_freq": _field(COUNT),
    "scales": _field(SCALES),
    # Synchronised batch norm across GPUs in distributed training; the published configs say False.
    "use_sync_bn": _field(BOOL, False),
    # Perceptual features: 'imagenet' (torchvision's VGG-19 weights, as published) or 'random' (fixed random
    # VGG-19 weights: for offline tests and the synthetic data only, never chosen silently).
    "vgg_weights": _field(choice("imagenet", "random"), "imagenet"),
    # Mixed precision on CUDA: 'none', 'bf16' or 'fp16' (with a grad scaler); on CPUs bf16 only, where native.
    "mixed_precision": _field(choice("none", "bf16", "fp16"), "none"),
    "transform_params": Section({
        "sigma_affine": _field(WEIGHT),
        "sigma_tps": _field(WEIGHT),
        "points_tps": _field(COUNT),
    }),
    "loss_weights": Section({
        "perceptual": _field(PERCEPTUAL),
        "equivariance_shift": _field(WEIGHT, 0),
        "equivariance_affine": _field(WEIGHT, 0),
        "l1": _field(WEIGHT, 0),  # a pixel L1 term; not in the published training (0)
    }),
}, required=False)

TRAIN_AVD = Section({
    "num_epochs": _field(COUNT),
    "num_repeats": _field(COUNT, 1),
    "batch_size": _field(COUNT),
    "dataloader_workers": _field(INT_0, 0),
    "checkpoint_freq": _field(COUNT),
    "epoch_milestones": _field(MILESTONES, []),
    "lr": _field(POSITIVE),
    "lambda_shift": _field(WEIGHT),
    "lambda_affine": _field(WEIGHT),
    "random_scale": _field(Kind("a number in [0, 1)", _where(_check_float, lambda v: 0 <= v < 1))),
}, required=False)

RECONSTRUCTION = Section({
    "num_videos": _field(OPT_COUNT, None),
    "format": _field(STR, ".mp4"),
}, required=False)

ANIMATE = Section({
    "num_pairs": _field(COUNT, 50),
    "format": _field(STR, ".mp4"),
    "mode": _field(choice("standard", "relative", "avd"), "avd"),
}, required=False)

VISUALIZER = Section({
    "kp_size": _field(INT_0, 5),
    "draw_border": _field(BOOL, True),
    "colormap": _field(STR, "gist_rainbow"),
    "region_bg_color": _field(COLOUR, [1, 1, 1]),
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
    """Validate a config dict; returns the resolved copy with defaults filled, or raises ConfigError.

    A ``dataset_params.frame_shape`` list must also be a size the model's networks can take
    (:func:`check_frame_size`); ``null`` is checked per video, when the frames are read.
    """
    errors = []
    resolved = _validate(config, SCHEMA, "", errors)
    if errors:
        raise ConfigError(f"{source}: invalid config\n  " + "\n  ".join(errors))
    frame_shape = resolved.get("dataset_params", {}).get("frame_shape")
    if frame_shape is not None and "model_params" in resolved:
        check_frame_size(resolved, *frame_shape[:2], what=f"{source}: dataset_params.frame_shape",
                         source="this config", scales=resolved.get("train_params", {}).get("scales"))
    return resolved


MAX_FRAME_SIDE = 4096  # 10x the published sizes; a larger side is a typo, and would need hundreds of GB


def _downscaled(size, scale):
    """The side a sub-network works at: AntiAliasInterpolation2d keeps every int(1 / scale)-th pixel."""
    return size if scale == 1 else -(-size // int(1 / scale))


def _side_fits(size, params):
    """Whether an image side of ``size`` pixels goes through every network that ``params`` (model_params) builds."""
    region, generator, bg = (params["region_predictor_params"], params["generator_params"],
                             params["bg_predictor_params"])
    flow = generator.get("pixelwise_flow_predictor_params")
    # An hourglass halves its input num_blocks times and doubles it back: only exact halvings meet the skips.
    h = _downscaled(size, region["scale_factor"])
    fits = h % 2 ** region["num_blocks"] == 0 and h + 2 * region["pad"] - 6 >= 1  # the 7x7 region head
    if flow is not None:
        fits = fits and _downscaled(size, flow["scale_factor"]) % 2 ** flow["num_blocks"] == 0
    fits = fits and size % 2 ** generator["num_down_blocks"] == 0  # the decoder must come back to the frame size
    if bg["bg_type"] != "zero":
        fits = fits and size >= 2 ** bg["num_blocks"]  # the encoder's last pooling needs a 2x2 map
    return fits and 1 <= size <= MAX_FRAME_SIDE


def _side_multiple(params):
    """The smallest m such that every multiple of m (large enough) goes through the networks."""
    region, generator = params["region_predictor_params"], params["generator_params"]
    flow = generator.get("pixelwise_flow_predictor_params")
    multiples = [int(1 / region["scale_factor"]) * 2 ** region["num_blocks"], 2 ** generator["num_down_blocks"]]
    if flow is not None:
        multiples.append(int(1 / flow["scale_factor"]) * 2 ** flow["num_blocks"])
    return math.lcm(*multiples)


VGG_MIN_SIDE = 16  # VGG-19 pools four times before its fifth stage: a smaller side pools down to nothing


def check_frame_size(config, height, width, what="frame size", source="this config", scales=None):
    """Raise a one-line ConfigError unless (height, width) frames go through the networks of ``config``.

    ``config`` is a resolved config or its ``model_params``; ``what`` names the size in the message
    (``--img_shape``) and ``source`` the config (``config/vox256.yaml``). The message says the multiple needed:
    ``--img_shape 50x70: height and width must be multiples of 128 from 128 to 4096 for config/vox256.yaml``.
    For training, ``scales`` (``train_params.scales``) also checks the perceptual loss's image pyramid.
    """
    params = config.get("model_params", config)
    if _side_fits(height, params) and _side_fits(width, params):
        for scale in scales or ():
            if min(_downscaled(height, scale), _downscaled(width, scale)) < VGG_MIN_SIDE:
                raise ConfigError(f"{what} {height}x{width}: the perceptual loss's scale {scale} makes it "
                                  f"{_downscaled(height, scale)}x{_downscaled(width, scale)}, and VGG-19 needs "
                                  f"{VGG_MIN_SIDE} pixels per side: larger frames or larger train_params.scales "
                                  f"for {source}")
        return
    multiple = _side_multiple(params)
    sizes = [s for s in range(multiple, MAX_FRAME_SIDE + 1, multiple) if _side_fits(s, params)]
    if not sizes:
        raise ConfigError(f"{what} {height}x{width}: no frame size up to {MAX_FRAME_SIDE} goes through the "
                          f"networks of {source} (sizes must be multiples of {multiple})")

    def nearest(size):
        return min(sizes, key=lambda s: (abs(s - size), s))
    raise ConfigError(f"{what} {height}x{width}: height and width must be multiples of {multiple} from {sizes[0]} "
                      f"to {sizes[-1]} for {source} (nearest that fits: {nearest(height)}x{nearest(width)})")


def load_config(path):
    """Read a YAML config with ``yaml.safe_load`` and validate it; returns the resolved dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; expected a YAML config") from None
    except RecursionError:
        raise ConfigError(f"{path}: the YAML is nested too deeply to be a config") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or e})") from None
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
