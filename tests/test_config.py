"""Config loading: the published configs load, and every kind of mistake names its key's full path."""
import inspect
import sys

import pytest
import torch
import yaml

from config import (MAX_FRAME_SIDE, MODEL, ConfigError, Section, check_frame_size, load_config, save_config,
                    validate_config)
from conftest import REPO_ROOT, parity_case_dir
from modules import AVDNetwork, BGMotionPredictor, Generator, PixelwiseFlowPredictor, RegionPredictor
from modules.build import build_models
from tiny import tiny_model_params

PUBLISHED = sorted((REPO_ROOT / "config").glob("*.yaml"))


@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: p.name)
def test_published_configs_load_and_round_trip(path, tmp_path):
    config = load_config(path)
    assert config["model_params"]["num_regions"] >= 1
    save_config(config, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == config


@pytest.mark.parametrize("name", ["mraa", "fomm_like", "keypoints_only"])
def test_parity_configs_load(name):
    config = load_config(parity_case_dir(name) / "config.yaml")
    assert set(config) == {"model_params"}


def write_vox_variant(tmp_path, edit):
    config = yaml.safe_load((REPO_ROOT / "config" / "vox256.yaml").read_text())
    edit(config)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def set_key(config, path, value):
    *parents, key = path.split(".")
    for parent in parents:
        config = config[parent]
    config[key] = value


def error_of(path):
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_unknown_key_is_named_with_its_path_and_a_suggestion(tmp_path):
    def typo(c):
        c["model_params"]["region_predictor_params"]["temprature"] = \
            c["model_params"]["region_predictor_params"].pop("temperature")
    message = error_of(write_vox_variant(tmp_path, typo))
    assert "model_params.region_predictor_params.temprature: unknown key (did you mean 'temperature'?)" in message
    assert "model_params.region_predictor_params.temperature: missing key" in message
    assert str(tmp_path / "mine.yaml") in message


def test_missing_key_and_missing_section(tmp_path):
    def drop(c):
        del c["model_params"]["num_regions"]
        del c["model_params"]["generator_params"]
    message = error_of(write_vox_variant(tmp_path, drop))
    assert "model_params.num_regions: missing key (expected an integer >= 1)" in message
    assert "model_params.generator_params: missing section" in message


@pytest.mark.parametrize("path,value,expected", [
    ("model_params.num_regions", "ten", "model_params.num_regions: expected an integer >= 1, got 'ten' (str)"),
    ("model_params.num_regions", True, "model_params.num_regions: expected an integer >= 1"),
    ("model_params.bg_predictor_params.bg_type", "affin", "bg_type: expected one of 'zero', 'shift'"),
    ("dataset_params.frame_shape", 256, "dataset_params.frame_shape: expected null, [height, width] or [height, "),
    ("train_params.lr", [1], "train_params.lr: expected a number"),
    ("model_params.generator_params.skips", "yes", "model_params.generator_params.skips: expected true or false"),
])
def test_value_of_the_wrong_kind(tmp_path, path, value, expected):
    assert expected in error_of(write_vox_variant(tmp_path, lambda c: set_key(c, path, value)))


@pytest.mark.parametrize("path,value,allowed", [
    ("train_params.checkpoint_freq", 0, "an integer >= 1"),
    ("train_params.batch_size", 0, "an integer >= 1"),
    ("train_params.num_repeats", 0, "an integer >= 1"),
    ("train_params.num_epochs", 0, "an integer >= 1"),
    ("train_params.dataloader_workers", -1, "an integer >= 0"),
    ("train_params.lr", 0, "a number > 0"),
    ("train_params.lr", -2e-4, "a number > 0"),
    ("train_params.scales", [], "a non-empty list of numbers in (0, 1]"),
    ("train_params.scales", [1, 2], "a non-empty list of numbers in (0, 1]"),
    ("train_params.epoch_milestones", [0, 90], "a list of integers >= 1"),
    ("train_params.loss_weights.perceptual", [10, -1, 10, 10, 10], "a list of at most 5 numbers >= 0"),
    ("train_params.loss_weights.perceptual", [1] * 6, "a list of at most 5 numbers >= 0"),
    ("train_params.loss_weights.equivariance_shift", -10, "a number >= 0"),
    ("train_params.transform_params.points_tps", 0, "an integer >= 1"),
    ("train_avd_params.checkpoint_freq", 0, "an integer >= 1"),
    ("train_avd_params.batch_size", 0, "an integer >= 1"),
    ("train_avd_params.num_repeats", 0, "an integer >= 1"),
    ("train_avd_params.num_epochs", 0, "an integer >= 1"),
    ("train_avd_params.dataloader_workers", -1, "an integer >= 0"),
    ("train_avd_params.lr", 0, "a number > 0"),
    ("train_avd_params.random_scale", 1, "a number in [0, 1)"),
    ("model_params.num_regions", 0, "an integer >= 1"),
    ("model_params.region_predictor_params.temperature", 0, "a number > 0"),
    ("model_params.region_predictor_params.scale_factor", 2, "a number in (0, 1]"),
    ("model_params.region_predictor_params.num_blocks", 0, "an integer >= 1"),
    ("model_params.region_predictor_params.pad", -1, "an integer >= 0"),
    ("model_params.generator_params.num_down_blocks", -1, "an integer >= 0"),
    ("model_params.generator_params.pixelwise_flow_predictor_params.scale_factor", 0, "a number in (0, 1]"),
    ("model_params.avd_network_params.id_bottle_size", 0, "an integer >= 1"),
    ("dataset_params.frame_shape", [256, 0, 3], "null, [height, width] or [height, width, 3] with sizes >= 1"),
    ("dataset_params.frame_shape", [256, 256, 4], "null, [height, width] or [height, width, 3] with sizes >= 1"),
    ("dataset_params.augmentation_params.jitter_param.hue", -0.1, "a number >= 0"),
    ("reconstruction_params.num_videos", 0, "an integer >= 1 or null"),
    ("animate_params.num_pairs", 0, "an integer >= 1"),
    ("visualizer_params.region_bg_color", [1, 1], "a list of 3 numbers in [0, 1]"),
])
def test_value_out_of_range_names_the_key_and_the_range(tmp_path, path, value, allowed):
    message = error_of(write_vox_variant(tmp_path, lambda c: set_key(c, path, value)))
    assert f"{path}: expected {allowed}, got {value!r}" in message


@pytest.mark.parametrize("path,value", [
    ("train_params.loss_weights.perceptual", [0, 0, 0, 0, 0]),  # the perceptual loss switched off
    ("train_params.loss_weights.perceptual", [10, 10, 10]),  # the first three VGG-19 stages only
    ("train_params.loss_weights.equivariance_shift", 0),
    ("train_params.dataloader_workers", 0),
    ("train_params.checkpoint_freq", 1),
    ("train_avd_params.random_scale", 0),
    ("model_params.generator_params.num_down_blocks", 0),
    ("reconstruction_params.num_videos", None),
    ("dataset_params.frame_shape", None),
    ("dataset_params.frame_shape", [128, 384]),
])
def test_values_at_the_edge_of_their_range_are_accepted(tmp_path, path, value):
    config = load_config(write_vox_variant(tmp_path, lambda c: set_key(c, path, value)))
    node = config
    for key in path.split("."):
        node = node[key]
    assert node == value


def test_frame_shape_null_means_stored_size(tmp_path):
    config = load_config(write_vox_variant(tmp_path, lambda c: set_key(c, "dataset_params.frame_shape", None)))
    assert config["dataset_params"]["frame_shape"] is None


def test_a_frame_shape_the_networks_cannot_take_is_one_line_naming_the_multiple(tmp_path):
    path = write_vox_variant(tmp_path, lambda c: set_key(c, "dataset_params.frame_shape", [50, 70, 3]))
    message = error_of(path)
    assert message == (f"{path}: dataset_params.frame_shape 50x70: height and width must be multiples of 128 "
                       f"from 128 to {MAX_FRAME_SIDE} for this config (nearest that fits: 128x128)")


def test_a_frame_shape_too_small_for_the_perceptual_pyramid_is_refused(tmp_path):
    def small(c):
        set_key(c, "dataset_params.frame_shape", [128, 128, 3])  # the scale 0.125 makes it 16x16: fits
        set_key(c, "train_params.scales", [1, 0.5, 0.25, 0.0625])  # 8x8 does not
    message = error_of(write_vox_variant(tmp_path, small))
    assert "\n" not in message
    assert message.endswith("dataset_params.frame_shape 128x128: the perceptual loss's scale 0.0625 makes it 8x8, "
                            "and VGG-19 needs 16 pixels per side: larger frames or larger train_params.scales for "
                            "this config")


@pytest.mark.parametrize("height,width", [(50, 70), (3, 3), (20000, 20000), (127, 256), (256, 4224), (0, 256)])
def test_check_frame_size_refuses_sizes_the_published_networks_cannot_take(height, width):
    config = load_config(REPO_ROOT / "config" / "vox256.yaml")
    with pytest.raises(ConfigError) as info:
        check_frame_size(config, height, width, what="--img_shape", source="config/vox256.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"--img_shape {height}x{width}: height and width must be multiples of 128 from 128 "
                              f"to 4096 for config/vox256.yaml (nearest that fits: ")


@pytest.mark.parametrize("name", ["vox256", "taichi256", "ted384", "mgif256", "ted-youtube384"])
@pytest.mark.parametrize("height,width", [(256, 256), (384, 384), (128, 512), (4096, 4096)])
def test_check_frame_size_accepts_the_published_sizes(name, height, width):
    check_frame_size(load_config(REPO_ROOT / "config" / f"{name}.yaml"), height, width)


def _goes_through(models, height, width):
    """Whether one reconstruction step of the networks runs on (height, width) frames and gives that size."""
    frames = torch.rand(2, 3, height, width)  # (B, C, H, W)
    try:
        with torch.no_grad():
            source_params = models["region_predictor"](frames[:1].expand(2, -1, -1, -1))
            driving_params = models["region_predictor"](frames)
            bg_params = models["bg_predictor"](frames[:1].expand(2, -1, -1, -1), frames)  # (B, 3, 3)
            prediction = models["generator"](frames, driving_params, source_params, bg_params)["prediction"]
    except RuntimeError:
        return False
    return prediction.shape == frames.shape


@pytest.mark.parametrize("variant,overrides", [
    ("mraa", {}),
    ("no_axis_swap_pad3", {}),  # a padded 7x7 region head at half size (the base model pads nothing)
    ("mraa", {"region_predictor_params__scale_factor": 0.25, "generator_params__num_down_blocks": 1}),
    ("bg_zero", {"generator_params__num_down_blocks": 0,
                 "generator_params__pixelwise_flow_predictor_params__scale_factor": 1}),
    ("mraa", {"region_predictor_params__scale_factor": 1, "region_predictor_params__pad": 0,
              "bg_predictor_params__num_blocks": 5}),
])
def test_check_frame_size_accepts_exactly_the_sizes_the_networks_take(variant, overrides):
    config = validate_config({"model_params": tiny_model_params(variant, **overrides)})
    models = build_models(config)
    for model in models.values():
        model.eval()
    accepted = []
    for size in range(1, 70):
        try:
            check_frame_size(config, size, size)
            accepted.append(size)
        except ConfigError:
            pass
        assert _goes_through(models, size, size) == (size in accepted), f"{size}x{size}"
    assert accepted, "no size was accepted: the sweep says nothing"
    with pytest.raises(ConfigError):
        check_frame_size(config, accepted[0], MAX_FRAME_SIDE + accepted[0])


def test_numbers_that_yaml_reads_as_strings_are_accepted(tmp_path):
    text = (REPO_ROOT / "config" / "vox256.yaml").read_text().replace("lr: 2.0e-4", "lr: 2e-4")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert load_config(path)["train_params"]["lr"] == pytest.approx(2e-4)


def test_defaults_are_filled(tmp_path):
    config = load_config(REPO_ROOT / "config" / "vox256.yaml")
    assert config["model_params"]["region_predictor_params"]["pad"] == 3
    assert load_config(REPO_ROOT / "config" / "taichi256.yaml")["model_params"]["region_predictor_params"]["pad"] == 0


def test_bad_files(tmp_path):
    assert "config file not found" in error_of(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert "empty" in error_of(tmp_path / "empty.yaml")
    (tmp_path / "broken.yaml").write_text("model_params:\n  num_regions: [10\n")
    assert "not valid YAML" in error_of(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    assert "expected a mapping" in error_of(tmp_path / "list.yaml")
    (tmp_path / "vox256.pth").write_bytes(bytes(range(256)) * 4)  # a checkpoint given as --config
    assert "not a text file" in error_of(tmp_path / "vox256.pth")
    (tmp_path / "deep.yaml").write_text("[" * 3000)  # nested past the recursion limit, set low to be quick
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 300)
    try:
        assert "nested too deeply" in error_of(tmp_path / "deep.yaml")
    finally:
        sys.setrecursionlimit(limit)
    (tmp_path / "folder.yaml").mkdir()
    assert "config file not found" in error_of(tmp_path / "folder.yaml")


def _defaults(section):
    return {k: v[1] for k, v in section.items() if not isinstance(v, Section)}


@pytest.mark.parametrize("section,cls", [
    (MODEL["region_predictor_params"], RegionPredictor),
    (MODEL["bg_predictor_params"], BGMotionPredictor),
    (MODEL["generator_params"], Generator),
    (MODEL["generator_params"]["pixelwise_flow_predictor_params"], PixelwiseFlowPredictor),
    (MODEL["avd_network_params"], AVDNetwork),
])
def test_schema_matches_the_constructors(section, cls):
    parameters = inspect.signature(cls).parameters
    for key, default in _defaults(section).items():
        assert key in parameters, f"{cls.__name__} has no argument {key}"
        if parameters[key].default is not inspect.Parameter.empty:
            assert parameters[key].default == default, f"{cls.__name__}.{key}: schema default differs"
