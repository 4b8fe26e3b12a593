"""tools/benchmark.py --quick: every part runs and reports sane numbers (no timing is asserted: machines differ)."""
import importlib.util
import json

import pytest
import torch

from tools import benchmark

pytestmark = pytest.mark.slow  # the quick benchmark trains and animates for half a minute


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmark") / "results.json"
    assert benchmark.main(["--quick", "--parts", ",".join(benchmark.PARTS), "--out", str(out)]) == 0
    return json.loads(out.read_text())


def positive(*values):
    return all(isinstance(v, (int, float)) and v > 0 for v in values)


def test_machine(results):
    machine = results["machine"]
    assert machine["threads"] == 1 and positive(machine["matmul_gflops"], machine["conv3x3_gflops"])
    assert len(machine["load_average"]) == 3


def test_inference(results):
    inference = results["inference"]
    assert set(inference["seconds_per_frame_by_batch_size"]) == {"1", "2"}
    assert str(inference["best_batch_size"]) in inference["seconds_per_frame_by_batch_size"]
    assert positive(inference["seconds_per_frame"], inference["reference_seconds_per_frame"], inference["speedup"],
                    inference["gflops_per_second"], inference["matmul_ratio"], inference["peak_rss_mb"])
    assert isinstance(inference["model_preparation_seconds"], float)  # a difference of two times: may be ~0 here
    # The reference encodes the source for every frame and up-samples before convolving: it does more work.
    assert 0 < inference["flops_per_frame"] < inference["reference_flops_per_frame"]
    assert inference["max_abs_difference"] <= 1e-4  # float32, the same numbers
    assert len(inference["load_average"]) == 2


def test_inference_reports_the_kernel_choices(results):
    """Each precision timed and each batch size searched has its choice of fast forms, and how it was made."""
    kernels = results["inference"]["kernels"]
    assert set(kernels) == {"fp32", *benchmark.native_precisions("cpu")}
    for precision, by_batch in kernels.items():
        assert set(by_batch) == {"1", "2"}
        for chosen in by_batch.values():
            assert all(isinstance(chosen[k], bool) for k in ("channels_last", "winograd", "narrow"))
            assert chosen["source"] in ("measured", "cached", "defaults") and chosen["seconds"] >= 0


def test_inference_sides_and_their_share_of_the_machine(results):
    """Every side of one run: the reference, float32, bf16 where the CPU has it, ONNX Runtime where installed."""
    inference, machine = results["inference"], results["machine"]
    sides = inference["sides"]
    expected = {"reference", "fp32", *benchmark.native_precisions("cpu")}
    if importlib.util.find_spec("onnxruntime"):
        expected.add("onnxruntime")
    else:
        assert any("onnxruntime" in note for note in inference["notes"])
    assert set(sides) == expected
    for name, side in sides.items():
        assert positive(side["seconds_per_frame"], side["speedup"], side["gflops_per_second"], side["conv_fraction"])
        assert side["conv_fraction"] < 2, name  # a fraction of what the machine's convolutions reach
    assert sides["reference"]["speedup"] == 1 and sides["fp32"]["seconds_per_frame"] == inference["seconds_per_frame"]
    for precision in benchmark.native_precisions("cpu"):
        assert positive(machine[f"conv3x3_{precision}_gflops"])
        assert 30 < inference[f"{precision}_psnr_db"]  # against float32: close, not equal
    if "onnxruntime" in sides:
        assert inference["onnxruntime_max_abs_difference"] <= 1e-4


def test_training(results):
    training = results["training"]
    for side in (training, training["same_process"]):
        assert positive(side["seconds_per_step"], side["straightforward_seconds_per_step"], side["speedup"])
    assert positive(training["peak_rss_mb"], training["straightforward_peak_rss_mb"])
    # --quick measures config/puppets64.yaml, whose training adds a pixel L1 term
    assert set(training["losses"]) == {"perceptual", "l1", "equivariance_shift", "equivariance_affine"}
    assert isinstance(training["channels_last"], bool)  # the layout train.py would take here
    assert training["loss_max_relative_difference"] <= 1e-4  # same losses


def test_loader(results):
    loader = results["loader"]
    assert positive(*loader["items_per_second_by_workers"].values())
    assert isinstance(loader["keeps_up"], bool)


def test_demo_end_to_end_against_the_model_alone(results):
    demo = results["demo"]
    assert "6 frames of 96x96" in demo["driving"] and len(demo["load_average"]) == 2
    for precision in ["fp32", *benchmark.native_precisions("cpu")]:
        side = demo[precision]
        assert positive(side["demo_frames_per_second"], side["model_frames_per_second"], side["demo_over_model"])
        # the ratio is of the two rates measured (no speed is asserted: machines differ)
        assert side["demo_over_model"] == pytest.approx(side["demo_frames_per_second"] /
                                                        side["model_frames_per_second"], rel=0.02)


