"""Pictures of what the model does: frames with region centres, coloured region maps, image grids.

Interface, shared by training (``train-vis/``) and the evaluation modes (reconstruction and animation videos)::

    vis = Visualizer(kp_size=5, draw_border=True, colormap='gist_rainbow', region_bg_color=(1, 1, 1))
    image = vis.visualize(driving, source, out)  # uint8 (rows * H, columns * W, 3)

``driving`` and ``source`` are (B, C, H, W) tensors or numpy arrays in [0, 1] (B may be 1: one video frame).
``out`` is a dict; every entry is optional and, when present, adds a column, in this order:

==========================  =====================================================================
column                      from ``out``
==========================  =====================================================================
source                      ``source_region_params['shift']`` (B, K, 2) drawn as centres
transformed frame           ``transformed_frame`` (B, C, H, W), ``transformed_region_params``
driving                     ``driving_region_params['shift']`` drawn as centres
deformed source             ``deformed`` (B, C, H, W): the source warped by the predicted flow
prediction                  ``prediction`` (B, C, H, W); ``prediction_region_params`` centres
occlusion map               ``occlusion_map`` (B, 1, h, w), grey, resized to H x W
source regions              ``source_region_params['heatmap']`` (B, K, h', w'), coloured per region
driving regions             ``driving_region_params['heatmap']``, coloured per region
==========================  =====================================================================

Each row is one batch item. Region k is drawn in ``colormap(k / K)``; the colour maps are implemented here,
without matplotlib. Centres are in [-1, 1] coordinates, (x, y) last (see ``modules/__init__.py``).
"""
import numpy as np
import torch
import torch.nn.functional as F
from skimage.draw import disk

# Piecewise-linear colour maps as (position, (r, g, b)) stops; gist_rainbow's stops are matplotlib's.
COLORMAPS = {
    "gist_rainbow": ((0.000, (1.00, 0.00, 0.16)), (0.030, (1.00, 0.00, 0.00)), (0.215, (1.00, 1.00, 0.00)),
                     (0.400, (0.00, 1.00, 0.00)), (0.586, (0.00, 1.00, 1.00)), (0.770, (0.00, 0.00, 1.00)),
                     (0.954, (1.00, 0.00, 1.00)), (1.000, (1.00, 0.00, 0.75))),
    "hsv": ((0.0, (1.0, 0.0, 0.0)), (1 / 6, (1.0, 1.0, 0.0)), (2 / 6, (0.0, 1.0, 0.0)), (3 / 6, (0.0, 1.0, 1.0)),
            (4 / 6, (0.0, 0.0, 1.0)), (5 / 6, (1.0, 0.0, 1.0)), (1.0, (1.0, 0.0, 0.0))),
    "gray": ((0.0, (0.0, 0.0, 0.0)), (1.0, (1.0, 1.0, 1.0))),
}


def colormap(name, values):
    """RGB colours in [0, 1] of ``values`` in [0, 1] under the named colour map: (N,) -> (N, 3)."""
    if name not in COLORMAPS:
        raise ValueError(f"unknown colormap {name!r} in visualizer_params: use one of {', '.join(COLORMAPS)}")
    stops = COLORMAPS[name]
    positions = np.array([p for p, _ in stops])
    colours = np.array([c for _, c in stops])  # (S, 3)
    values = np.clip(np.asarray(values, dtype=np.float64), 0, 1)
    return np.stack([np.interp(values, positions, colours[:, i]) for i in range(3)], axis=-1)  # (N, 3)


def _as_tensor(x):
    return torch.as_tensor(np.asarray(x)) if not torch.is_tensor(x) else x


