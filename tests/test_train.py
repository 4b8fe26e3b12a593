"""Training stages called as functions: learning happens, AVD leaves the first stage alone, resume helpers,
NaN stops, and the logger's files."""
import json
import multiprocessing
import os
import re
import time
from collections import Counter

import numpy as np
import pytest
import torch

from checkpoint import read_checkpoint, save_checkpoint
from config import ConfigError, load_config
from frames_dataset import FramesDataset, VideoReadError
from logger import Logger, format_losses
from losses import RandomTransform, Vgg19
from modules.build import build_models
from tiny_training import make_tiny_dataset, write_tiny_config
from train import ReconstructionModel, train
from train_avd import AVDModel, scale_region_params, train_avd
from train_avd import picture as avd_picture
from visualizer import Visualizer
from trainer import MixedPrecision, Schedule, Stage, TrainingError, check_finite, make_loader, resume

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config, dataset) of the tiny config on a generated dataset."""
    root = tmp_path_factory.mktemp("data")
    make_tiny_dataset(root)
    config = load_config(write_tiny_config(root / "tiny.yaml", root))
    return config, FramesDataset(is_train=True, **config["dataset_params"])


@pytest.fixture(scope="module")
def reconstruction_checkpoint(tiny, tmp_path_factory):
    """A first-stage checkpoint after one short epoch."""
    config, dataset = tiny
    config = {**config, "train_params": {**config["train_params"], "num_epochs": 1}}
    log_dir = tmp_path_factory.mktemp("stage1")
    torch.manual_seed(0)
    return train(config, build_models(config), None, log_dir, dataset, CPU)


@pytest.mark.slow
def test_loss_falls_on_a_fixed_batch(tiny):
    config, dataset = tiny
    torch.manual_seed(0)
    networks = {k: v for k, v in build_models(config).items() if k != "avd_network"}
    model = ReconstructionModel(**networks, vgg=Vgg19("random"), train_params=config["train_params"],
                                model_params=config["model_params"])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.5, 0.999))
    items = [dataset[i] for i in range(2)]
    source = torch.stack([torch.from_numpy(item["source"]) for item in items])  # (2, 3, 32, 32)
    driving = torch.stack([torch.from_numpy(item["driving"]) for item in items])
    totals = []
    for _ in range(15):
        torch.manual_seed(1)  # the same random warp every step
        transform = RandomTransform(2, **config["train_params"]["transform_params"])
        losses, _ = model(source, driving, transform)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        totals.append(loss.item())
    assert all(np.isfinite(totals))
    assert np.mean(totals[-3:]) < 0.6 * totals[0], totals


def test_every_trained_parameter_gets_a_gradient(tiny):
    config, dataset = tiny
    torch.manual_seed(0)
    networks = {k: v for k, v in build_models(config).items() if k != "avd_network"}
    model = ReconstructionModel(**networks, vgg=Vgg19("random"), train_params=config["train_params"],
                                model_params=config["model_params"])
    item = dataset[0]
    source, driving = (torch.from_numpy(item[k])[None].expand(2, -1, -1, -1) for k in ("source", "driving"))
    losses, generated = model(source, driving, RandomTransform(2, 0.05, 0.005, 5))
    assert set(losses) == {"perceptual", "equivariance_shift", "equivariance_affine"}
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert not any(p.requires_grad for p in model.vgg.parameters())
    assert {"prediction", "transformed_frame", "transformed_region_params"} <= set(generated)


def test_pixel_l1_term_is_weighted_and_off_by_default(tiny):
    config, dataset = tiny
    assert config["train_params"]["loss_weights"]["l1"] == 0  # the published training has no such term
    torch.manual_seed(0)
    networks = {k: v for k, v in build_models(config).items() if k != "avd_network"}
    weights = {**config["train_params"]["loss_weights"], "l1": 100.0}
    model = ReconstructionModel(**networks, vgg=Vgg19("random"),
                                train_params={**config["train_params"], "loss_weights": weights},
                                model_params=config["model_params"])
    item = dataset[0]
    source, driving = (torch.from_numpy(item[k])[None] for k in ("source", "driving"))
    losses, generated = model(source, driving, RandomTransform(1, 0.05, 0.005, 5))
    expected = 100.0 * (generated["prediction"] - driving).abs().mean()
    torch.testing.assert_close(losses["l1"], expected)


def test_avd_stage_needs_a_checkpoint(tiny, tmp_path):
    config, dataset = tiny
    with pytest.raises(TrainingError, match="needs --checkpoint"):
        train_avd(config, build_models(config), None, tmp_path, dataset, CPU)


def test_avd_stage_freezes_the_first_stage(tiny, reconstruction_checkpoint):
    config, dataset = tiny
    models = build_models(config)
    modes = []
    for name in ("region_predictor", "generator", "bg_predictor"):
        models[name].register_forward_pre_hook(lambda m, args, name=name: modes.append((name, m.training)))
    avd_checkpoint = train_avd(config, models, reconstruction_checkpoint, reconstruction_checkpoint.parent,
                               dataset, CPU)
    assert avd_checkpoint.name == "00000000-cpk-avd.pth"
    assert modes and not any(training for _, training in modes), "frozen modules must run in eval mode"
    assert {name for name, _ in modes} >= {"region_predictor", "generator"}  # the generator draws the picture

    before, after = read_checkpoint(reconstruction_checkpoint), read_checkpoint(avd_checkpoint)
    for name in ("region_predictor", "generator", "bg_predictor"):
        assert before[name].keys() == after[name].keys()
        for key, value in before[name].items():  # weights, running means/variances, batch counts
            assert torch.equal(value, after[name][key]), f"{name}.{key} changed"
    # Each optimizer under its own key; the first stage's carried over unchanged.
    assert after["optimizer_reconstruction"]["param_groups"] == before["optimizer_reconstruction"]["param_groups"]
    avd_params = sum(1 for _ in models["avd_network"].parameters())
    assert len(after["optimizer_avd"]["param_groups"][0]["params"]) == avd_params
    assert len(after["optimizer_avd"]["state"]) == avd_params  # Adam took steps on the AVD network only
    assert after["epoch_avd"] == 0 and after["epoch_reconstruction"] == before["epoch_reconstruction"] == 0
    assert "scheduler_avd" in after and "avd_network" in after
    assert (avd_checkpoint.parent / "train-vis" / "00000000-avd.png").is_file()


@pytest.mark.parametrize("batch_size", [1, 3])
def test_avd_picture_for_any_batch_size(tiny, batch_size):
    config, dataset = tiny
    models = build_models(config)
    for name in ("generator", "region_predictor", "avd_network"):
        models[name].eval()
    model = AVDModel(models["region_predictor"], models["avd_network"], config["train_avd_params"])
    items = [dataset[i % len(dataset)] for i in range(batch_size)]
    batch = {k: torch.stack([torch.from_numpy(item[k]) for item in items]) for k in ("source", "driving")}
    with torch.no_grad():
        _, params = model(batch["source"], batch["driving"], torch.ones(batch_size, 1, 2))
    image = avd_picture(Visualizer(), models["generator"], batch, params, CPU)
    assert image.dtype == np.uint8 and image.shape[:2] == (32 * batch_size, 32 * 5)


def test_avd_model_keeps_region_predictor_in_eval(tiny):
    config, _ = tiny
    models = build_models(config)
    model = AVDModel(models["region_predictor"], models["avd_network"], config["train_avd_params"]).train()
    assert model.training and model.avd_network.training and not model.region_predictor.training
    assert not any(p.requires_grad for p in model.region_predictor.parameters())


def test_random_scale_is_a_diagonal_on_every_region():
    params = {"shift": torch.randn(2, 3, 2), "affine": torch.randn(2, 3, 2, 2)}
    scale = torch.tensor([[[2.0, 3.0]], [[0.5, 1.0]]])  # (B, 1, 2)
    scaled = scale_region_params(params, scale)
    diag = torch.diag_embed(scale)  # (B, 1, 2, 2)
    torch.testing.assert_close(scaled["affine"], diag @ params["affine"])
    torch.testing.assert_close(scaled["shift"], (diag @ params["shift"].unsqueeze(-1)).squeeze(-1))


def _linear_stage(milestones, lr=1e-3):
    net = torch.nn.Linear(2, 2)
    return Stage("reconstruction", {"generator": net}, torch.optim.Adam(net.parameters(), lr=lr),
                 Schedule(lr, tuple(milestones)), MixedPrecision("none", CPU), CPU)


def test_schedule_divides_by_ten_at_each_milestone():
    schedule = Schedule.of({"lr": 2e-4, "epoch_milestones": [60, 90]})
    rates = [schedule.rate(epoch) for epoch in (0, 59, 60, 89, 90, 200)]
    assert rates == pytest.approx([2e-4, 2e-4, 2e-5, 2e-5, 2e-6, 2e-6])


def test_resume_without_scheduler_state_follows_the_milestones(tmp_path):
    net = torch.nn.Linear(2, 2)
    path = save_checkpoint(tmp_path / "published.pth", {"generator": net}, epoch_reconstruction=4)
    stage = _linear_stage([3, 10])
    resume(stage, path, "tiny")
    assert stage.first_epoch == 5 and stage.last_checkpoint == path
    assert [stage.schedule.rate(e) for e in (5, 9, 10)] == pytest.approx([1e-4, 1e-4, 1e-5])


@pytest.mark.parametrize("saved_milestones", [[3, 6], Counter([3, 6])], ids=["list", "torch-counter"])
def test_resume_with_longer_schedule_follows_the_config(tmp_path, capsys, saved_milestones):
    """A run trained with milestones [3, 6] and extended to [8, 12] at epoch 4 keeps the full lr until 8; files
    written before the Schedule hold torch's MultiStepLR state, whose milestones are a Counter."""
    net = torch.nn.Linear(2, 2)
    path = save_checkpoint(tmp_path / "run.pth", {"generator": net}, epoch_reconstruction=4,
                           scheduler_reconstruction={"milestones": saved_milestones, "last_epoch": 5})
    stage = _linear_stage([8, 12])
    resume(stage, path, "tiny")
    assert "epoch_milestones [3, 6]; continuing with the config's [8, 12]" in capsys.readouterr().out
    rates = [stage.schedule.rate(epoch) for epoch in range(stage.first_epoch, 13)]  # epochs 5..12
    assert rates == pytest.approx([1e-3] * 3 + [1e-4] * 4 + [1e-5])


