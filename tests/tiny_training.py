"""Helpers of the training tests: a tiny generated dataset and the tiny config (``tests/data/tiny.yaml``)."""
import copy
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import yaml

TINY_CONFIG = Path(__file__).parent / "data" / "tiny.yaml"


def make_tiny_dataset(root, num_videos=3, num_frames=4, size=32, seed=0):
    """``root/train/video<i>/<t>.png``: a coloured square moving over a textured background; returns root."""
    rng = np.random.RandomState(seed)
    root = Path(root)
    for v in range(num_videos):
        folder = root / "train" / f"video{v}"
        folder.mkdir(parents=True)
        background = (rng.rand(size, size, 3) * 80).astype(np.uint8)
        for t in range(num_frames):
            frame = background.copy()
            x, y = 3 + 4 * t + v, 5 + 3 * t
            frame[y:y + size // 3, x:x + size // 3] = (200, 60 + 50 * v, 30)
            iio.imwrite(folder / f"{t:03d}.png", frame)
    return root


def _merge(base, overrides):
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def write_tiny_config(path, root_dir, **overrides):
    """The tiny config with ``dataset_params.root_dir`` and nested ``overrides`` applied, written to ``path``."""
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["dataset_params"]["root_dir"] = str(root_dir)
    config = _merge(copy.deepcopy(config), overrides)
    Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
    return Path(path)
