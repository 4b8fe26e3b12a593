"""Config loading: the published configs load, and every kind of mistake names its key's full path."""
import inspect

import pytest
import yaml

from config import MODEL, ConfigError, Section, load_config, save_config
from conftest import REPO_ROOT
from modules import AVDNetwork, BGMotionPredictor, Generator, PixelwiseFlowPredictor, RegionPredictor

PUBLISHED = sorted((REPO_ROOT / "config").glob("*.yaml"))


@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: p.name)
def test_published_configs_load_and_round_trip(path, tmp_path):
    config = load_config(path)
    assert config["model_params"]["num_regions"] >= 1
    save_config(config, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == config


def test_parity_configs_load(shared_dir):
    for path in sorted((shared_dir / "parity").glob("*/config.yaml")):
        config = load_config(path)
        assert set(config) == {"model_params"}


def write_vox_variant(tmp_path, edit):
    config = yaml.safe_load((REPO_ROOT / "config" / "vox256.yaml").read_text())
    edit(config)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


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
    assert "model_params.num_regions: missing key (expected an integer)" in message
    assert "model_params.generator_params: missing section" in message


@pytest.mark.parametrize("path,value,expected", [
    ("model_params.num_regions", "ten", "model_params.num_regions: expected an integer, got 'ten' (str)"),
    ("model_params.num_regions", True, "model_params.num_regions: expected an integer"),
    ("model_params.bg_predictor_params.bg_type", "affin", "bg_type: expected one of 'zero', 'shift'"),
    ("dataset_params.frame_shape", 256, "dataset_params.frame_shape: expected a list of integers"),
    ("train_params.lr", [1], "train_params.lr: expected a number"),
    ("model_params.generator_params.skips", "yes", "model_params.generator_params.skips: expected true or false"),
])
def test_value_of_the_wrong_kind(tmp_path, path, value, expected):
    def set_value(c):
        *parents, key = path.split(".")
        node = c
        for parent in parents:
            node = node[parent]
        node[key] = value
    assert expected in error_of(write_vox_variant(tmp_path, set_value))


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
