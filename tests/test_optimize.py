"""The fast forms of the networks (modules/optimize.py) against the plain ones, and the GPU-minded paths of the
Animator that the CPU can check: tiny models, 64x64 frames, float32 within 1e-4."""
import copy

import pytest
import torch
import torch.nn.functional as F

from animate import Animator
from config import validate_config
from modules.build import build_models
from modules.generator import Generator
from modules.optimize import (FAST_FORMS, FastGenerator, FastUpBlock2d, nearest_upsampling_kernel,
                               optimize_for_inference, optimize_for_training, use_fast_paths)
from modules.util import UpBlock2d
from tiny import tiny_model_params

TOLERANCE = 1e-4
VARIANTS = ["mraa", "regression", "keypoints", "no_skips_no_occlusion", "plain_heatmaps"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a CPU busy with other work two threads waiting on each
    other made these tests several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(variant="mraa", seed=0):
    """Tiny eval-mode networks whose batch norms have non-trivial statistics (so that folding them matters)."""
    torch.manual_seed(seed)
    models = build_models(validate_config({"model_params": tiny_model_params(variant)}))
    with torch.no_grad():
        for module in (m for model in models.values() for m in model.modules()):
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return {name: model.eval() for name, model in models.items()}


def images(batch, seed):
    return torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_transposed_kernel_equals_nearest_upsampling_then_convolution():
    x = torch.randn(2, 5, 7, 6, dtype=torch.float64)
    weight, bias = torch.randn(4, 5, 3, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    expected = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, bias, padding=1)
    ours = F.conv_transpose2d(x, nearest_upsampling_kernel(weight), bias, stride=2, padding=1)
    assert ours.shape == expected.shape == (2, 4, 14, 12)
    assert torch.allclose(ours, expected, atol=1e-12)


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_inference_copy_computes_the_same_numbers(variant, channels_last):
    models = build(variant)
    source, driving = images(1, 0).expand(2, -1, -1, -1), images(2, 1)
    source_params, driving_params = models["region_predictor"](source), models["region_predictor"](driving)
    generator = models["generator"]
    fast = optimize_for_inference(generator, channels_last)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    expected = generator(source, driving_params, source_params)
    ours = fast(source.contiguous(memory_format=layout), driving_params, source_params)
    for key in ("prediction", "optical_flow", "occlusion_map", "deformed"):
        if key in expected:
            assert (ours[key] - expected[key]).abs().max() <= TOLERANCE, key
    fast_regions = optimize_for_inference(models["region_predictor"], channels_last)
    for key, value in models["region_predictor"](driving).items():
        assert (fast_regions(driving.contiguous(memory_format=layout))[key] - value).abs().max() <= TOLERANCE, key


def test_inference_copy_leaves_the_module_as_it_was():
    generator = build()["generator"]
    before = {k: (v.clone(), v.stride()) for k, v in generator.state_dict().items()}
    fast = optimize_for_inference(generator)
    assert isinstance(fast.up_blocks[0], FastUpBlock2d) and isinstance(fast, FastGenerator)
    assert type(generator.up_blocks[0]) is UpBlock2d and type(generator) is Generator
    assert isinstance(generator.up_blocks[0].norm, torch.nn.BatchNorm2d)
    for key, value in generator.state_dict().items():
        assert torch.equal(value, before[key][0]) and value.stride() == before[key][1], key


@pytest.mark.parametrize("mode", ["standard", "relative", "avd"])
def test_optimised_animator_matches_the_straightforward_one(mode):
    models = build()
    networks = models["generator"], models["region_predictor"], models["avd_network"]
    source, driving = images(1, 0), images(3, 1)
    straightforward = Animator(source, *networks, mode=mode, optimize=False)
    optimised = Animator(source, *networks, mode=mode)
    for animator in (straightforward, optimised):
        animator.set_initial(driving[:1])
    error = (optimised(driving)["prediction"] - straightforward(driving)["prediction"]).abs().max()
    assert error <= TOLERANCE, f"{mode}: max abs error {error:.3g}"


def test_training_fast_paths_give_the_same_outputs_and_gradients():
    plain = build()["generator"].train()
    fast = optimize_for_training(copy.deepcopy(plain))
    source, driving = images(2, 0), images(2, 1)
    regions = build()["region_predictor"]
    with torch.no_grad():
        source_params, driving_params = regions(source), regions(driving)
    outputs = []
    for generator, layout in ((plain, torch.contiguous_format), (fast, torch.channels_last)):
        out = generator(source.contiguous(memory_format=layout), driving_params, source_params)
        out["prediction"].square().mean().backward()
        outputs.append((out["prediction"], {n: p.grad for n, p in generator.named_parameters()}))
    (expected, expected_grads), (ours, grads) = outputs
    assert (ours - expected).abs().max() <= TOLERANCE
    for name, grad in expected_grads.items():
        assert torch.allclose(grads[name], grad, rtol=1e-3, atol=1e-6), name
    fresh = build()["generator"]
    fresh.load_state_dict(fast.state_dict(), strict=True)  # checkpoints keep their names and shapes


def test_fast_twins_keep_parameters_and_names_and_switch_back():
    generator = build()["generator"]
    parameters = dict(generator.named_parameters())
    keys = list(generator.state_dict())
    use_fast_paths(generator)
    fast_types = set(FAST_FORMS.values())
    assert all(type(m) not in FAST_FORMS for m in generator.modules())
    assert sum(type(m) in fast_types for m in generator.modules()) > 5
    assert list(generator.state_dict()) == keys
    assert all(p is parameters[name] for name, p in generator.named_parameters())
    use_fast_paths(generator, enabled=False)
    assert all(type(m) not in fast_types for m in generator.modules())


def test_plain_blocks_carry_no_speed_switches():
    """The method's files read as the method: the fast forms live in modules/optimize.py only."""
    from conftest import REPO_ROOT
    for name in ("util.py", "generator.py"):
        text = (REPO_ROOT / "modules" / name).read_text()
        for word in ("inplace", "transposed", "fused_blend", "channels_last"):
            assert word not in text, f"modules/{name} mentions {word!r}"


def test_per_frame_path_never_reads_device_values():
    """On the meta device a tensor has no values: an ``.item()``, a host copy or a branch on a value would raise.
    This is the code a GPU runs (closed-form SVD, inverses without error checks), all the way to the prediction."""
    models = {name: model.to("meta") for name, model in build().items()}
    source, driving = torch.empty(1, 3, 64, 64, device="meta"), torch.empty(2, 3, 64, 64, device="meta")
    for mode in ("standard", "avd"):
        animator = Animator(source, models["generator"], models["region_predictor"], models["avd_network"],
                            mode=mode)
        out = animator(driving)
        assert out["prediction"].shape == (2, 3, 64, 64) and out["prediction"].device.type == "meta"


def test_bf16_animation_is_float32_and_close():
    models = build()
    source, driving = images(1, 0), images(2, 1)
    full = Animator(source, models["generator"], models["region_predictor"], mode="relative")
    half = Animator(source, models["generator"], models["region_predictor"], mode="relative", precision="bf16")
    expected, ours = full(driving)["prediction"], half(driving)["prediction"]
    assert ours.dtype == torch.float32 and ours.shape == expected.shape
    assert (ours - expected).abs().max() < 0.1


@pytest.mark.slow
def test_compiled_animator_matches():
    models = build()
    source, driving = images(1, 0), images(2, 1)
    eager = Animator(source, models["generator"], models["region_predictor"], mode="standard")
    compiled = Animator(source, models["generator"], models["region_predictor"], mode="standard", compile="eager")
    assert (compiled(driving)["prediction"] - eager(driving)["prediction"]).abs().max() <= TOLERANCE


def test_gpu_settings_chosen_by_construction():
    """What the CPU can check of the GPU set-up: cuDNN benchmark mode, pinned loader memory, the formats."""
    from device import configure
    from modules.optimize import wants_channels_last, wants_winograd
    from trainer import make_loader
    previous = torch.backends.cudnn.benchmark
    try:
        configure(torch.device("cuda"))  # only sets flags: no GPU needed
        assert torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = previous
    params = {"num_repeats": 1, "batch_size": 2, "dataloader_workers": 0}
    items = [{"x": torch.zeros(1)}] * 4
    assert make_loader(items, params, torch.device("cuda"), "train_params").pin_memory
    assert not make_loader(items, params, torch.device("cpu"), "train_params").pin_memory
    assert wants_channels_last("cpu") and not wants_channels_last("cuda") and wants_channels_last("cuda", "bf16")
    assert wants_winograd("cpu") and not wants_winograd("cuda") and not wants_winograd("cpu", "bf16")


class CopiesOf(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the shapes of the tensors that ops copying whole maps (copy_, clone, contiguous) write."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in (torch.ops.aten.copy_, torch.ops.aten.clone, torch.ops.aten.contiguous):
            self.shapes.append(tuple(out.shape))
        return out


def test_inference_warps_are_blended_without_a_layout_copy():
    """The warped skips go from grid_sample straight into the blend, which writes channels-last maps."""
    models = build()
    source, driving = images(1, 0), images(2, 1)
    animator = Animator(source, models["generator"], models["region_predictor"], mode="standard")
    generator = animator.generator
    source_params = animator.source_params
    driving_params = models["region_predictor"](driving)
    with torch.inference_mode(), CopiesOf() as copies:
        out = generator(animator.source_image.expand(2, -1, -1, -1), driving_params,
                        {k: v.expand(2, *v.shape[1:]) for k, v in source_params.items()},
                        source_features=animator.source_features)
    skip_shapes = {(2, *f.shape[1:]) for f in animator.source_features[:-1]}  # blended with a decoder map
    assert not skip_shapes & set(copies.shapes), copies.shapes
    assert out["prediction"].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("batch,size", [(1, 64), (3, 64), (2, 96), (2, 66), (2, 32)])
@torch.no_grad()
def test_winograd_convolution_equals_the_direct_one(batch, size):
    """F(2x2, 3x3) on every image of a batch at once, in row chunks at 96x96; 66x66 (33 tiles a row: no chunk of a
    multiple of 16 tiles) and 32x32 (under the size it pays from) go to the direct convolution."""
    from modules.winograd import WinogradConv2d
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 24, 3, padding=1).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 64, size, size).contiguous(memory_format=torch.channels_last)
    out = WinogradConv2d(conv)(x)
    assert out.shape == (batch, 24, size, size) and out.is_contiguous(memory_format=torch.channels_last)
    assert (out - conv(x)).abs().max() <= TOLERANCE
