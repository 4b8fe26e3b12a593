"""The batched animation core (Animator) against the reference's frame-by-frame animation, the video writer,
and ``--mode animate`` end to end on the parity model."""
import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from animate import Animator, animate, batched, frames_to_tensor, make_animation, region_layout, tensor_to_uint8
from checkpoint import CheckpointError, load_checkpoint
from config import load_config
from demo import load_checkpoints
from media import VideoWriter
from eval_media import (count_frames, parity_arrays, parity_paths, video_fps, write_dataset, write_eval_config,
                        write_video)
from frames_dataset import FramesDataset
from modules.build import build_models

from tolerances import TOLERANCE, reference_tolerance

MODES = ["standard", "relative", "avd"]


@pytest.fixture
def parity_models(parity_dir):
    """(generator, region_predictor, avd_network) of the parity model, eval mode, on the CPU."""
    return load_checkpoints(*parity_paths(parity_dir), cpu=True)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch_size", [1, 3])
def test_animator_reproduces_the_reference_frame_by_frame_animation(mode, batch_size, parity_dir, parity_models):
    expected = parity_arrays(parity_dir)
    source, driving = torch.from_numpy(expected["source"]), torch.from_numpy(expected["driving"])
    animator = Animator(source, *parity_models, mode=mode)
    prediction = torch.cat([animator(driving[i:i + batch_size])["prediction"]
                            for i in range(0, len(driving), batch_size)])  # (T, 3, H, W), batches 3 + 1
    error = (prediction - torch.from_numpy(expected[f"animate.{mode}.prediction"])).abs().max()
    assert error <= reference_tolerance(mode), f"{mode}, batch {batch_size}: max abs error {error:.3g}"


@pytest.mark.parametrize("mode", MODES)
def test_make_animation_keeps_the_reference_api_and_numbers(mode, parity_dir, parity_models):
    expected = parity_arrays(parity_dir)
    source = expected["source"][0].transpose(1, 2, 0)  # (H, W, 3)
    driving = list(expected["driving"].transpose(0, 2, 3, 1))  # T x (H, W, 3)
    frames = make_animation(source, driving, *parity_models, animation_mode=mode, cpu=True, batch_size=3)
    assert len(frames) == len(driving) and frames[0].shape == (64, 64, 3)
    error = np.abs(np.stack(frames).transpose(0, 3, 1, 2) - expected[f"animate.{mode}.prediction"]).max()
    assert error <= reference_tolerance(mode)


def test_initial_frame_is_the_reference_of_relative_motion(parity_dir, parity_models):
    """Animating from frame k equals the reference's backward + forward passes that both start at frame k."""
    expected = parity_arrays(parity_dir)
    source = expected["source"][0].transpose(1, 2, 0)
    driving = list(expected["driving"].transpose(0, 2, 3, 1))
    k = 2
    ours = make_animation(source, driving, *parity_models, animation_mode="relative", initial_frame=k)
    forward = make_animation(source, driving[k:], *parity_models, animation_mode="relative", batch_size=1)
    backward = make_animation(source, driving[:k + 1][::-1], *parity_models, animation_mode="relative",
                              batch_size=1)
    reference = backward[::-1] + forward[1:]
    assert np.abs(np.stack(ours) - np.stack(reference)).max() <= TOLERANCE