def test_checkpoint_holds_the_schedule_and_no_private_scheduler_state(reconstruction_checkpoint):
    saved = read_checkpoint(reconstruction_checkpoint)["scheduler_reconstruction"]
    assert saved == {"base_lr": 2e-4, "milestones": [1], "gamma": 0.1, "last_epoch": 1}


class _NaNDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        frame = np.full((3, 32, 32), np.nan, np.float32)
        return {"source": frame, "driving": frame, "name": str(i)}


def test_non_finite_numbers_stop_with_a_message_and_keep_the_checkpoint(tiny, tmp_path):
    config, _ = tiny
    with pytest.raises(TrainingError, match="forward pass failed .* at epoch 0, iteration 0; stopping without"):
        train(config, build_models(config), None, tmp_path, _NaNDataset(), CPU)
    assert not list(tmp_path.glob("*.pth"))
    with pytest.raises(TrainingError, match=r"loss is not finite \(perceptual = nan\) at epoch 3, iteration 7.*"
                                            r"the last good checkpoint is log/00000002-cpk"):
        check_finite({"perceptual": float("nan"), "equivariance_shift": 1.0}, 3, 7, "log/00000002-cpk.pth")
    check_finite({"perceptual": 1.0}, 3, 7, None)


def test_logger_files(tmp_path):
    logger = Logger(tmp_path, "reconstruction")
    for epoch, values in ((0, (4.0, 2.0)), (1, (3.0, 1.0)), (1, (2.0, 0.5))):  # epoch 1 trained again (resume)
        logger.log_iter({"perceptual": values[0], "equivariance_shift": values[1]})
        logger.log_iter({"perceptual": values[0], "equivariance_shift": values[1]})
        means = logger.log_epoch(epoch, lr=1e-3, seconds=1.0)
    assert means == {"perceptual": 2.0, "equivariance_shift": 0.5}
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert lines[0] == "00000000) perceptual - 4.00000; equivariance_shift - 2.00000"
    assert all(re.fullmatch(r"\d{8}\) (\w+ - \d+\.\d{5}(; )?)+", line) for line in lines)
    records = [json.loads(line) for line in (tmp_path / "losses.jsonl").read_text().splitlines()]
    assert records[-1] == {"stage": "reconstruction", "epoch": 1, "losses": means, "lr": 1e-3, "seconds": 1.0}
    assert logger.history()["perceptual"] == [(0, 4.0), (1, 2.0)]
    assert (tmp_path / "loss-curve-reconstruction.png").stat().st_size > 1000
    assert format_losses(12, {"a": 95.123454}) == "00000012) a - 95.12345"


