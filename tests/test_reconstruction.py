"""``--mode reconstruction`` on the parity model: outputs, metric values, batching, and unreadable videos."""
import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

from config import load_config
from eval_media import count_frames, parity_paths, write_dataset, write_eval_config
from frames_dataset import FramesDataset
from media import read_video
from modules.build import build_models
from reconstruction import frame_metrics, reconstruct, reconstruction, summarise

NUM_FRAMES = 6


@pytest.fixture
def setup(tmp_path, parity_dir):
    """(config, dataset, checkpoint): 3 test videos of 6 frames, reconstruction_params.num_videos = 2."""
    root = write_dataset(tmp_path / "data", parity_dir, num_videos=3, num_frames=NUM_FRAMES)
    config = load_config(write_eval_config(tmp_path / "config.yaml", parity_dir, root, num_videos=2))
    return config, FramesDataset(is_train=False, **config["dataset_params"]), parity_paths(parity_dir)[1]


def test_outputs_and_metrics_file(setup, tmp_path):
    config, dataset, checkpoint = setup
    metrics = reconstruction(config, build_models(config), checkpoint, tmp_path / "log", dataset, "cpu",
                             batch_size=4)
    out_dir = tmp_path / "log" / "reconstruction"
    saved = json.loads((out_dir / "metrics.json").read_text())
    assert saved["num_videos"] == 2 and sorted(saved["videos"]) == ["vid0", "vid1"]  # num_videos honoured
    assert saved["num_frames"] == 2 * NUM_FRAMES and saved["skipped"] == {}
    for name, video in saved["videos"].items():
        assert video["num_frames"] == NUM_FRAMES and 0 < video["l1"] < 1 and 0 < video["ssim"] < 1
        assert count_frames(out_dir / f"{name}.mp4") == NUM_FRAMES
        strip = iio.imread(out_dir / "png" / f"{name}.png")
        assert strip.shape == (64, NUM_FRAMES * 64, 3) and strip.dtype == np.uint8
    for key in ("l1", "psnr", "ssim"):
        assert saved["mean"][key] == pytest.approx(np.mean([v[key] for v in saved["videos"].values()]))
        assert metrics["mean"][key] == pytest.approx(saved["mean"][key])
    assert not (out_dir / "vid2.mp4").exists()


def test_a_new_evaluation_replaces_the_earlier_one_whole(setup, tmp_path):
    """Run again into the same --log_dir with fewer videos: only the new ones are there, as metrics.json lists."""
    config, dataset, checkpoint = setup
    reconstruction(config, build_models(config), checkpoint, tmp_path / "log", dataset, "cpu", batch_size=4)
    out_dir = tmp_path / "log" / "reconstruction"
    (out_dir / "metrics-face.json").write_text("{}")  # a later tool's output on the earlier videos
    config["reconstruction_params"]["num_videos"] = 1
    reconstruction(config, build_models(config), checkpoint, tmp_path / "log", dataset, "cpu", batch_size=4)
    assert sorted(json.loads((out_dir / "metrics.json").read_text())["videos"]) == ["vid0"]
    assert sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*")) == \
        ["metrics.json", "png", "png/vid0.png", "vid0.mp4"]
    assert sorted(p.name for p in (tmp_path / "log").iterdir()) == ["reconstruction"], "nothing left aside"


def test_png_strip_holds_the_predictions_and_the_metrics_are_theirs(setup, tmp_path):
    config, dataset, checkpoint = setup
    config["reconstruction_params"]["num_videos"] = 1
    models = build_models(config)
    metrics = reconstruction(config, models, checkpoint, tmp_path / "log", dataset, "cpu", batch_size=4)
    frames = read_video(dataset.root_dir / "vid0", dataset.frame_shape)  # (T, H, W, 3)
    outputs = list(reconstruct(iter(frames), models["generator"], models["region_predictor"],
                               models["bg_predictor"], batch_size=NUM_FRAMES, device="cpu"))
    prediction = outputs[0][2]["prediction"].permute(0, 2, 3, 1).numpy()  # (T, H, W, 3)
    strip = iio.imread(tmp_path / "log" / "reconstruction" / "png" / "vid0.png") / 255.0  # (H, T * W, 3)
    assert np.abs(strip - np.concatenate(list(prediction), axis=1)).max() <= 0.5 / 255 + 1e-6
    assert metrics["videos"]["vid0"]["l1"] == pytest.approx(np.abs(prediction - frames).mean(), abs=1e-6)