def test_layout_distance_is_zero_for_the_source_and_ignores_position_and_size(parity_dir, parity_models):
    expected = parity_arrays(parity_dir)
    source = torch.from_numpy(expected["source"])
    animator = Animator(source, *parity_models)
    distances = animator.layout_distance(torch.cat([torch.from_numpy(expected["driving"]), source]))  # (T + 1,)
    assert distances[-1] < 1e-8 and (distances[:-1] > 1e-4).all()
    shift = torch.rand(2, 5, 2)
    assert torch.allclose(region_layout(shift * 0.5 + 0.2), region_layout(shift), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("mode,precision,optimize", [(mode, "fp32", True) for mode in MODES] + [
    ("avd", "bf16", True), ("relative", "bf16", True), ("relative", "fp32", False)])
def test_the_per_frame_path_traces_as_one_graph(mode, precision, optimize, parity_dir, parity_models):
    """``torch.compile`` traces ``Animator.render`` (networks, AVD and region geometry) with no graph break: nothing
    on it branches on values or waits for the device; compiled (backend 'eager') it gives the same frames."""
    expected = parity_arrays(parity_dir)
    source, driving = torch.from_numpy(expected["source"]), torch.from_numpy(expected["driving"])
    animator = Animator(source, *parity_models, mode=mode, precision=precision, optimize=optimize)
    animator.set_initial(driving[:1])
    torch._dynamo.reset()
    with torch.inference_mode():
        explained = torch._dynamo.explain(animator.render)(driving[:2])
    reasons = sorted({f"{b.reason}".splitlines()[0] + f" at {b.user_stack[-1]}" for b in explained.break_reasons})
    assert explained.graph_break_count == 0 and explained.graph_count == 1, reasons
    compiled = Animator(source, *parity_models, mode=mode, precision=precision, optimize=optimize, compile="eager",
                        batch_size=2)  # the batch's own size: no padding (AVD mode amplifies a batch size's rounding)
    assert torch.equal(compiled(driving[:2])["prediction"], animator(driving[:2])["prediction"])


def test_avd_mode_needs_an_avd_network(parity_dir, parity_models):
    generator, region_predictor, _ = parity_models
    with pytest.raises(ValueError, match="needs an AVD network"):
        Animator(torch.rand(1, 3, 64, 64), generator, region_predictor, None, mode="avd")


def test_batched():
    assert [len(b) for b in batched(range(7), 3)] == [3, 3, 1]
    with pytest.raises(ValueError):
        list(batched(range(3), 0))


def test_frames_and_tensors_round_trip():
    frames = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3)).astype(np.uint8)
    tensor = frames_to_tensor(frames / 255.0, "cpu")  # (2, 3, 5, 7)
    assert tensor.shape == (2, 3, 5, 7) and tensor.dtype == torch.float32
    assert np.array_equal(tensor_to_uint8(tensor), frames)


@pytest.mark.parametrize("suffix,fps", [(".mp4", 12), (".mp4", 29.97), (".gif", 10), (".mov", 8)])
def test_video_writer_keeps_frame_count_and_rate(suffix, fps, tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (7, 32, 48, 3)).astype(np.uint8)
    path = write_video(tmp_path / f"v{suffix}", frames, fps=fps)
    assert count_frames(path) == 7
    if suffix == ".gif":
        assert iio.immeta(path)["duration"] == 100
    else:
        assert video_fps(path) == pytest.approx(fps, abs=0.01)


def test_video_writer_refuses_unknown_formats(tmp_path):
    with pytest.raises(ValueError, match="cannot write a '.xyz' video"):
        VideoWriter(tmp_path / "out.xyz", 10)


@pytest.fixture
def eval_setup(tmp_path, parity_dir):
    """A 3-video dataset (6 frames of 64x64 each) and a config for it; returns (config path, dataset)."""
    root = write_dataset(tmp_path / "data", parity_dir)
    config_path = write_eval_config(tmp_path / "config.yaml", parity_dir, root, num_pairs=2, mode="avd")
    config = load_config(config_path)
    return config_path, FramesDataset(is_train=False, **config["dataset_params"])


def test_animate_mode_writes_a_video_and_a_png_strip_per_pair(eval_setup, tmp_path, parity_dir):
    config_path, dataset = eval_setup
    config = load_config(config_path)
    log_dir = tmp_path / "log"
    out_dir = animate(config, build_models(config), parity_paths(parity_dir)[1], log_dir, dataset, "cpu",
                      batch_size=4)
    models = load_checkpoints(config_path, parity_paths(parity_dir)[1], cpu=True)
    strips = sorted((out_dir / "png").glob("*.png"))
    assert len(strips) == 2 and len(list(out_dir.glob("*.mp4"))) == 2
    for strip in strips:
        driving_name, source_name = strip.stem.split("-")
        assert (out_dir / f"{strip.stem}.mp4").is_file() and count_frames(out_dir / f"{strip.stem}.mp4") == 6
        image = iio.imread(strip)
        assert image.shape == (64, 6 * 64, 3) and image.dtype == np.uint8
        # The strip holds exactly the animation of the source's first frame by the driving video (lossless).
        driving = np.stack([iio.imread(dataset.root_dir / driving_name / f"{t}.png") for t in range(6)]) / 255.0
        source = iio.imread(dataset.root_dir / source_name / "0.png") / 255.0
        frames = make_animation(source, list(driving), *models, animation_mode="avd")
        expected = np.concatenate([tensor_to_uint8(torch.from_numpy(f).permute(2, 0, 1)[None])[0] for f in frames],
                                  axis=1)
        assert np.abs(image.astype(int) - expected).max() <= 1