def test_logger_on_other_ranks_writes_nothing(tmp_path):
    logger = Logger(tmp_path / "run", "avd", enabled=False)
    logger.log_iter({"shift": 1.0})
    logger.log_epoch(0)
    logger.save_image("x.png", np.zeros((4, 4, 3), np.uint8))
    assert not (tmp_path / "run").exists()


def _with(config, section, **values):
    """A copy of ``config`` with ``values`` set in ``config[section]`` (nested dicts merged one level down)."""
    updated = {key: ({**config[section][key], **value} if isinstance(value, dict) else value)
               for key, value in values.items()}
    return {**config, section: {**config[section], **updated}}


def _one_step(config, section):
    """One epoch of one step: the 3 tiny videos, no repeats, batches of 2."""
    return _with(config, section, num_epochs=1, num_repeats=1, batch_size=2)


@pytest.mark.parametrize("weights, absent", [
    ({"perceptual": [0, 0, 0, 0, 0]}, "perceptual"),
    ({"equivariance_shift": 0}, "equivariance_shift"),
    ({"equivariance_affine": 0}, "equivariance_affine"),
    ({"equivariance_shift": 0, "equivariance_affine": 0}, "equivariance_shift"),
    ({"l1": 0}, "l1"),
])
def test_a_loss_switched_off_is_absent_from_training(tiny, tmp_path, weights, absent):
    config, dataset = tiny
    config = _with(_one_step(config, "train_params"), "train_params", loss_weights=weights)
    torch.manual_seed(0)
    saved = train(config, build_models(config), None, tmp_path, dataset, CPU)
    assert saved.name == "00000000-cpk-reconstruction.pth"
    logged = json.loads((tmp_path / "losses.jsonl").read_text())["losses"]
    assert absent not in logged and logged and all(np.isfinite(v) for v in logged.values())