def _resize(x, size):
    """(B, C, h, w) tensor -> float32 (B, C, H, W) on the CPU, bilinear when the size changes."""
    x = _as_tensor(x).detach().float().cpu()
    if tuple(x.shape[2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x


def to_images(x, size=None):
    """(B, C, H, W) in [0, 1] -> numpy (B, H, W, 3) float32; one channel is shown as grey."""
    x = _as_tensor(x)
    x = _resize(x, size or x.shape[2:]).clamp(0, 1)  # (B, C, H, W)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).numpy().copy()  # (B, H, W, 3)


class Visualizer:
    """Draws region centres and heatmaps and lays images out in a grid; see the module docstring.

    Args:
        kp_size: radius of a drawn region centre, in pixels.
        draw_border: outline each centre in black so it stands out on any background.
        colormap: colour map of the regions (gist_rainbow, hsv or gray).
        region_bg_color: RGB in [0, 1] of the background of the region images.
    """

    def __init__(self, kp_size=5, draw_border=True, colormap="gist_rainbow", region_bg_color=(1, 1, 1)):
        if colormap not in COLORMAPS:
            raise ValueError(f"unknown colormap {colormap!r} in visualizer_params: use one of "
                             f"{', '.join(COLORMAPS)}")
        self.kp_size = kp_size
        self.draw_border = draw_border
        self.colormap = colormap
        self.region_bg_color = np.asarray(region_bg_color, dtype=np.float32).reshape(3)

    def region_colours(self, num_regions):
        """(K, 3) colours in [0, 1], region k at ``k / K`` of the colour map."""
        return colormap(self.colormap, np.arange(num_regions) / num_regions)

    def draw_centres(self, images, shift):
        """Draw region centres on images: (B, H, W, 3) float, ``shift`` (B, K, 2) in [-1, 1] -> a new array."""
        images = images.copy()
        shift = _as_tensor(shift).detach().float().cpu().numpy()  # (B, K, 2)
        B, H, W, _ = images.shape
        colours = self.region_colours(shift.shape[1])  # (K, 3)
        for b in range(B):
            for k, (x, y) in enumerate(shift[b]):
                centre = ((y + 1) / 2 * (H - 1), (x + 1) / 2 * (W - 1))  # (row, column) in pixels
                if not np.all(np.isfinite(centre)):
                    continue
                if self.draw_border:
                    rr, cc = disk(centre, self.kp_size + 1, shape=(H, W))
                    images[b, rr, cc] = 0
                rr, cc = disk(centre, self.kp_size, shape=(H, W))
                images[b, rr, cc] = colours[k]
        return images

    def colour_heatmaps(self, heatmap, size):
        """Coloured region map: each region's heatmap, scaled to a peak of 1, in its colour over the background.

        Args: heatmap (B, K, h', w'); size (H, W). Returns numpy (B, H, W, 3).
        """
        heatmap = _resize(heatmap, size)  # (B, K, H, W)
        peak = heatmap.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
        weights = (heatmap / peak).numpy()  # (B, K, H, W), each region's peak at 1
        colours = self.region_colours(weights.shape[1]).astype(np.float32)  # (K, 3)
        coloured = np.einsum("bkhw,kc->bhwc", weights, colours)  # (B, H, W, 3)
        coverage = np.clip(weights.sum(axis=1), 0, 1)[..., None]  # (B, H, W, 1)
        return np.clip(coloured + (1 - coverage) * self.region_bg_color, 0, 1)

    def columns(self, driving, source, out):
        """The grid's columns, each numpy (B, H, W, 3) float in [0, 1], in the order of the module docstring."""
        size = tuple(_as_tensor(driving).shape[2:])
        columns = []

        def frame(image, params_key):
            images = to_images(image, size)
            params = out.get(params_key)
            if params is not None and "shift" in params:
                images = self.draw_centres(images, params["shift"])
            columns.append(images)

        frame(source, "source_region_params")
        if "transformed_frame" in out:
            frame(out["transformed_frame"], "transformed_region_params")
        frame(driving, "driving_region_params")
        if "deformed" in out:
            frame(out["deformed"], None)
        if "prediction" in out:
            frame(out["prediction"], "prediction_region_params")
        if out.get("occlusion_map") is not None:
            columns.append(to_images(out["occlusion_map"], size))
        for key in ("source_region_params", "driving_region_params"):
            params = out.get(key)
            if params is not None and "heatmap" in params:
                columns.append(self.colour_heatmaps(params["heatmap"], size))
        return columns

    def visualize(self, driving, source, out):
        """One uint8 image (B * H, n_columns * W, 3): a row per batch item, columns as in the module docstring."""
        columns = self.columns(driving, source, out)
        grid = np.concatenate([np.concatenate(list(column), axis=0) for column in columns], axis=1)  # (B*H, n*W, 3)
        return (255 * np.clip(grid, 0, 1)).round().astype(np.uint8)