def test_animate_mode_avd_without_avd_network_is_a_clear_error(eval_setup, tmp_path, parity_dir):
    config_path, dataset = eval_setup
    checkpoint = torch.load(parity_paths(parity_dir)[1], map_location="cpu", weights_only=True)
    del checkpoint["avd_network"]
    no_avd = tmp_path / "no_avd.pth"
    torch.save(checkpoint, no_avd)
    config = load_config(config_path)
    with pytest.raises(CheckpointError, match="no avd_network.*animate_params.mode"):
        animate(config, build_models(config), no_avd, tmp_path / "log", dataset, "cpu")
    # relative and standard modes do not need it
    config["animate_params"]["mode"] = "relative"
    config["animate_params"]["num_pairs"] = 1
    out_dir = animate(config, build_models(config), no_avd, tmp_path / "log", dataset, "cpu")
    assert len(list((out_dir / "png").glob("*.png"))) == 1


def test_load_checkpoints_without_avd_network(tmp_path, parity_dir):
    config_path, checkpoint_path = parity_paths(parity_dir)
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    del checkpoint["avd_network"]
    torch.save(checkpoint, tmp_path / "no_avd.pth")
    generator, region_predictor, avd_network = load_checkpoints(config_path, tmp_path / "no_avd.pth", cpu=True)
    assert avd_network is None and not generator.training and not region_predictor.training
    models = build_models(load_config(config_path))
    load_checkpoint(checkpoint_path, {"generator": models["generator"]})
    assert all(torch.equal(a, b) for a, b in zip(models["generator"].state_dict().values(),
                                                  generator.state_dict().values()))


def test_animate_mode_follows_the_pairs_list(tmp_path, parity_dir):
    root = write_dataset(tmp_path / "data", parity_dir, num_frames=3)
    (tmp_path / "pairs.csv").write_text("source,driving\nvid2,vid0\n")
    config = load_config(write_eval_config(tmp_path / "config.yaml", parity_dir, root, num_pairs=5, mode="standard"))
    config["dataset_params"]["pairs_list"] = str(tmp_path / "pairs.csv")
    dataset = FramesDataset(is_train=False, **config["dataset_params"])
    out_dir = animate(config, build_models(config), parity_paths(parity_dir)[1], tmp_path / "log", dataset, "cpu")
    assert [path.name for path in (out_dir / "png").iterdir()] == ["vid0-vid2.png"]


@pytest.mark.filterwarnings("ignore:.*name videos that are not in the test set")
@pytest.mark.parametrize("rows,words", [("source,driving\nnope,also_nope\n", "no pair"),
                                        ("driving\nvid0\n", "needs 'source' and 'driving' columns")])