@pytest.mark.parametrize("lambdas, absent", [({"lambda_shift": 0}, "shift"), ({"lambda_affine": 0}, "affine")])
def test_an_avd_loss_switched_off_is_absent_from_training(tiny, reconstruction_checkpoint, tmp_path, lambdas,
                                                          absent):
    config, dataset = tiny
    config = _with(_one_step(config, "train_avd_params"), "train_avd_params", **lambdas)
    saved = train_avd(config, build_models(config), reconstruction_checkpoint, tmp_path, dataset, CPU)
    assert saved.name == "00000000-cpk-avd.pth"
    logged = json.loads((tmp_path / "losses.jsonl").read_text())["losses"]
    assert set(logged) == {"shift", "affine"} - {absent}


def test_every_loss_switched_off_is_a_config_error(tiny, reconstruction_checkpoint, tmp_path):
    config, dataset = tiny
    off = _with(config, "train_params", loss_weights={"perceptual": [0] * 5, "equivariance_shift": 0,
                                                      "equivariance_affine": 0, "l1": 0})
    with pytest.raises(ConfigError, match="tiny.yaml: every weight in train_params.loss_weights is 0"):
        train(off, build_models(config), None, tmp_path, dataset, CPU, config_name="tiny.yaml")
    off = _with(config, "train_avd_params", lambda_shift=0, lambda_affine=0)
    with pytest.raises(ConfigError, match="lambda_shift and lambda_affine are both 0"):
        train_avd(off, build_models(config), reconstruction_checkpoint, tmp_path, dataset, CPU)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("section", ["train_params", "train_avd_params"])
