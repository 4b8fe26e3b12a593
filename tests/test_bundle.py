"""tools/bundle_model.py on a tiny model and a tiny puppet set: the float16 checkpoint, the media, the teaser, and
bad input that must leave a previous bundle as it was."""
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from checkpoint import load_checkpoint
from config import load_config
from frames_dataset import identity_of
from media import VideoReadError, read_video
from modules.build import MODEL_NAMES, build_models
from tiny_puppets import FRAMES, SIZE, make_tiny_puppets, write_tiny_model
from tiny_puppets import one_thread  # noqa: F401 (a fixture)
from tools import bundle_model as bm

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    """A tiny second-stage checkpoint (with an optimizer state, as training writes it), bundled once."""
    folder = tmp_path_factory.mktemp("bundle")
    data = make_tiny_puppets(folder / "puppets")
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))])
    config, checkpoint = write_tiny_model(folder, data, optimizer_avd=optimizer.state_dict())
    out = folder / "sup-mat"
    code = bm.main(["--checkpoint", str(checkpoint), "--config", str(config), "--out", str(out), "--data", str(data),
                    "--device", "cpu"])
    assert code == 0
    return {"data": data, "config": config, "checkpoint": checkpoint, "out": out, "bundle": out / "tiny.pth"}


def test_the_checkpoint_holds_the_four_networks_in_float16_and_the_epochs(bundled):
    raw = torch.load(bundled["bundle"], map_location="cpu", weights_only=True)
    assert set(raw) == {*MODEL_NAMES, "epoch_reconstruction", "epoch_avd"}  # no optimizer state, no config
    assert (raw["epoch_reconstruction"], raw["epoch_avd"]) == (2, 1)
    for name in MODEL_NAMES:
        dtypes = {value.dtype for value in raw[name].values()}
        assert dtypes <= {torch.float16, torch.int64}, (name, dtypes)
        assert any(value.dtype == torch.float16 for value in raw[name].values())


def test_the_checkpoint_loads_strictly_into_float32_models(bundled):
    original = torch.load(bundled["checkpoint"], map_location="cpu", weights_only=True)
    models = build_models(load_config(bundled["config"]))
    load_checkpoint(bundled["bundle"], models, config_name=str(bundled["config"]))  # strict
    for name, model in models.items():
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                assert value.dtype == torch.float32, (name, key)
                torch.testing.assert_close(value, original[name][key], rtol=1e-3, atol=1e-4)
            else:
                assert torch.equal(value, original[name][key])


def test_media_come_from_two_test_identities_of_the_pair(bundled):
    source, driving = bm.test_pair(bundled["data"], 0)
    assert identity_of(source) != identity_of(driving)
    image = iio.imread(bundled["out"] / "source.png")
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, bm.to_uint8(read_video(bundled["data"] / "test" / source)[0]))
    video = iio.imread(bundled["out"] / "driving.mp4", index=None)  # (T, H, W, 3)
    assert video.shape == (FRAMES, SIZE, SIZE, 3)
    truth = read_video(bundled["data"] / "test" / driving)  # (T, H, W, 3); H.264 is lossy but close
    assert np.abs(video / 255 - truth).mean() < 0.05


def test_the_teaser_has_the_driving_video_and_each_other_identity(bundled):
    teaser = iio.imread(bundled["out"] / "teaser.gif", index=None)  # (T, 2H, (1 + n) W, 3)
    sources = bm.teaser_sources(bundled["data"], *bm.test_pair(bundled["data"], 0), count=4)
    assert len(sources) == 2  # three test identities, one of them driving
    assert teaser.shape == (FRAMES, 2 * SIZE, 3 * SIZE, 3)
    assert (teaser[:, :SIZE, :SIZE] > 250).all()  # the blank cell above the driving video
    driving = iio.imread(bundled["out"] / "driving.mp4", index=None)  # (T, H, W, 3)
    assert np.abs(teaser[:, SIZE:, :SIZE].astype(float) - driving).mean() < 8  # a palette of 256 colours


def test_only_the_teaser_can_be_redone_larger(bundled):
    before = (bundled["out"] / "source.png").stat().st_mtime_ns, bundled["bundle"].stat().st_mtime_ns
    code = bm.main(["--config", str(bundled["config"]), "--out", str(bundled["out"]), "--data",
                    str(bundled["data"]), "--only", "teaser", "--zoom", "2", "--device", "cpu"])
    assert code == 0
    assert iio.imread(bundled["out"] / "teaser.gif", index=None).shape == (FRAMES, 4 * SIZE, 6 * SIZE, 3)
    assert ((bundled["out"] / "source.png").stat().st_mtime_ns, bundled["bundle"].stat().st_mtime_ns) == before


def test_teaser_frames_layout():
    driving = np.zeros((2, 4, 4, 3), np.uint8)
    sources = [np.full((4, 4, 3), 10 * (i + 1), np.uint8) for i in range(3)]
    animations = [np.full((2, 4, 4, 3), 100 + i, np.uint8) for i in range(3)]
    grid = bm.teaser_frames(driving, sources, animations, zoom=2)
    assert grid.shape == (2, 16, 32, 3)
    assert (grid[:, :8, :8] == 255).all() and (grid[:, 8:, :8] == 0).all()
    assert [grid[0, 0, 8 * (i + 1)][0] for i in range(3)] == [10, 20, 30]
    assert [grid[1, 8, 8 * (i + 1)][0] for i in range(3)] == [100, 101, 102]


