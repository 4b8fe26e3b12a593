"""The training/evaluation visualiser: colour maps without matplotlib, centres in the right place, grid layout."""
import numpy as np
import pytest
import torch

from visualizer import Visualizer, colormap


def test_gist_rainbow_matches_known_stops():
    colours = colormap("gist_rainbow", [0.0, 0.4, 0.77, 1.0])
    np.testing.assert_allclose(colours, [[1, 0, 0.16], [0, 1, 0], [0, 0, 1], [1, 0, 0.75]], atol=1e-6)


def test_unknown_colormap_is_named():
    with pytest.raises(ValueError, match="viridis"):
        Visualizer(colormap="viridis")


def test_centre_drawn_at_its_pixel():
    vis = Visualizer(kp_size=2, draw_border=False)
    images = np.zeros((1, 33, 65, 3), np.float32)
    shift = torch.tensor([[[0.0, -1.0]]])  # x = 0 (middle column), y = -1 (top row)
    drawn = vis.draw_centres(images, shift)
    np.testing.assert_allclose(drawn[0, 0, 32], vis.region_colours(1)[0])
    assert drawn[0, 16, 32].sum() == 0 and images.sum() == 0  # the input is left as it was


@pytest.mark.parametrize("batch", [1, 3])
def test_grid_has_a_row_per_item_and_a_column_per_entry(batch):
    B, K, H, W = batch, 4, 32, 48
    params = {"shift": torch.rand(B, K, 2) * 2 - 1, "heatmap": torch.rand(B, K, 26, 42)}
    out = {"source_region_params": params, "driving_region_params": params, "transformed_frame": torch.rand(B, 3, H, W),
           "transformed_region_params": params, "deformed": torch.rand(B, 3, H, W),
           "prediction": torch.rand(B, 3, H, W), "occlusion_map": torch.rand(B, 1, 8, 12)}
    image = Visualizer().visualize(torch.rand(B, 3, H, W), np.random.rand(B, 3, H, W), out)
    assert image.dtype == np.uint8 and image.shape == (B * H, 8 * W, 3)
    only_frames = Visualizer().visualize(torch.rand(B, 3, H, W), torch.rand(B, 3, H, W), {})
    assert only_frames.shape == (B * H, 2 * W, 3)


def test_region_map_background_and_colour():
    vis = Visualizer(region_bg_color=(0, 0, 0))
    heatmap = torch.zeros(1, 2, 4, 4)
    heatmap[0, 1, 0, 0] = 1
    coloured = vis.colour_heatmaps(heatmap, (4, 4))
    np.testing.assert_allclose(coloured[0, 0, 0], vis.region_colours(2)[1], atol=1e-6)
    assert coloured[0, 3, 3].sum() == 0