@pytest.mark.parametrize("key, value", [("num_epochs", 0), ("checkpoint_freq", 0), ("batch_size", 0),
                                        ("num_repeats", 0), ("dataloader_workers", -1)])
def test_values_the_loop_cannot_run_with_stop_before_training(tiny, reconstruction_checkpoint, tmp_path, capsys,
                                                               section, key, value):
    """config.py refuses them too; a caller passing its own dict gets the same line, with nothing trained."""
    config, dataset = tiny
    stage = train if section == "train_params" else train_avd
    checkpoint = None if section == "train_params" else reconstruction_checkpoint
    with pytest.raises(ConfigError, match=rf"tiny.yaml: {section}.{key} is {value}; expected an integer of"):
        stage(_with(config, section, **{key: value}), build_models(config), checkpoint, tmp_path, dataset, CPU,
              config_name="tiny.yaml")
    assert not list(tmp_path.iterdir()) and "None has finished" not in capsys.readouterr().out


def test_stale_checkpoint_temporaries_are_removed_when_a_run_starts(tiny, tmp_path, capsys):
    config, dataset = tiny
    stale = tmp_path / "00000003-cpk-reconstruction.pth.4rd5x_0q.tmp"  # what a kill -9 mid-write left
    stale.write_bytes(b"\0" * 1000)
    os.utime(stale, (time.time() - 7200,) * 2)
    train(_one_step(config, "train_params"), build_models(config), None, tmp_path, dataset, CPU)
    assert not stale.exists() and f"note: removed {stale}" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.tmp"))


def test_data_workers_are_clamped_to_the_cores(tiny, monkeypatch, capsys):
    _, dataset = tiny
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    params = {"num_repeats": 1, "batch_size": 2, "dataloader_workers": 6}
    assert make_loader(dataset, params, CPU, "train_params").num_workers == 2
    assert capsys.readouterr().out == ("note: train_params.dataloader_workers is 6, and this process may use 2 "
                                       "core(s): loading with 2 worker(s)\n")
    assert make_loader(dataset, {**params, "dataloader_workers": 1}, CPU, "train_params").num_workers == 1
    assert capsys.readouterr().out == ""


class _PairsDataset(torch.utils.data.Dataset):
    """Pairs of the given sizes (name -> (H, W)), or a VideoReadError for every item when ``error`` is set."""

    def __init__(self, sizes, error=None):
        self.sizes, self.error = list(sizes.items()), error

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, i):
        if self.error:
            raise VideoReadError(self.error)
        name, (h, w) = self.sizes[i]
        frame = np.random.rand(3, h, w).astype(np.float32)
        return {"source": frame, "driving": frame.copy(), "name": name}


@pytest.mark.parametrize("workers", [0, 1])
def test_frames_of_different_sizes_in_a_batch_are_one_clear_error(tiny, tmp_path, workers):
    """frame_shape: null keeps the stored sizes; two sizes in one batch are named, not a shape error."""
    config, _ = tiny
    config = _with(config, "train_params", batch_size=2, num_repeats=1, dataloader_workers=workers)
    dataset = _PairsDataset({"small": (32, 32), "large": (48, 48)})
    with pytest.raises(TrainingError) as error:
        train(config, build_models(config), None, tmp_path, dataset, CPU)
    message = str(error.value)
    assert message.startswith("one batch holds frames of different sizes (") and "Traceback" not in message
    assert "small is 32x32" in message and "large is 48x48" in message and "frame_shape: null" in message
    assert not multiprocessing.active_children()  # workers left alive would hold up the interpreter's exit


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_training_data_is_one_clear_error(tiny, tmp_path, workers):
    config, _ = tiny
    config = _with(config, "train_params", dataloader_workers=workers)
    dataset = _PairsDataset({"a": (32, 32), "b": (32, 32)}, error="none of the 2 training videos in data is readable")
    with pytest.raises(TrainingError) as error:
        train(config, build_models(config), None, tmp_path, dataset, CPU)
    assert str(error.value) == "none of the 2 training videos in data is readable"
    assert not multiprocessing.active_children()