def test_metrics_of_a_copy_shifted_by_5_pixels(results):
    metrics = results["metrics"]
    assert metrics["clip"].startswith("10 frames 256x256")
    for target in ("face", "body"):
        assert positive(metrics[target]["seconds"], metrics[target]["frames_per_second"])
        assert 4 < metrics[target]["akd"] < 6, target


def test_memory_does_not_grow_with_the_video(results):
    memory = results["memory"]
    assert set(memory["peak_rss_mb_by_frames"]) == {"10", "40"}
    assert positive(*memory["peak_rss_mb_by_frames"].values())
    assert memory["long_over_short"] <= 1.1  # streamed: 4x the frames, the same memory


def test_the_model_alone_on_the_device(results):
    """The model part: frames/s of the Animator with frames kept on the device, per precision and batch size."""
    model = results["model"]
    assert model["device"] == "cpu" and set(model["frames_per_second"]) == {"fp32", *benchmark.native_precisions("cpu")}
    for by_batch in model["frames_per_second"].values():
        assert set(by_batch) == {"1", "2"} and positive(*by_batch.values())
    assert "compile_seconds" not in model  # only with --compile


def test_training_by_precision_runs_on_any_device(monkeypatch):
    """The GPU's training part (float32 and each native mixed precision, one process; with --compile the step
    compiled too), run here on the CPU: the same code but for the device. The compiled side traces with
    aot_eager (the same graph and autograd as inductor's, without generating code: minutes less on a CPU)."""
    monkeypatch.setattr(benchmark, "compile_modes_of", lambda device: ["aot_eager"])
    args = benchmark.parse_args(["--quick", "--device", "cpu", "--compile"])
    training = benchmark.device_training_benchmark(args)
    compiled_side = ("bf16" if "bf16" in benchmark.native_precisions("cpu") else "none") + " compiled aot_eager"
    assert set(training["by_precision"]) == {"none", *benchmark.native_precisions("cpu"), compiled_side}
    plain = training["by_precision"]["none"]
    assert positive(plain["seconds_per_step"], *plain["losses"].values())
    assert plain["loss_max_relative_difference"] == 0 and plain["peak_gpu_memory_mb"] is None
    assert isinstance(plain["channels_last"], bool) and "compile_seconds" not in plain
    compiled = training["by_precision"][compiled_side]
    assert positive(compiled["seconds_per_step"], compiled["compile_seconds"])
    if compiled_side.startswith("none"):  # the same float32 step, traced: the same losses to float rounding
        assert compiled["loss_max_relative_difference"] < 1e-4


def test_device_defaults(monkeypatch):
    """Unless given, batch sizes, sides and the training batch follow the device: a GPU takes larger batches and
    both half precisions."""
    cpu = benchmark.parse_args([])
    assert (cpu.batch_sizes, cpu.sides, cpu.train_batch_size) == ([1, 2, 4], ["fp32", "bf16", "onnxruntime"], 2)
    monkeypatch.setattr(benchmark, "pick_device", lambda spec: torch.device("cuda"))
    cuda = benchmark.parse_args(["--device", "cuda"])
    assert (cuda.batch_sizes, cuda.sides, cuda.train_batch_size) == ([1, 8, 32], ["fp32", "bf16", "fp16"], 14)
    given = benchmark.parse_args(["--device", "cuda", "--batch_sizes", "4", "--sides", "fp32"])
    assert (given.batch_sizes, given.sides) == ([4], ["fp32"])


def test_a_device_that_is_not_there_is_one_error_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as exit:
        benchmark.parse_args(["--device", "cuda"])
    assert exit.value.code == 2
    assert "--device: device 'cuda' was asked for but CUDA is not available" in capsys.readouterr().err


def test_reduced_precisions_the_device_lacks_are_named(monkeypatch):
    args = benchmark.parse_args(["--sides", "fp32,bf16,fp16"])
    monkeypatch.setattr(benchmark, "native_precisions", lambda device: ["bf16"])
    assert benchmark.reduced_sides(args) == (
        ["bf16"], ["fp16 left out: this CPU does not compute it natively (AMX-FP16)"])


def test_the_precision_part_names_the_convolutions_that_lose_most(monkeypatch):
    """Run here with bf16 as if native (emulated on a CPU without it): the animation's PSNR against float32 and
    the worst convolutions of each network, largest error first."""
    monkeypatch.setattr(benchmark, "native_precisions", lambda device: ["bf16"])
    args = benchmark.parse_args(["--quick", "--sides", "fp32,bf16"])
    entry = benchmark.precision_benchmark(args)["by_precision"]["bf16"]["as set"]
    assert 35 < entry["psnr_db"] < 200
    for network in ("generator", "region_predictor"):
        worst = entry["worst_convolutions"][network]
        assert len(worst) == 5 and all(0 < error < 0.05 for error in worst.values()), worst  # bf16: ~0.3% a conv
        assert list(worst.values()) == sorted(worst.values(), reverse=True)
