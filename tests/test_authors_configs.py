"""The authors' five config files, in their exact format, load unchanged; config/ carries their training values;
and a tiny model in their format (frame_shape null, use_sync_bn) trains, reconstructs and runs the demo."""
import shutil

import imageio.v3 as iio
import numpy as np
import pytest

import demo
import run
import train
from config import load_config
from conftest import REPO_ROOT
from losses import Vgg19
from tiny_training import make_tiny_dataset

# The authors' layout, key for key. Their files differ in the values below (the published training values) and in the
# dataset and model lines each config adds (AUTHORS[name]["dataset_extra"] and ["model_extra"]).
AUTHORS_TEMPLATE = """\
dataset_params:
  root_dir: {root_dir}
  frame_shape: null
  id_sampling: {id_sampling}
{pairs_list}  augmentation_params:
    flip_param:
      horizontal_flip: True
      time_flip: True
{augmentation}
model_params:
  num_regions: {num_regions}
  num_channels: 3
  estimate_affine: True
  revert_axis_swap: True
  bg_predictor_params:
    block_expansion: {bg_width}
    max_features: {bg_max}
    num_blocks: {bg_blocks}
    bg_type: '{bg_type}'
  region_predictor_params:
    temperature: 0.1
    block_expansion: {width}
    max_features: {max_features}
    scale_factor: {scale}
    num_blocks: {blocks}
    pca_based: True
{pad}    fast_svd: False
  generator_params:
    block_expansion: {gen_width}
    max_features: {gen_max}
    num_down_blocks: 2
    num_bottleneck_blocks: {bottleneck}
    skips: True
    pixelwise_flow_predictor_params:
      block_expansion: {gen_width}
      max_features: {max_features}
      num_blocks: {blocks}
      scale_factor: {scale}
      use_deformed_source: True
      use_covar_heatmap: True
      estimate_occlusion_map: True
  avd_network_params:
    id_bottle_size: {bottle}
    pose_bottle_size: {bottle}

train_params:
  num_epochs: {num_epochs}
  num_repeats: {num_repeats}
  epoch_milestones: [60, 90]
  lr: 2.0e-4
  batch_size: {batch_size}
  dataloader_workers: 6
  checkpoint_freq: 50
{use_sync_bn}  scales: [1, 0.5, 0.25, 0.125]
  transform_params:
    sigma_affine: 0.05
    sigma_tps: 0.005
    points_tps: 5
  loss_weights:
    perceptual: [10, 10, 10, 10, 10]
    equivariance_shift: 10
    equivariance_affine: 10

train_avd_params:
  num_epochs: 30
  num_repeats: {avd_num_repeats}
  batch_size: 256
  dataloader_workers: {avd_workers}
  checkpoint_freq: 50
  epoch_milestones: {avd_milestones}
  lr: 1.0e-3
  lambda_shift: 1
  lambda_affine: 1
  random_scale: 0.25

reconstruction_params:
  num_videos: 1000
  format: '.mp4'

animate_params:
  num_pairs: 50
  format: '.mp4'
  mode: 'avd'

visualizer_params:
  kp_size: 5
  draw_border: True
  colormap: 'gist_rainbow'
  region_bg_color: [1, 1, 1]
"""

JITTER = """    jitter_param:
      brightness: 0.1
      contrast: 0.1
      saturation: 0.1
      hue: 0.1
"""
MGIF_AUGMENTATION = """    crop_param:
      size: [256, 256]
    resize_param:
      ratio: [0.9, 1.1]
    jitter_param:
      hue: 0.5
"""
PUBLISHED_MODEL = dict(num_regions=10, bg_width=32, bg_max=1024, bg_blocks=5, width=32, max_features=1024, scale=0.25,
                       blocks=5, gen_width=64, gen_max=512, bottleneck=6, bottle=64, num_epochs=100)
SYNC_BN = "  use_sync_bn: False\n"
PAD_0 = "    pad: 0\n"
PAIRS_NULL = "  pairs_list: null\n"

# The values of the authors' files, which config/ carries too. ted-youtube384's file says 20 regions (its checkpoint has 10).
AUTHORS = {
    "vox256": dict(root_dir="data/vox-png", id_sampling=True, pairs_list=PAIRS_NULL, augmentation=JITTER,
                   bg_type="affine", pad="", num_repeats=75, batch_size=14, use_sync_bn=SYNC_BN,
                   avd_num_repeats=2000, avd_workers=20, avd_milestones=[20, 25]),
    "taichi256": dict(root_dir="data/taichi-png", id_sampling=True, pairs_list=PAIRS_NULL, augmentation=JITTER,
                      bg_type="affine", pad=PAD_0, num_repeats=150, batch_size=14, use_sync_bn="",
                      avd_num_repeats=150, avd_workers=12, avd_milestones=[20, 25]),
    "ted384": dict(root_dir="data/TED384-v2", id_sampling=True, pairs_list=PAIRS_NULL, augmentation=JITTER,
                   bg_type="affine", pad=PAD_0, num_repeats=150, batch_size=6, use_sync_bn="",
                   avd_num_repeats=150, avd_workers=12, avd_milestones=[20, 25]),
    "mgif256": dict(root_dir="data/moving-gif", id_sampling=False, pairs_list="", augmentation=MGIF_AUGMENTATION,
                    bg_type="zero", pad=PAD_0, num_repeats=50, batch_size=14, use_sync_bn="",
                    avd_num_repeats=50, avd_workers=12, avd_milestones=[60, 90]),
    "ted-youtube384": dict(root_dir="data/ted-youtube-384", id_sampling=True, pairs_list=PAIRS_NULL,
                           augmentation=JITTER, bg_type="affine", pad=PAD_0, num_repeats=150, batch_size=20,
                           use_sync_bn=SYNC_BN, avd_num_repeats=500, avd_workers=12, avd_milestones=[20, 25],
                           num_regions=20),
}


