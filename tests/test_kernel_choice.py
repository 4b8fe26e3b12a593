"""Kernel choices timed on the machine at hand (kernel_choice.py): measured once, cached per machine and model shape,
a damaged cache measured again, and the Animator's frames the same whichever forms were chosen."""
import json

import pytest
import torch

import kernel_choice
from animate import Animator
from config import load_config, validate_config
from conftest import REPO_ROOT
from kernel_choice import KernelChoice, choose, default_choice
from modules.build import build_models
from tiny import tiny_model_params

TOLERANCE = 1e-4


@pytest.fixture
def measuring(tmp_path, monkeypatch):
    """Measure (the suite's default is the device-type rules) into a cache folder of the test's own."""
    monkeypatch.setenv("MRAA_KERNELS", "measure")
    monkeypatch.setenv("MRAA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "kernels.json"


def tiny_networks(seed=0):
    torch.manual_seed(seed)
    models = build_models(validate_config({"model_params": tiny_model_params()}))
    return {name: model.eval() for name, model in models.items()}


def generator_and_run(networks, size):
    """The generator and a run of it on a random ``size`` x ``size`` source in its own pose."""
    source = torch.rand(1, 3, size, size)

    def run_once():
        params = networks["region_predictor"](source)
        networks["generator"](source, params, params)
    return networks["generator"], run_once


def wide_generator(size=128):
    """vox256's generator (its published widths: 256-channel residual blocks, so Winograd has layers to take) and a
    run of it."""
    torch.manual_seed(0)
    models = build_models(load_config(REPO_ROOT / "config" / "vox256.yaml"))
    return generator_and_run({name: model.eval() for name, model in models.items()}, size)


@pytest.mark.slow
def test_a_choice_is_measured_once_then_read_from_the_cache(measuring):
    generator, run_once = wide_generator()
    first = choose(generator, run_once, (128, 128), 2, "cpu")
    assert first.source == "measured"
    assert set(first.timings) == {"channels_last", "winograd", "narrow"}  # every switch had layers to time
    for name, times in first.timings.items():
        assert len(times) == 2 and all(0 < t < 10 for t in times.values()), (name, times)
    assert first.winograd == (first.timings["winograd"]["winograd"] < first.timings["winograd"]["direct"])
    assert "channels_last=" in first.why() and " ms" in first.why()

    entries = json.loads(measuring.read_text())["entries"]
    (entry,) = entries.values()
    assert entry["choice"] == first.options() and entry["described"]["machine"]["torch"] == torch.__version__
    assert entry["described"]["frame"] == [128, 128] and entry["described"]["batch"] == 1  # CPUs time batch 1

    def not_again():
        raise AssertionError("a cached choice ran the generator again")
    second = choose(generator, not_again, (128, 128), 2, "cpu")
    assert second.source == "cached" and second.options() == first.options()


@pytest.mark.parametrize("change", ["precision", "frame"])
def test_another_precision_or_frame_size_is_measured_apart(change, measuring):
    generator, run_once = generator_and_run(tiny_networks(), 64)
    choose(generator, run_once, (64, 64), 2, "cpu")
    other = {"precision": dict(precision="bf16"), "frame": dict(frame_shape=(32, 32))}
    arguments = {"frame_shape": (64, 64), "batch_size": 2, "precision": "fp32", **other[change]}
    again = choose(generator, run_once, device="cpu", **arguments)
    assert again.source == "measured" and len(json.loads(measuring.read_text())["entries"]) == 2


def test_cpus_time_one_batch_for_all_and_gpus_the_batch_animated(measuring):
    generator, run_once = generator_and_run(tiny_networks(), 64)
    assert choose(generator, run_once, (64, 64), 4, "cpu").source == "measured"
    assert choose(generator, run_once, (64, 64), 1, "cpu").source == "cached"
    assert kernel_choice.measured_batch(4, "cpu") == 1 and kernel_choice.measured_batch(32, "cuda") == 32


@pytest.mark.parametrize("damage", ["not json", "[" * 5000, '{"format": 99, "entries": {}}',
                                    '{"format": 1, "entries": []}', "folder"],
                         ids=["not json", "nested", "another format", "entries not a mapping", "folder"])
def test_a_damaged_or_foreign_cache_is_measured_again(damage, measuring):
    generator, run_once = generator_and_run(tiny_networks(), 64)
    measuring.parent.mkdir(parents=True)
    if damage == "folder":  # cannot be read nor written: measured, and the run goes on
        measuring.mkdir()
    else:
        measuring.write_text(damage)
    choice = choose(generator, run_once, (64, 64), 1, "cpu")
    assert choice.source == "measured"
    if damage != "folder":
        assert json.loads(measuring.read_text())["format"] == kernel_choice.CACHE_FORMAT


def test_defaults_skip_measuring_and_a_bad_policy_is_named(monkeypatch):
    monkeypatch.setenv("MRAA_KERNELS", "defaults")

    def never():
        raise AssertionError("the defaults ran the generator")
    networks = tiny_networks()
    assert choose(networks["generator"], never, (64, 64), 4, "cpu", "bf16") == default_choice("cpu", "bf16")
    assert default_choice("cpu") == KernelChoice(channels_last=True, winograd=True, narrow=True)
    assert default_choice("cuda") == KernelChoice(channels_last=False, winograd=False, narrow=False)
    monkeypatch.setenv("MRAA_KERNELS", "fastest")
    with pytest.raises(ValueError, match="MRAA_KERNELS='fastest': use one of measure, defaults"):
        choose(networks["generator"], never, (64, 64), 4, "cpu")


def test_the_machine_is_described_by_its_cpu_flags_torch_and_threads():
    described = kernel_choice.machine_description("cpu")
    assert described["torch"] == torch.__version__ and described["threads"] == torch.get_num_threads()
    assert set(described["flags"]) <= set(kernel_choice.ISA_FLAGS) and described["cpu"]


@pytest.mark.parametrize("mode", ["standard", "relative", "avd"])
@pytest.mark.parametrize("forced", [None, KernelChoice(False, False, False), KernelChoice(True, True, True)])
def test_the_animator_gives_the_same_frames_whatever_was_chosen(mode, forced, measuring, monkeypatch):
    """Measured or forced either way, the optimised Animator computes the straightforward one's frames."""
    if forced is not None:
        monkeypatch.setattr(kernel_choice, "measure", lambda *args, **kwargs: forced)
    networks = tiny_networks()
    triple = networks["generator"], networks["region_predictor"], networks["avd_network"]
    source, driving = torch.rand(1, 3, 64, 64), torch.rand(3, 3, 64, 64)
    plain = Animator(source, *triple, mode=mode, optimize=False)
    fast = Animator(source, *triple, mode=mode, batch_size=3)
    assert plain.kernels is None and fast.kernels.source == ("measured" if forced is None else forced.source)
    if forced is not None:
        assert fast.kernels == forced and fast.channels_last == forced.channels_last
    for animator in (plain, fast):
        animator.set_initial(driving[:1])
    error = (fast(driving)["prediction"] - plain(driving)["prediction"]).abs().max()
    assert error <= TOLERANCE, f"{mode}, {fast.kernels}: max abs error {error:.3g}"


def test_the_demo_says_so_before_it_times_kernels_and_only_the_first_time(measuring, tmp_path, parity_dir, capsys):
    import imageio.v3 as iio

    import demo
    from eval_media import driving_frames, parity_paths, source_image, write_video
    config, checkpoint = parity_paths(parity_dir)
    iio.imwrite(tmp_path / "source.png", source_image(parity_dir))
    write_video(tmp_path / "driving.mp4", driving_frames(parity_dir, 4), fps=10)
    argv = ["--config", str(config), "--checkpoint", str(checkpoint), "--source_image", str(tmp_path / "source.png"),
            "--driving_video", str(tmp_path / "driving.mp4"), "--result_video", str(tmp_path / "result.mp4"),
            "--img_shape", "64,64", "--cpu", "--quiet", "--mode", "relative"]
    notes = []
    for _ in range(2):
        assert demo.main(argv) == 0
        notes.append([line for line in capsys.readouterr().err.splitlines()
                      if "timing the convolution kernels" in line])
    assert len(notes[0]) == 1 and notes[0][0].startswith("note: ") and notes[1] == []
    assert len(json.loads(measuring.read_text())["entries"]) == 1


def test_a_bad_kernel_policy_is_one_error_line_in_the_demo(monkeypatch, tmp_path, parity_dir, capsys):
    import demo
    from eval_media import parity_paths
    monkeypatch.setenv("MRAA_KERNELS", "fastest")
    config, checkpoint = parity_paths(parity_dir)
    code = demo.main(["--config", str(config), "--checkpoint", str(checkpoint), "--source_image",
                      str(REPO_ROOT / "sup-mat" / "source.png"), "--driving_video",
                      str(REPO_ROOT / "sup-mat" / "driving.mp4"), "--result_video", str(tmp_path / "r.mp4"),
                      "--img_shape", "64,64", "--cpu", "--quiet"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "MRAA_KERNELS='fastest'" in errors[0]
    assert not (tmp_path / "r.mp4").exists()


@pytest.mark.parametrize("mode", ["train", "reconstruction"])
def test_a_bad_kernel_policy_is_one_error_line_in_run_py_before_any_work(mode, monkeypatch, tmp_path, parity_dir,
                                                                         capsys):
    import run
    from eval_media import parity_paths
    monkeypatch.setenv("MRAA_KERNELS", "fastest")
    config, checkpoint = parity_paths(parity_dir)
    code = run.cli(["--config", str(config), "--mode", mode, "--log_dir", str(tmp_path / "log"), "--device", "cpu",
                    *(["--checkpoint", str(checkpoint)] if mode != "train" else [])])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "MRAA_KERNELS='fastest'" in errors[0], errors
    assert not (tmp_path / "log").exists()


def test_the_training_layout_is_timed_forward_and_backward_once_then_cached(tmp_path, monkeypatch, capsys):
    """The first stage's model on a tiny config: both layouts timed over its convolutions (VGG's included), the
    faster taken and cached; the second time read from the cache."""
    from config import load_config
    from losses import RandomTransform, Vgg19
    from modules.build import build_models
    from tiny import TINY_CONFIG
    from train import ReconstructionModel
    monkeypatch.setenv("MRAA_KERNELS", "measure")
    monkeypatch.setenv("MRAA_CACHE_DIR", str(tmp_path))
    config = load_config(TINY_CONFIG)
    models = build_models(config)
    model = ReconstructionModel(**{n: models[n] for n in ("region_predictor", "bg_predictor", "generator")},
                                vgg=Vgg19("random"), train_params=config["train_params"],
                                model_params=config["model_params"]).eval()
    frames = torch.rand(2, 1, 3, 32, 32)

    def run_once():
        model(frames[0], frames[1], RandomTransform(1, **config["train_params"]["transform_params"]))
    assert kernel_choice.needs_measuring(model, (32, 32), 4, "cpu", training=True)
    channels_last, source, timings = kernel_choice.choose_training_layout(model, run_once, (32, 32), 4, "cpu")
    assert source == "measured" and set(timings) == {"contiguous", "channels_last"}
    assert all(seconds > 0 for seconds in timings.values())
    assert channels_last == (timings["channels_last"] < timings["contiguous"])
    assert not kernel_choice.needs_measuring(model, (32, 32), 4, "cpu", training=True)
    assert kernel_choice.needs_measuring(model, (32, 32), 4, "cpu")  # the inference choice is another entry
    assert kernel_choice.choose_training_layout(model, None, (32, 32), 4, "cpu") == (channels_last, "cached", timings)