class CopySource(nn.Module):
    """A generator that returns the source unchanged: its L1 is that of the source against each frame."""

    def encode(self, source_image):
        return []

    def forward(self, source_image, driving_region_params, source_region_params, bg_params=None,
                source_features=None):
        return {"prediction": source_image.clone()}


def test_metrics_of_a_model_that_copies_the_source_match_numpy(setup, tmp_path):
    config, dataset, checkpoint = setup
    models = build_models(config)
    reference_generator = models["generator"]
    models["generator"] = CopySource()
    models["generator"].load_state_dict = reference_generator.load_state_dict  # the checkpoint still loads
    metrics = reconstruction(config, models, checkpoint, tmp_path / "log", dataset, "cpu", batch_size=4)
    for name in ("vid0", "vid1"):
        frames = read_video(dataset.root_dir / name, dataset.frame_shape).astype(np.float64)  # (T, H, W, 3)
        copies = np.broadcast_to(frames[:1], frames.shape)
        video = metrics["videos"][name]
        assert video["l1"] == pytest.approx(np.abs(frames - frames[0]).mean(), rel=1e-6)
        assert video["copy_l1"] == pytest.approx(video["l1"], rel=1e-5)  # the baseline is this very model
        assert video["psnr"] == pytest.approx(peak_signal_noise_ratio(frames, copies, data_range=1.0), rel=1e-6)
        ssim = np.mean([structural_similarity(f, frames[0], channel_axis=2, data_range=1.0) for f in frames])
        assert video["ssim"] == pytest.approx(ssim, rel=1e-6)


def test_batched_equals_frame_by_frame(setup, tmp_path):
    config, dataset, checkpoint = setup
    by_batch = reconstruction(config, build_models(config), checkpoint, tmp_path / "a", dataset, "cpu", batch_size=4)
    by_frame = reconstruction(config, build_models(config), checkpoint, tmp_path / "b", dataset, "cpu", batch_size=1)
    for name, video in by_batch["videos"].items():
        for key in ("l1", "psnr", "ssim"):
            assert video[key] == pytest.approx(by_frame["videos"][name][key], abs=1e-5)
    a = iio.imread(tmp_path / "a" / "reconstruction" / "png" / "vid0.png").astype(int)
    b = iio.imread(tmp_path / "b" / "reconstruction" / "png" / "vid0.png").astype(int)
    assert np.abs(a - b).max() <= 1


def test_an_unreadable_test_video_is_reported_and_skipped(setup, tmp_path):
    config, dataset, checkpoint = setup
    (dataset.root_dir / "vid1" / "3.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="skipping test video vid1"):
        metrics = reconstruction(config, build_models(config), checkpoint, tmp_path / "log", dataset, "cpu")
    assert list(metrics["videos"]) == ["vid0"] and "vid1" in metrics["skipped"]
    assert not (tmp_path / "log" / "reconstruction" / "vid1.mp4").exists()


def test_metrics_helpers():
    rng = np.random.default_rng(0)
    target = rng.random((3, 16, 16, 3))
    prediction = np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1)
    per_frame = frame_metrics(prediction, target)
    video = summarise(per_frame)
    assert video["num_frames"] == 3
    assert video["l1"] == pytest.approx(np.abs(prediction - target).mean())
    assert video["psnr"] == pytest.approx(peak_signal_noise_ratio(target, prediction, data_range=1.0))
    exact = summarise(frame_metrics(target, target))
    assert exact["l1"] == 0 and exact["psnr"] == float("inf") and exact["ssim"] == pytest.approx(1.0)


@torch.inference_mode()
def test_reconstruct_uses_the_first_frame_as_source(setup):
    config, dataset, checkpoint = setup
    models = build_models(config)
    for model in models.values():
        model.eval()
    frames = read_video(dataset.root_dir / "vid0", dataset.frame_shape)
    batches = list(reconstruct(iter(frames), models["generator"], models["region_predictor"],
                               models["bg_predictor"], batch_size=4, device="cpu"))
    assert [driving.shape[0] for driving, _, _ in batches] == [4, 2]
    for _, sources, _ in batches:
        assert torch.equal(sources[0], torch.from_numpy(frames[0]).permute(2, 0, 1))