def test_data_workers_end_with_a_failed_epoch(tiny, tmp_path):
    """A NaN stop (or any error) while workers load: they are ended at once, not left to block the exit."""
    config, _ = tiny
    config = _with(config, "train_params", dataloader_workers=1)
    with pytest.raises(TrainingError, match="at epoch 0, iteration 0; stopping without"):
        train(config, build_models(config), None, tmp_path, _NaNDataset(), CPU)
    assert not multiprocessing.active_children()


def test_frame_shape_null_trains_at_the_stored_size(tiny, tmp_path):
    config, _ = tiny
    config = _one_step({**config, "dataset_params": {**config["dataset_params"], "frame_shape": None}},
                       "train_params")
    dataset = FramesDataset(is_train=True, **config["dataset_params"])
    assert dataset[0]["source"].shape == (3, 32, 32)  # as stored: no resize
    saved = train(config, build_models(config), None, tmp_path, dataset, CPU)
    assert read_checkpoint(saved)["config"]["dataset_params"]["frame_shape"] is None


@pytest.mark.parametrize("mode", ["none", "bf16", "fp16"])
def test_mixed_precision_on_the_cpu_is_bf16_where_the_cpu_has_it(mode):
    from device import has_native_bf16
    mixed = MixedPrecision(mode, CPU)
    assert mixed.enabled == (mode == "bf16" and has_native_bf16())
    conv = torch.nn.Conv2d(3, 4, 3)
    with mixed.autocast():
        out = conv(torch.rand(1, 3, 8, 8))
    assert out.dtype == (torch.bfloat16 if mixed.enabled else torch.float32)