def authors_config(name, **changes):
    """The text of the authors' ``<name>.yaml``, with ``changes`` to the template's fields (tiny widths...)."""
    return AUTHORS_TEMPLATE.format(**{**PUBLISHED_MODEL, **AUTHORS[name], **changes})


@pytest.mark.parametrize("name", list(AUTHORS))
def test_the_authors_file_loads_with_its_values(name, tmp_path):
    path = tmp_path / f"{name}.yaml"
    path.write_text(authors_config(name))
    config = load_config(path)
    values = AUTHORS[name]
    dataset, train_params, avd = config["dataset_params"], config["train_params"], config["train_avd_params"]
    assert dataset["frame_shape"] is None and dataset["root_dir"] == values["root_dir"]
    assert dataset["pairs_list"] is None  # null, or absent (mgif256)
    assert train_params["batch_size"] == values["batch_size"] and train_params["dataloader_workers"] == 6
    assert train_params["num_repeats"] == values["num_repeats"] and train_params["use_sync_bn"] is False
    assert avd["checkpoint_freq"] == 50 and avd["num_repeats"] == values["avd_num_repeats"]
    assert avd["dataloader_workers"] == values["avd_workers"] and avd["epoch_milestones"] == values["avd_milestones"]
    assert config["model_params"]["num_regions"] == values.get("num_regions", 10)


@pytest.mark.parametrize("name", list(AUTHORS))
def test_config_folder_carries_the_authors_values(name, tmp_path):
    """Ours and the authors' resolve to the same config, but for ted-youtube384's regions (their checkpoint's 10)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(authors_config(name, num_regions=10))
    assert load_config(REPO_ROOT / "config" / f"{name}.yaml") == load_config(path)


def write_tiny_dataset(root):
    """train/ and test/ of frame folders stored at the size the model takes (frame_shape null): 128x128, the
    smallest the authors' perceptual pyramid takes (its scale 0.125 gives VGG-19 16x16 images)."""
    make_tiny_dataset(root, num_videos=2, num_frames=4, size=128)
    shutil.copytree(root / "train", root / "test")
    return root


@pytest.mark.slow
def test_a_tiny_model_in_the_authors_format_trains_reconstructs_and_animates(tmp_path, monkeypatch, capsys):
    root = write_tiny_dataset(tmp_path / "data")
    config = tmp_path / "authors-tiny.yaml"
    config.write_text(authors_config(
        "vox256", root_dir=root, num_regions=4, bg_width=4, bg_max=16, bg_blocks=2, width=4, max_features=16,
        scale=0.5, blocks=2, gen_width=4, gen_max=16, bottleneck=1, bottle=8, num_epochs=1, num_repeats=1,
        batch_size=2))

    # The authors' files train with ImageNet VGG-19 features; offline, fixed random ones stand in for them.
    def offline_vgg(weights, config_name, device):
        assert weights == "imagenet"
        return Vgg19("random").to(device)
    monkeypatch.setattr(train, "build_vgg", offline_vgg)
    checkpoint = run.main(["--config", config, "--log_dir", tmp_path / "log", "--device", "cpu"])
    assert checkpoint.name == "00000000-cpk-reconstruction.pth"  # checkpoint_freq 50: the end of the run

    metrics = run.main(["--config", config, "--mode", "reconstruction", "--checkpoint", checkpoint,
                        "--log_dir", tmp_path / "log", "--device", "cpu"])
    assert metrics["num_videos"] == 2 and np.isfinite(metrics["mean"]["l1"])  # num_videos 1000: all there are
    assert len(list((tmp_path / "log").rglob("reconstruction/metrics.json"))) == 1

    source = tmp_path / "source.png"
    iio.imwrite(source, iio.imread(root / "test" / "video0" / "000.png"))
    driving = tmp_path / "driving.mp4"
    frames = np.stack([iio.imread(p) for p in sorted((root / "test" / "video1").glob("*.png"))])  # (T, H, W, 3)
    iio.imwrite(driving, frames, fps=10)
    result = tmp_path / "result.mp4"
    code = demo.main(["--config", str(config), "--checkpoint", str(checkpoint), "--source_image", str(source),
                      "--driving_video", str(driving), "--result_video", str(result), "--mode", "relative",
                      "--cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    # frame_shape null: the demo works at the authors' demo's default, 384x384, and says so.
    assert "384x384" in err or "384, 384" in err
    assert iio.imread(result, index=None).shape == (len(frames), 384, 384, 3)  # (T, H, W, 3)