def test_animate_mode_with_an_unusable_pairs_list_is_one_error_line(rows, words, tmp_path, parity_dir, capsys):
    import run
    root = write_dataset(tmp_path / "data", parity_dir, num_frames=3)
    (tmp_path / "pairs.csv").write_text(rows)
    config = write_eval_config(tmp_path / "config.yaml", parity_dir, root, mode="standard")
    config.write_text(config.read_text().replace("dataset_params:\n", f"dataset_params:\n  pairs_list: "
                                                                      f"{tmp_path / 'pairs.csv'}\n"))
    code = run.cli(["--config", str(config), "--mode", "animate", "--checkpoint", str(parity_paths(parity_dir)[1]),
                    "--log_dir", str(tmp_path / "log"), "--device", "cpu"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and words in errors[0] and str(tmp_path / "pairs.csv") in errors[0]
    assert not (tmp_path / "log" / "animation").exists()


# ----------------------------------------------------------------------------------------------------------
# --precision in the evaluation modes


@pytest.mark.slow
def test_reconstruction_and_animate_modes_run_in_bf16_close_to_float32(tmp_path, parity_dir):
    """``run.py --precision bf16`` reaches both modes: their outputs are those of float32 up to bf16 rounding."""
    import run
    root = write_dataset(tmp_path / "data", parity_dir, num_videos=2, num_frames=3)
    config = write_eval_config(tmp_path / "config.yaml", parity_dir, root, num_pairs=1, mode="relative")
    checkpoint = str(parity_paths(parity_dir)[1])
    outputs = {}
    for precision in ("fp32", "bf16"):
        for mode in ("reconstruction", "animate"):
            log_dir = tmp_path / precision
            assert run.cli(["--config", str(config), "--mode", mode, "--checkpoint", checkpoint, "--log_dir",
                            str(log_dir), "--device", "cpu", "--precision", precision]) == 0
        metrics = json.loads((log_dir / "reconstruction" / "metrics.json").read_text())
        assert metrics["precision"] == precision
        strips = [iio.imread(path) for folder in ("reconstruction", "animation")
                  for path in sorted((log_dir / folder / "png").glob("*.png"))]
        outputs[precision] = (metrics["mean"]["l1"], np.stack(strips).astype(float))  # (n, H, T * W, 3)
    (l1, fp32), (l1_bf16, bf16) = outputs["fp32"], outputs["bf16"]
    assert 0 < np.abs(fp32 - bf16).max()  # bf16 did run: some pixel differs ...
    assert np.abs(fp32 - bf16).mean() < 2.0  # ... by about a grey level on average (of 255)
    assert l1_bf16 == pytest.approx(l1, rel=0.05)


def test_precision_outside_the_evaluation_modes_is_one_error_line(tmp_path, parity_dir, capsys):
    import run
    root = write_dataset(tmp_path / "data", parity_dir, num_videos=1, num_frames=2)
    config = write_eval_config(tmp_path / "config.yaml", parity_dir, root)
    code = run.cli(["--config", str(config), "--mode", "train", "--log_dir", str(tmp_path / "log"), "--device",
                    "cpu", "--precision", "bf16"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "--mixed_precision" in errors[0]
    assert not (tmp_path / "log").exists()


@pytest.mark.parametrize("precision", ["fp64", "half"])
def test_unknown_precision_is_refused_before_any_work(precision, eval_setup, tmp_path, parity_dir):
    config_path, dataset = eval_setup
    config = load_config(config_path)
    with pytest.raises(ValueError, match="unknown precision.*fp32, bf16, fp16"):
        animate(config, build_models(config), parity_paths(parity_dir)[1], tmp_path / "log", dataset, "cpu",
                precision=precision)
    assert not (tmp_path / "log").exists()


class _FixedAnimator:
    """Stands for an Animator whose frames differ from float32's by ``offset`` (the PSNR is -20 log10 offset)."""

    def __init__(self, offset, calls, precision):
        self.offset, self.calls, self.precision = offset, calls, precision

    def __call__(self, driving):
        self.calls.append(self.precision)
        return {"prediction": torch.full_like(driving, 0.5) + self.offset}


@pytest.mark.parametrize("native, offsets, chosen, tried", [
    ([], {}, "fp32", []),  # most CPUs: no reduced precision of their own, nothing animated
    (["fp16", "bf16"], {"fp16": 1e-3, "bf16": 1e-4}, "fp16", ["fp32", "fp16"]),  # 60 dB: the first (fastest) passes
    (["fp16", "bf16"], {"fp16": 0.1, "bf16": 1e-3}, "bf16", ["fp32", "fp16", "bf16"]),  # fp16 at 20 dB fails
    (["bf16"], {"bf16": 0.1}, "fp32", ["fp32", "bf16"]),  # 20 dB: float32 stays
])
def test_auto_precision_takes_the_first_native_precision_close_enough_to_float32(native, offsets, chosen, tried,
                                                                                  monkeypatch):
    import animate
    monkeypatch.setenv("MRAA_KERNELS", "measure")
    monkeypatch.setattr(animate, "native_precisions", lambda device: native)
    calls, reads = [], []
    probe = torch.rand(2, 3, 8, 8)
    precision, note = animate.choose_precision(
        lambda p: _FixedAnimator({"fp32": 0.0, **offsets}[p], calls, p), lambda: reads.append(1) or probe, "cpu")
    assert precision == chosen and calls == tried
    assert len(reads) == (1 if native else 0)  # nothing decoded where there is nothing to choose
    monkeypatch.setenv("MRAA_KERNELS", "defaults")  # nothing measured: float32, nothing decoded
    assert animate.choose_precision(None, lambda: reads.append(1), "cpu") == ("fp32", None)
    assert len(reads) == (1 if native else 0)
    if not native:
        assert note is None
    elif chosen == "fp32":
        assert note == "precision auto: float32; the faster bf16 20.0 dB (against float32 on the first 2 " \
                       "frame(s)), under 45 dB"
    else:
        assert note.startswith(f"precision auto: {chosen}, 60.0 dB from float32 on the first 2 frame(s)")


def test_auto_precision_measures_the_real_networks(parity_dir, parity_models, monkeypatch, tmp_path):
    """On the parity model, bf16 (emulated on this CPU when it has no native bfloat16) measured against float32:
    close, not equal; an unreachable bar keeps float32 and says by how much bf16 missed it."""
    import animate
    monkeypatch.setenv("MRAA_KERNELS", "measure")
    monkeypatch.setenv("MRAA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(animate, "native_precisions", lambda device: ["bf16"])
    expected = parity_arrays(parity_dir)
    source = torch.from_numpy(expected["source"])[:1]  # (1, 3, H, W)
    probe = torch.from_numpy(expected["driving"])[:2]  # (2, 3, H, W)

    def make(precision):
        return Animator(source, *parity_models, mode="relative", precision=precision)
    assert animate.choose_precision(make, lambda: probe, "cpu", bar_db=35)[0] == "bf16"
    precision, note = animate.choose_precision(make, lambda: probe, "cpu", bar_db=200)
    assert precision == "fp32" and note.startswith("precision auto: float32; the faster bf16 ")
    quality = float(note.split("bf16 ")[1].split(" dB")[0])
    assert 35 < quality < 200


def test_a_precision_with_non_finite_frames_is_never_chosen(monkeypatch):
    import animate
    monkeypatch.setenv("MRAA_KERNELS", "measure")
    monkeypatch.setattr(animate, "native_precisions", lambda device: ["fp16"])
    precision, note = animate.choose_precision(lambda p: _FixedAnimator(0.0 if p == "fp32" else float("nan"), [], p),
                                               lambda: torch.rand(1, 3, 8, 8), "cpu")
    assert precision == "fp32" and "fp16 non-finite frames" in note


# What the GPU path keeps in float32, checked on the CPU: each bar sits 1-3 dB under what this code measures under
# CUDA's autocast lists (tests/cuda_autocast.py) on the parity model, and above what it measures with the region
# geometry left in half precision (bf16: 52.5 / 48.9 / non-finite dB; fp16: 69.0 / 66.1 / 47.1 dB).
GPU_BARS_DB = {"bf16": {"standard": 55, "relative": 53, "avd": 37}, "fp16": {"standard": 71, "relative": 67, "avd": 56}}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_under_cudas_autocast_the_region_geometry_stays_float32(precision, parity_dir, parity_models, monkeypatch):
    import animate
    import kernel_choice
    import modules.avd_network
    import modules.pixelwise_flow_predictor
    import modules.region_predictor
    from cuda_autocast import CudaAutocast
    from animate import PRECISIONS, psnr_db
    expected = parity_arrays(parity_dir)
    source, driving = torch.from_numpy(expected["source"])[:1], torch.from_numpy(expected["driving"])
    cuda = torch.device("cuda")  # the kernel forms a GPU takes (channels-last in half precision, no Winograd)

    def animated(mode, kernels):
        monkeypatch.setattr(animate, "choose_kernels", lambda *args: kernel_choice.default_choice(cuda, kernels))
        return Animator(source, *parity_models, mode=mode)(driving)["prediction"]

    def emulated(mode, geometry_in_float32):
        emulation = CudaAutocast(PRECISIONS[precision])
        with monkeypatch.context() as patch:
            if geometry_in_float32:  # float32_geometry turns CUDA's autocast off: here, the emulation
                for module in (animate, modules.avd_network, modules.pixelwise_flow_predictor,
                               modules.region_predictor):
                    patch.setattr(module, "float32_geometry", emulation.off)
            with emulation:
                return animated(mode, precision)
    for mode, bar in GPU_BARS_DB[precision].items():
        assert psnr_db(emulated(mode, True), animated(mode, "fp32")) >= bar, mode
    # The bars can fail: with the geometry in half precision, some mode falls under its bar.
    assert any(not psnr_db(emulated(mode, False), animated(mode, "fp32")) >= bar
               for mode, bar in GPU_BARS_DB[precision].items())


@pytest.mark.slow
def test_a_compiled_animator_pads_a_short_last_batch_to_its_graphs_batch(parity_dir, parity_models):
    """One graph serves a whole video: a last batch shorter than ``batch_size`` runs padded (no recompiling), and
    only its own frames come back, equal to those of the uncompiled path."""
    expected = parity_arrays(parity_dir)
    source, driving = torch.from_numpy(expected["source"])[:1], torch.from_numpy(expected["driving"])[:3]
    plain = Animator(source, *parity_models, mode="relative", batch_size=4)
    compiled = Animator(source, *parity_models, mode="relative", batch_size=4, compile="eager")
    seen = []
    render = compiled.render_batch
    compiled.render_batch = lambda frames: seen.append(frames.shape[0]) or render(frames)
    out, reference = compiled(driving), plain(driving)
    assert seen == [4] and out["prediction"].shape[0] == 3
    assert out["driving_region_params"]["shift"].shape[0] == 3
    assert torch.allclose(out["prediction"], reference["prediction"], atol=1e-6)