class _HostReads(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the operations that make the host wait for a GPU's values: ``.item()`` / ``bool()`` (on the meta
    device they raise), the error checks of ``torch.inverse`` and friends, and ops whose output size is data."""

    READS = {"_local_scalar_dense", "_linalg_check_errors", "nonzero", "masked_select", "unique", "_unique2",
             "is_nonzero", "equal"}

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._overloadpacket.__name__ in self.READS:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("variant", ["mraa", pytest.param("regression", marks=pytest.mark.slow),
                                     pytest.param("bg_perspective", marks=pytest.mark.slow)])
def test_a_training_step_never_waits_for_the_device(variant):
    """Forward, losses and backward of both stages on the meta device (the GPU's code paths: closed-form SVDs,
    unchecked inverses), reading no value: the trainer's one read per step is the losses' summary, after the
    backward pass is queued (trainer.run_epoch)."""
    from tiny import TINY_CONFIG, tiny_model_params
    config = load_config(TINY_CONFIG)
    config["model_params"] = tiny_model_params(variant)
    models = build_models(config)
    first = ReconstructionModel(**{n: models[n] for n in ("region_predictor", "bg_predictor", "generator")},
                                vgg=Vgg19("random"), train_params=config["train_params"],
                                model_params=config["model_params"]).to("meta")
    source, driving = torch.empty(2, 3, 64, 64, device="meta"), torch.empty(2, 3, 64, 64, device="meta")
    second = AVDModel(models["region_predictor"], models["avd_network"], config["train_avd_params"]).to("meta")
    with _HostReads() as reads:
        transform = RandomTransform(2, **config["train_params"]["transform_params"], device="meta")
        losses, _ = first(source, driving, transform)
        sum(losses.values()).backward()
        avd_losses, _ = second(source, driving, torch.empty(2, 1, 2, device="meta"))
        sum(avd_losses.values()).backward()
    assert set(losses) >= {"perceptual", "equivariance_shift"} and avd_losses
    assert reads.seen == []


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["mraa", "regression", "keypoints", "bg_perspective"])
def test_the_training_step_traces_as_one_graph(variant):
    """``train.py --compile``: the forward and losses of the first stage (the Jacobian of the random warp in closed
    form, not autograd's double backward, which AOTAutograd refuses) trace as one graph with no break, so the
    whole step, backward included, compiles into fused kernels."""
    from tiny import TINY_CONFIG, tiny_model_params
    config = load_config(TINY_CONFIG)
    config["model_params"] = tiny_model_params(variant)
    torch.manual_seed(0)
    models = build_models(config)
    model = ReconstructionModel(**{n: models[n] for n in ("region_predictor", "bg_predictor", "generator")},
                                vgg=Vgg19("random"), train_params=config["train_params"],
                                model_params=config["model_params"])
    source, driving = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    transform = RandomTransform(2, **config["train_params"]["transform_params"])
    explained = torch._dynamo.explain(model)(source, driving, transform)
    reasons = sorted({f"{b.reason}".splitlines()[0] + f" at {b.user_stack[-1]}" for b in explained.break_reasons})
    assert explained.graph_break_count == 0 and explained.graph_count == 1, reasons


@pytest.mark.slow
def test_a_compiled_run_learns_as_an_eager_one_and_writes_the_same_checkpoint(tiny, tmp_path):
    """``train(compile=...)`` (the step through torch.compile; aot_eager here: the same tracing and compiled
    backward as inductor's, without minutes of code generation on a CPU) logs the losses of an eager run to float
    rounding and writes a checkpoint of the same networks, keys unprefixed, that loads as the eager one does."""
    config, dataset = tiny
    config = {**config, "train_params": {**config["train_params"], "num_epochs": 1}}

    def run(folder, how):
        torch.manual_seed(0)
        checkpoint = read_checkpoint(train(config, build_models(config), None, tmp_path / folder, dataset, CPU,
                                           compile=how))
        losses = [json.loads(line)["losses"] for line in (tmp_path / folder / "losses.jsonl").read_text().splitlines()]
        return losses, checkpoint
    (eager_losses, eager), (compiled_losses, compiled) = run("eager", False), run("compiled", "aot_eager")
    assert len(compiled_losses) == len(eager_losses) and compiled_losses[0].keys() == eager_losses[0].keys()
    for a, b in zip(compiled_losses, eager_losses):
        for name in b:
            assert a[name] == pytest.approx(b[name], rel=1e-3, abs=1e-5), name
    for name in ("generator", "region_predictor", "bg_predictor"):
        assert compiled[name].keys() == eager[name].keys()
        for key, value in eager[name].items():
            torch.testing.assert_close(compiled[name][key], value, atol=1e-3, rtol=1e-3)


def test_timing_the_layouts_changes_nothing_that_training_draws_or_learns(tiny, tmp_path, monkeypatch):
    """With MRAA_KERNELS=measure, train.py reads an item and runs the model once to time the layouts: that must not
    move a random generator or a batch-norm statistic. Here the timing is replaced by a run of ``run_once`` that
    keeps the default layout, so the two runs must log the same losses, bit for bit."""
    import kernel_choice
    from modules.optimize import wants_channels_last
    config, dataset = tiny
    config = {**config, "train_params": {**config["train_params"], "num_epochs": 1}}

    def logged_losses(log_dir):
        """The losses logged and every tensor the checkpoint holds (batch-norm statistics included)."""
        torch.manual_seed(0)
        checkpoint = read_checkpoint(train(config, build_models(config), None, log_dir, dataset, CPU))
        tensors = {f"{name}.{key}": value for name in ("generator", "region_predictor", "bg_predictor")
                   for key, value in checkpoint[name].items()}
        return [json.loads(line)["losses"] for line in (log_dir / "losses.jsonl").read_text().splitlines()], tensors

    def same(a, b):
        return a[0] == b[0] and a[1].keys() == b[1].keys() and all(torch.equal(a[1][k], b[1][k]) for k in a[1])

    plain = logged_losses(tmp_path / "defaults")
    runs = []

    def run_and_keep_the_default(model, run_once, frame_shape, batch_size, device, precision="fp32"):
        run_once()
        runs.append(frame_shape)
        return wants_channels_last(device, precision), "measured", {}
    monkeypatch.setenv("MRAA_KERNELS", "measure")
    monkeypatch.setenv("MRAA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(kernel_choice, "choose_training_layout", run_and_keep_the_default)
    assert same(logged_losses(tmp_path / "measured"), plain)
    assert runs == [tuple(config["dataset_params"]["frame_shape"][:2])]
