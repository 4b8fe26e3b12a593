"""Animation: turning driving region params into the params the generator renders (METHOD.md §7)."""
import numpy as np
import torch
from scipy.spatial import ConvexHull, QhullError

ANIMATION_MODES = ("standard", "relative", "avd")


def _hull_area(shift, what):
    """Area of the convex hull of one frame's region centres (K, 2); fails clearly when it has none."""
    points = shift.detach().float().cpu().numpy()
    try:
        return ConvexHull(points).volume  # in 2-D, 'volume' is the area
    except (QhullError, ValueError):
        raise ValueError(f"the region centres of the {what} are degenerate (they lie on a line or coincide), so "
                         "their convex hull has no area and relative motion cannot be scaled: use "
                         "adapt_movement_scale=False (--no-adapt_scale) or another mode") from None


def get_animation_region_params(source_region_params, driving_region_params, driving_region_params_initial,
                                mode="standard", avd_network=None, adapt_movement_scale=True):
    """Region params to render the source in the driving frame's motion.

    - ``standard``: the driving params as they are.
    - ``relative``: the driving motion since the first driving frame, applied to the source's regions:
      shift = (p_d - p_d0) * scale + p_s; affine = (A_d A_d0^-1) A_s. ``scale`` is the square root of the ratio
      of the convex-hull areas of the source and initial driving centres (batch item 0) when
      ``adapt_movement_scale``, else 1. Other entries (covar, heatmap) are the driving frame's.
    - ``avd``: the AVD network's reconstruction of the driving pose on the source's shape (Sec. 3.4).

    All params are dicts with ``shift`` (B, K, 2) and, for relative and avd, ``affine`` (B, K, 2, 2).
    """
    if mode not in ANIMATION_MODES:
        raise ValueError(f"unknown animation mode {mode!r}: use one of {', '.join(ANIMATION_MODES)}")
    new_region_params = dict(driving_region_params)
    if mode == "standard":
        return new_region_params
    if mode == "avd":
        if avd_network is None:
            raise ValueError("mode 'avd' needs an AVD network: the checkpoint has none (use relative or standard, "
                             "or train one with --mode train_avd)")
        return avd_network(source_region_params, driving_region_params)

    if adapt_movement_scale:
        source_area = _hull_area(source_region_params["shift"][0], "source")
        driving_area = _hull_area(driving_region_params_initial["shift"][0], "initial driving frame")
        movement_scale = float(np.sqrt(source_area) / np.sqrt(driving_area))
    else:
        movement_scale = 1.0
    shift_diff = driving_region_params["shift"] - driving_region_params_initial["shift"]  # (B, K, 2)
    new_region_params["shift"] = shift_diff * movement_scale + source_region_params["shift"]
    if "affine" in driving_region_params:
        affine_diff = driving_region_params["affine"] @ torch.inverse(driving_region_params_initial["affine"])
        new_region_params["affine"] = affine_diff @ source_region_params["affine"]  # (B, K, 2, 2)
    return new_region_params
