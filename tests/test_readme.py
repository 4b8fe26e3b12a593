"""The README's promises: its set-up commands and its Python snippet work as written."""
import re

import pytest
import torch

from conftest import REPO_ROOT
from modules.build import build_models
from config import load_config

README = (REPO_ROOT / "README.md").read_text()


def test_first_lines_are_the_two_setup_commands():
    block = README.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert block[0].startswith("pip install -r requirements.txt && python demo.py")
    assert block[1].startswith("pip install -r requirements-test.txt && python -m pytest")
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "pip install -q -r requirements-test.txt && python -m pytest -q" in ci


@pytest.mark.slow
def test_published_checkpoint_snippet(tmp_path, monkeypatch):
    """The snippet builds vox256 and strictly loads a checkpoint in the published (legacy torch 1.4) format."""
    snippet = re.search(r"```python\n(from config import load_config.*?)```", README, re.S).group(1)
    models = build_models(load_config(REPO_ROOT / "config" / "vox256.yaml"))
    state = {name: model.state_dict() for name, model in models.items()}
    state.update(epoch_reconstruction=99, epoch_avd=29)
    torch.save(state, tmp_path / "vox256.pth", _use_new_zipfile_serialization=False)
    del models, state
    (tmp_path / "config").symlink_to(REPO_ROOT / "config")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(snippet, namespace)
    assert set(namespace["models"]) == {"generator", "region_predictor", "bg_predictor", "avd_network"}
