"""inference.py: the one loader of networks for inference, and the one message for a checkpoint without AVD."""
import ast
from pathlib import Path

import pytest
import torch
import yaml

from checkpoint import CheckpointError, save_checkpoint
from conftest import REPO_ROOT
from inference import load_networks
from modules.build import build_models
from tiny import tiny_model_params


@pytest.fixture
def tiny(tmp_path):
    """A tiny model's config file and two checkpoints of it: with and without its AVD network."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model_params": tiny_model_params()}))
    models = build_models({"model_params": tiny_model_params()})
    full = save_checkpoint(tmp_path / "full.pth", models)
    first_stage = save_checkpoint(tmp_path / "first.pth", {k: v for k, v in models.items() if k != "avd_network"})
    return config, full, first_stage, models


@pytest.mark.parametrize("names", [("generator", "region_predictor", "avd_network"),
                                   ("generator", "region_predictor", "bg_predictor")])
def test_networks_come_back_loaded_and_in_eval_mode(tiny, names):
    config, full, _, models = tiny
    networks = load_networks(config, full, "cpu", names=names)
    assert tuple(networks) == names and not any(network.training for network in networks.values())
    for name, network in networks.items():
        for key, value in network.state_dict().items():
            assert torch.equal(value, models[name].state_dict()[key]), (name, key)


def test_one_message_for_a_checkpoint_without_avd(tiny):
    config, _, first_stage, _ = tiny
    assert "avd_network" not in load_networks(config, first_stage, "cpu")  # standard and relative do without
    with pytest.raises(CheckpointError) as error:
        load_networks(config, first_stage, "cpu", avd_needed_by="--mode avd")
    message = str(error.value)
    assert message.startswith(f"{first_stage}: checkpoint has no avd_network") and "--mode avd needs" in message
    assert "--mode relative or standard" in message and "train_avd" in message


def test_a_mismatch_names_the_config_file(tiny, tmp_path):
    _, full, _, _ = tiny
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"model_params": tiny_model_params(num_regions=6)}))
    with pytest.raises(CheckpointError, match=f"checkpoint has 4 regions, {other} asks for 6"):
        load_networks(other, full, "cpu")


def _imports(path):
    tree = ast.parse(Path(path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_no_module_or_tool_imports_the_demo_script():
    files = [p for p in REPO_ROOT.rglob("*.py") if "tests" not in p.parts and p.name != "demo.py"]
    assert files
    importers = [str(p.relative_to(REPO_ROOT)) for p in files if "demo" in set(_imports(p))]
    assert importers == []
    assert len((REPO_ROOT / "demo.py").read_text().splitlines()) <= 250
    assert len((REPO_ROOT / "frames_dataset.py").read_text().splitlines()) <= 300


def test_networks_to_be_loaded_skip_their_random_initialisation_and_others_keep_it():
    """``build_models(initialise=False)`` (what load_networks uses: every parameter is then loaded strictly) skips
    the layers' random initialisation, and puts it back after, even after an error; by default it is as before."""
    from torch import nn
    from modules.build import parameters_left_uninitialised
    original = nn.Conv2d.reset_parameters, nn.Linear.reset_parameters
    with pytest.raises(RuntimeError), parameters_left_uninitialised():
        assert (nn.Conv2d.reset_parameters, nn.Linear.reset_parameters) != original  # skipped within
        raise RuntimeError("a failure while building")
    assert (nn.Conv2d.reset_parameters, nn.Linear.reset_parameters) == original
    torch.manual_seed(0)
    first = build_models({"model_params": tiny_model_params()})["generator"].state_dict()
    build_models({"model_params": tiny_model_params()}, initialise=False)
    torch.manual_seed(0)
    again = build_models({"model_params": tiny_model_params()})["generator"].state_dict()
    assert all(torch.equal(first[key], again[key]) for key in first)  # seeded initialisation unchanged
