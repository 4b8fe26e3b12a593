"""The bundled model (sup-mat/puppets64.pth): strict loading into config/puppets64.yaml, and the demo with no model
arguments on a shortened bundled clip, in every mode. Skipped until the model is bundled."""
import imageio.v3 as iio
import numpy as np
import pytest
import torch

import demo
from media import VideoWriter
from checkpoint import load_checkpoint
from config import load_config
from conftest import REPO_ROOT
from eval_media import count_frames
from modules.build import MODEL_NAMES, build_models
from tiny_puppets import one_thread  # noqa: F401 (a fixture)

CHECKPOINT, CONFIG = REPO_ROOT / demo.BUNDLED["checkpoint"], REPO_ROOT / demo.BUNDLED["config"]
NUM_FRAMES = 6

pytestmark = [pytest.mark.skipif(not CHECKPOINT.exists(), reason=f"{demo.BUNDLED['checkpoint']} is not bundled yet "
                                 "(tools/bundle_model.py writes it from a trained second-stage checkpoint)"),
              pytest.mark.usefixtures("one_thread")]


def test_the_bundle_is_complete_and_small():
    for path in demo.BUNDLED.values():
        assert (REPO_ROOT / path).is_file(), path
    assert (REPO_ROOT / "sup-mat" / "teaser.gif").stat().st_size <= 3 * 10 ** 6
    assert CHECKPOINT.stat().st_size <= 20 * 10 ** 6


def test_it_loads_strictly_into_the_config_as_float32():
    raw = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    assert set(MODEL_NAMES) <= set(raw) and not any(key.startswith("optimizer") for key in raw)
    models = build_models(load_config(CONFIG))
    load_checkpoint(CHECKPOINT, models, config_name=str(CONFIG))  # strict
    for name, model in models.items():
        assert {value.dtype for value in raw[name].values()} <= {torch.float16, torch.int64}, name
        assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters()), name


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    """The first frames of sup-mat/driving.mp4, at its frame rate."""
    driving = REPO_ROOT / demo.BUNDLED["driving_video"]
    path = tmp_path_factory.mktemp("bundled") / "driving.mp4"
    with VideoWriter(path, iio.immeta(driving).get("fps") or 12) as writer:
        for t, frame in enumerate(iio.imiter(driving)):
            if t == NUM_FRAMES:
                break
            writer.write(frame)
    return path


@pytest.mark.parametrize("mode", [None, pytest.param("standard", marks=pytest.mark.slow),
                                  pytest.param("relative", marks=pytest.mark.slow)])
def test_the_demo_runs_the_bundled_model_on_a_short_clip(mode, short_clip, tmp_path, capsys):
    result = tmp_path / "result.mp4"
    argv = ["--driving_video", str(short_clip), "--result_video", str(result), "--cpu", "--quiet"]
    code = demo.main(argv + (["--mode", mode] if mode else []))  # no mode: avd, the default
    assert code == 0, capsys.readouterr().err
    assert count_frames(result) == NUM_FRAMES
    assert iio.improps(result).shape[1:] == (64, 64, 3)


@pytest.mark.slow
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("mode", ["standard", "relative", "avd"])
def test_bf16_in_the_forms_other_machines_choose_stays_close_to_float32(mode, channels_last, monkeypatch):
    """bf16 with Winograd off, as ``kernel_choice`` picks on a CPU with AMX (bf16's direct convolutions several
    times faster there) or on a GPU, in either layout: at least 35 dB from float32 on the bundled example, every
    mode (47-48 dB with this CPU's own choice; bf16 is emulated here, so only its numbers are tested)."""
    import animate
    from animate import make_animation, psnr_db
    from inference import load_networks
    from kernel_choice import KernelChoice
    from media import read_image, read_video
    networks = load_networks(str(REPO_ROOT / "config" / "puppets64.yaml"), str(REPO_ROOT / "sup-mat" / "puppets64.pth"),
                             "cpu")
    source = read_image(REPO_ROOT / "sup-mat" / "source.png", (64, 64))
    driving = read_video(REPO_ROOT / "sup-mat" / "driving.mp4", (64, 64))[:12]
    monkeypatch.setattr(animate, "choose_kernels", lambda *args: KernelChoice(channels_last, False, False))

    def frames(precision):
        return torch.from_numpy(np.stack(make_animation(source, driving, *networks.values(), animation_mode=mode,
                                                        precision=precision)))
    assert psnr_db(frames("bf16"), frames("fp32")) >= 35