@pytest.mark.slow
def test_a_stopped_rerun_leaves_the_earlier_outputs_together(setup, tmp_path, monkeypatch):
    """Videos and metrics.json of one run stay side by side: a rerun stopped half way changes none of them."""
    import reconstruction as module
    config, dataset, checkpoint = setup
    reconstruction(config, build_models(config), checkpoint, tmp_path / "log", dataset, "cpu")
    out_dir = tmp_path / "log" / "reconstruction"
    before = {p.relative_to(out_dir): p.read_bytes() for p in out_dir.rglob("*") if p.is_file()}
    real, calls = module.evaluate_video, []

    def stopped_on_the_second_video(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "evaluate_video", stopped_on_the_second_video)
    with pytest.raises(KeyboardInterrupt):
        reconstruction(config, build_models(config), checkpoint, tmp_path / "log", dataset, "cpu")
    after = {p.relative_to(out_dir): p.read_bytes() for p in out_dir.rglob("*") if p.is_file()}
    assert after == before and sorted(p.name for p in (tmp_path / "log").iterdir()) == ["reconstruction"]


def test_frame_shape_null_reconstructs_at_the_stored_size(setup, tmp_path):
    config, _, checkpoint = setup
    config["dataset_params"]["frame_shape"] = None
    dataset = FramesDataset(is_train=False, **config["dataset_params"])
    assert dataset.frame_size == (64, 64)
    metrics = reconstruction(config, build_models(config), checkpoint, tmp_path / "log", dataset, "cpu")
    assert metrics["num_videos"] == 2 and metrics["num_frames"] == 2 * NUM_FRAMES


def _run_cli(capsys, *argv):
    import run
    code = run.cli([str(arg) for arg in argv])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_frame_shape_null_with_a_size_the_networks_cannot_take_is_one_line(tmp_path, parity_dir, capsys):
    root = tmp_path / "data"
    for split in ("train", "test"):
        (root / split / "odd").mkdir(parents=True)
        for t in range(2):
            iio.imwrite(root / split / "odd" / f"{t}.png", np.zeros((50, 70, 3), np.uint8))
    config = write_eval_config(tmp_path / "config.yaml", parity_dir, root)
    config.write_text(config.read_text().replace("frame_shape:\n  - 64\n  - 64\n  - 3", "frame_shape: null"))
    code, lines = _run_cli(capsys, "--config", config, "--mode", "reconstruction", "--checkpoint",
                           parity_paths(parity_dir)[1], "--log_dir", tmp_path / "log", "--device", "cpu")
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 1 and len(errors) == 1, lines
    assert str(root / "test" / "odd") in errors[0] and "50x70" in errors[0] and "multiples of 16" in errors[0]


def test_a_checkpoint_that_does_not_fit_names_the_config_file(setup, tmp_path, parity_dir, capsys):
    config = write_eval_config(tmp_path / "config10.yaml", parity_dir, tmp_path / "data")
    config.write_text(config.read_text().replace("num_regions: 5", "num_regions: 10"))
    code, lines = _run_cli(capsys, "--config", config, "--mode", "reconstruction", "--checkpoint",
                           parity_paths(parity_dir)[1], "--log_dir", tmp_path / "log", "--device", "cpu")
    assert code == 1 and any(f"{config} asks for 10" in line for line in lines), lines


@pytest.mark.parametrize("mode, folder", [("reconstruction", "reconstruction"), ("animate", "animation")])
def test_a_checkpoint_inside_the_folder_a_new_run_replaces_is_one_line_and_kept(setup, tmp_path, parity_dir, capsys,
                                                                                  mode, folder):
    config = write_eval_config(tmp_path / "config.yaml", parity_dir, tmp_path / "data")
    kept = tmp_path / "log" / folder / "mine.pth"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(parity_paths(parity_dir)[1].read_bytes())
    code, lines = _run_cli(capsys, "--config", config, "--mode", mode, "--checkpoint", kept, "--log_dir",
                           tmp_path / "log", "--device", "cpu")
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and f"holds the checkpoint ({kept})" in errors[0], lines
    assert kept.read_bytes() == parity_paths(parity_dir)[1].read_bytes()