def test_a_checkpoint_over_the_size_limit_is_refused(bundled, tmp_path):
    with pytest.raises(bm.BundleError, match="over the 0.001 MB limit"):
        bm.export_checkpoint(bundled["checkpoint"], bundled["config"], tmp_path / "big.pth", max_mb=0.001)
    assert not (tmp_path / "big.pth").exists() and not list(tmp_path.iterdir())
    previous = bundled["bundle"].read_bytes()
    with pytest.raises(bm.BundleError):  # a failed export leaves the earlier bundle as it was
        bm.export_checkpoint(bundled["checkpoint"], bundled["config"], bundled["bundle"], max_mb=0.001)
    assert bundled["bundle"].read_bytes() == previous


def test_a_first_stage_checkpoint_is_a_one_line_error(bundled, tmp_path, capsys):
    config, checkpoint = write_tiny_model(tmp_path, bundled["data"], avd=False)
    code = bm.main(["--checkpoint", str(checkpoint), "--config", str(config), "--out", str(tmp_path / "out"),
                    "--only", "checkpoint"])
    errors = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(errors) == 1 and "no avd_network" in errors[0] and str(checkpoint) in errors[0]
    assert not (tmp_path / "out" / "tiny.pth").exists()


def snapshot(folder):
    """Every file under ``folder``: its bytes and its inode (a file replaced by os.replace has a new one)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_ino) for p in sorted(folder.rglob("*"))}


@pytest.fixture
def previous_bundle(bundled, tmp_path):
    """A copy of the bundled sup-mat folder, and a retrained checkpoint (other weights) to bundle over it."""
    out = tmp_path / "sup-mat"
    shutil.copytree(bundled["out"], out)
    config, checkpoint = write_tiny_model(tmp_path / "retrained", bundled["data"], seed=1)
    return {"out": out, "config": config, "checkpoint": checkpoint, "before": snapshot(out)}


@pytest.mark.parametrize("change,fragment", [
    (["--pair", "999"], "no pair 999; it lists 2"),
    (["--data", "missing"], "test_pairs.csv: not found"),
])
def test_a_later_step_that_cannot_run_stops_before_anything_is_written(previous_bundle, bundled, tmp_path, capsys,
                                                                        change, fragment):
    args = {"--checkpoint": previous_bundle["checkpoint"], "--config": previous_bundle["config"],
            "--out": previous_bundle["out"], "--data": bundled["data"], "--device": "cpu"}
    args.update({change[0]: tmp_path / change[1] if change[1] == "missing" else change[1]})
    code = bm.main([str(a) for item in args.items() for a in item])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and len(errors) == 1 and errors[0].startswith("error: ") and fragment in errors[0], errors
    assert snapshot(previous_bundle["out"]) == previous_bundle["before"]  # the shipped model was not replaced


def test_a_step_that_fails_midway_leaves_the_previous_bundle_whole(previous_bundle, bundled, monkeypatch, capsys):
    def broken_teaser(*args, **kwargs):
        raise VideoReadError("driving.mp4: the teaser failed")
    monkeypatch.setattr(bm, "write_teaser", broken_teaser)
    code = bm.main(["--checkpoint", str(previous_bundle["checkpoint"]), "--config", str(previous_bundle["config"]),
                    "--out", str(previous_bundle["out"]), "--data", str(bundled["data"]), "--device", "cpu"])
    assert code == 1 and "the teaser failed" in capsys.readouterr().err
    assert snapshot(previous_bundle["out"]) == previous_bundle["before"]  # no new checkpoint, media or temp files


def test_a_new_bundle_replaces_every_file_at_the_end(previous_bundle, bundled):
    code = bm.main(["--checkpoint", str(previous_bundle["checkpoint"]), "--config", str(previous_bundle["config"]),
                    "--out", str(previous_bundle["out"]), "--data", str(bundled["data"]), "--device", "cpu"])
    after = snapshot(previous_bundle["out"])
    assert code == 0 and set(after) == set(previous_bundle["before"])  # no temporary files left
    assert after["tiny.pth"][0] != previous_bundle["before"]["tiny.pth"][0]  # the retrained weights


def test_an_out_that_is_a_file_is_a_one_line_error(bundled, tmp_path, capsys):
    out = tmp_path / "sup-mat"
    out.write_text("not a folder")
    code = bm.main(["--config", str(bundled["config"]), "--out", str(out), "--data", str(bundled["data"]),
                    "--only", "media"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and len(errors) == 1 and str(out) in errors[0] and "folder" in errors[0], errors
    assert out.read_text() == "not a folder"


def test_bundling_into_the_checkpoints_own_file_is_one_line_and_keeps_it(bundled, tmp_path, capsys):
    """``--checkpoint out/tiny.pth --out out``: the float16 bundle would replace the training checkpoint."""
    out = tmp_path / "out"
    out.mkdir()
    checkpoint = out / "tiny.pth"
    checkpoint.write_bytes(bundled["checkpoint"].read_bytes())
    code = bm.main(["--checkpoint", str(checkpoint), "--config", str(bundled["config"]), "--out", str(out),
                    "--only", "checkpoint"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and len(errors) == 1 and "is also the --checkpoint" in errors[0], errors
    assert checkpoint.read_bytes() == bundled["checkpoint"].read_bytes() and sorted(out.iterdir()) == [checkpoint]
