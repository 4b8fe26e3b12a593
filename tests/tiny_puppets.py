"""Helpers of the evaluation and bundling tests: a tiny puppet set and a tiny random model saved as a checkpoint."""
from pathlib import Path

import pytest
import torch

from checkpoint import save_checkpoint
from config import load_config
from modules.build import build_models
from tiny_training import write_tiny_config
from tools import make_puppets

SIZE, FRAMES = 32, 4  # tests/data/tiny.yaml works on 32x32 frames
# Three test identities of one clip each, so a driving clip has two other identities to animate.
SMALL = dict(size=SIZE, num_train=4, num_test=3, frames=FRAMES, clips_per_identity=1, num_pairs=2, workers=1)


def make_tiny_puppets(out):
    """A puppet set of 4 training and 3 test videos of 4 frames at 32x32, with 2 transfer pairs; returns out."""
    make_puppets.generate(out, seed=0, **SMALL)
    return Path(out)


def write_tiny_model(folder, data, seed=0, avd=True, **extra):
    """(config path, checkpoint path) of a randomly initialised tiny model (tests/data/tiny.yaml) in ``folder``.

    ``extra`` entries (optimizer states, epochs) are stored in the checkpoint as they are.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = write_tiny_config(folder / "tiny.yaml", data)
    torch.manual_seed(seed)
    models = build_models(load_config(config))
    if not avd:
        models.pop("avd_network")
    extra = {"epoch_reconstruction": 2, **({"epoch_avd": 1} if avd else {}), **extra}
    checkpoint = save_checkpoint(folder / "tiny.pth", {name: model.eval() for name, model in models.items()},
                                 **extra)
    return config, checkpoint


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for the module: tiny models are fastest so, and on a machine whose cores are busy
    (a training run beside the tests) two threads fighting over them made these tests 50 times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
