"""The fast forms of the networks (modules/optimize.py) against the plain ones, and the GPU-minded paths of the
Animator that the CPU can check: tiny models, 64x64 frames, float32 within 1e-4."""
import copy

import pytest
import torch
import torch.nn.functional as F

from animate import Animator, forget_prepared, prepared_for_inference
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


@pytest.mark.parametrize("keeps_kernel", [True, False])
def test_up_block_keeps_its_transposed_kernel_only_for_inference(keeps_kernel, monkeypatch):
    block = FastUpBlock2d(6, 4).eval()
    block.keeps_kernel = keeps_kernel
    calls = []
    monkeypatch.setattr("modules.optimize.nearest_upsampling_kernel",
                        lambda weight: calls.append(1) or nearest_upsampling_kernel(weight))
    x = torch.randn(2, 6, 8, 8)  # 64 pixels: the transposed form
    with torch.no_grad():
        expected = UpBlock2d.forward(block, x)
        outputs = [block(x), block(x)]
    assert all((out - expected).abs().max() <= TOLERANCE for out in outputs)
    assert len(calls) == (1 if keeps_kernel else 2)
    block.double()  # the weights moved: the kept kernel is made again
    with torch.no_grad():
        assert block(x.double()).dtype == torch.float64
    assert len(calls) == (2 if keeps_kernel else 3)


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


@pytest.mark.parametrize("winograd_from_pixels", [None, 1])
@pytest.mark.parametrize("mode", ["standard", "relative", "avd"])
def test_optimised_animator_matches_the_straightforward_one(mode, winograd_from_pixels, monkeypatch):
    """The CPU's optimised generator (folded norms, transposed up-sampling, merged heads, the narrow final
    convolution, gathered warps) as it is, and with Winograd convolutions on the tiny model's maps too."""
    if winograd_from_pixels is not None:
        from modules.winograd import WinogradConv2d
        monkeypatch.setattr(WinogradConv2d, "MIN_PIXELS", winograd_from_pixels)
    models = build()
    networks = models["generator"], models["region_predictor"], models["avd_network"]
    source, driving = images(1, 0), images(3, 1)
    straightforward = Animator(source, *networks, mode=mode, optimize=False)
    optimised = Animator(source, *networks, mode=mode)
    for animator in (straightforward, optimised):
        animator.set_initial(driving[:1])
    error = (optimised(driving)["prediction"] - straightforward(driving)["prediction"]).abs().max()
    assert error <= TOLERANCE, f"{mode}: max abs error {error:.3g}"


@pytest.mark.parametrize("mode, optimised", [("standard", True), ("relative", True), ("avd", False)])
def test_animator_optimises_the_region_predictor_except_for_avd(mode, optimised):
    """Folded norms in the region predictor, except where the AVD network would amplify their last-bit
    differences past the parity tolerance (tests/test_animate.py holds AVD mode to the reference's frames)."""
    models = build()
    animator = Animator(images(1, 0), models["generator"], models["region_predictor"], models["avd_network"],
                        mode=mode)
    norms = [m for m in animator.region_predictor.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert (animator.region_predictor is not models["region_predictor"]) == optimised
    assert (not norms) == optimised
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in models["region_predictor"].modules())  # the caller's
    # network is left as it was


def test_prepared_copies_are_reused_until_the_weights_change():
    generator = build()["generator"]
    first = prepared_for_inference(generator, channels_last=True)
    assert prepared_for_inference(generator, channels_last=True) is first
    assert prepared_for_inference(generator, channels_last=False) is not first  # other options, another copy
    source, driving = images(1, 0), images(2, 1)
    regions = build()["region_predictor"]
    with torch.no_grad():
        source_params, driving_params = regions(source), regions(driving)

        def render(network):
            return network(source.expand(2, -1, -1, -1).contiguous(memory_format=torch.channels_last),
                           driving_params, {k: v.expand(2, *v.shape[1:]) for k, v in source_params.items()})[
                "prediction"]

        before = render(first)
        generator.load_state_dict(build(seed=1)["generator"].state_dict())  # new weights, the same tensors
        second = prepared_for_inference(generator, channels_last=True)
        assert second is not first
        assert (render(second) - render(optimize_for_inference(generator))).abs().max() <= TOLERANCE
        assert (render(second) - before).abs().max() > 10 * TOLERANCE
        next(generator.parameters()).mul_(2)  # an in-place change, as an optimiser step makes
        assert prepared_for_inference(generator, channels_last=True) is not second
    third = prepared_for_inference(generator, channels_last=True)
    forget_prepared()
    assert prepared_for_inference(generator, channels_last=True) is not third
    with torch.inference_mode():  # inference tensors keep no version counter: a copy each time
        made_in_inference_mode = copy.deepcopy(generator)
    assert next(made_in_inference_mode.parameters()).is_inference()
    assert prepared_for_inference(made_in_inference_mode) is not prepared_for_inference(made_in_inference_mode)


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
    from modules.optimize import wants_channels_last, wants_narrow_convolutions, wants_winograd
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
    assert wants_winograd("cpu") and wants_winograd("cpu", "bf16") and not wants_winograd("cuda")
    assert wants_narrow_convolutions("cpu") and not wants_narrow_convolutions("cuda")


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


@pytest.mark.parametrize("tile", [4, 6, None])
@pytest.mark.parametrize("batch,height,width", [(1, 64, 64), (3, 64, 64), (2, 96, 96), (2, 66, 70), (1, 30, 41),
                                                (5, 32, 32), (2, 16, 16)])
@torch.no_grad()
def test_winograd_convolution_equals_the_direct_one(batch, height, width, tile):
    """F(m x m, 3x3) by images (several a chunk at 32x32), by chunks of tile rows at 96x96; sizes that are no
    multiple of the tile padded and cropped; 16x16 (under the size it pays from) goes to the direct convolution."""
    from modules.winograd import WinogradConv2d
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 24, 3, padding=1).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 64, height, width).contiguous(memory_format=torch.channels_last)
    winograd = WinogradConv2d(conv, tile)
    out = winograd(x)
    assert out.shape == (batch, 24, height, width) and out.stride(1) == 1  # channels-last, maybe a cropped view
    assert (out - conv(x)).abs().max() <= TOLERANCE
    assert (not winograd.weights) == (height * width < WinogradConv2d.MIN_PIXELS)
    plain = x.contiguous()  # not channels-last: the direct convolution
    assert torch.equal(winograd(plain), conv(plain))


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("size", [32, 16])  # Winograd, and the direct convolution under MIN_PIXELS
@torch.no_grad()
def test_winograd_convolution_applies_the_pre_activation_as_it_copies(size, affine, relu):
    from modules.winograd import WinogradConv2d
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 8, 3, padding=1).eval().to(memory_format=torch.channels_last)
    x = torch.randn(2, 64, size, size).contiguous(memory_format=torch.channels_last)
    scale, shift = (torch.rand(64) + 0.5, torch.randn(64)) if affine else (None, None)
    activated = x * scale.view(-1, 1, 1) + shift.view(-1, 1, 1) if affine else x
    expected = conv(F.relu(activated) if relu else activated)
    assert (WinogradConv2d(conv)(x, scale, shift, relu=relu) - expected).abs().max() <= TOLERANCE


@pytest.mark.parametrize("size", [32, 16])
@torch.no_grad()
def test_residual_block_with_winograd_folds_its_pre_activations(size):
    """The optimised residual block (norm2 folded into conv1, Winograd convolutions that apply norm1 and the
    ReLUs as they copy their inputs) against the plain block, on a map Winograd takes and one it leaves."""
    from modules.optimize import FastResBlock2d, fold_batch_norms, use_winograd
    from modules.util import ResBlock2d
    torch.manual_seed(0)
    plain = ResBlock2d(64, 3, 1)
    for norm in (plain.norm1, plain.norm2):
        norm.running_mean.uniform_(-1, 1), norm.running_var.uniform_(0.5, 2), norm.weight.data.uniform_(0.5, 1.5)
    plain.eval()
    fast = use_winograd(use_fast_paths(fold_batch_norms(copy.deepcopy(plain)))).to(memory_format=torch.channels_last)
    x = torch.randn(2, 64, size, size).contiguous(memory_format=torch.channels_last)
    assert isinstance(fast, FastResBlock2d) and fast.folds_into_winograd(x) == (size == 32)
    assert (fast(x.clone()) - plain(x)).abs().max() <= TOLERANCE
    if size == 32:  # under bf16 autocast, a bf16 residual stream in: the block computes in float32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fast(x.bfloat16())
        assert out.dtype == torch.float32
        assert (out - plain(x.bfloat16().float())).abs().max() <= TOLERANCE


@pytest.mark.parametrize("tile", [4, 6])
def test_winograd_transforms_reproduce_every_single_tap(tile):
    """A kernel with one tap at (i, j) shifts the input: F(m x m, 3x3) must give exactly that shift, bias added
    (in float64, so the transforms' own rounding stays far below the tolerance)."""
    from modules.winograd import WinogradConv2d
    x = torch.randn(2, 3, 13, 12, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    for i in range(3):
        for j in range(3):
            conv = torch.nn.Conv2d(3, 3, 3, padding=1).double()
            with torch.no_grad():
                conv.weight.zero_()
                conv.weight[range(3), range(3), i, j] = 1
                conv.bias.fill_(0.5)
            winograd = WinogradConv2d(conv, tile)
            winograd.MIN_PIXELS = 1
            expected = F.pad(x, (1, 1, 1, 1))[:, :, i:i + 13, j:j + 12] + 0.5
            assert torch.allclose(winograd(x), expected, atol=1e-12), (i, j)
    with pytest.raises(ValueError, match="tiles"):
        WinogradConv2d(conv, 5)


@pytest.mark.parametrize("expanded", [True, False])
@pytest.mark.parametrize("channels", [2, 16])
@torch.no_grad()
def test_gather_warp_equals_grid_sample(expanded, channels):
    """Bilinear, zeros outside (grids reaching past the border), align_corners=False; one image expanded over
    the batch (the source's features) or a batch of images; NaN coordinates give zeros instead of an index."""
    from modules.optimize import can_gather_warp, gather_warp
    torch.manual_seed(0)
    image = torch.randn(1 if expanded else 3, channels, 9, 13).contiguous(memory_format=torch.channels_last)
    image = image.expand(3, -1, -1, -1) if expanded else image
    grid = torch.rand(3, 7, 11, 2) * 2.4 - 1.2
    assert can_gather_warp(image)
    out = gather_warp(image, grid)
    expected = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert out.shape == expected.shape and out.is_contiguous(memory_format=torch.channels_last)
    assert (out - expected).abs().max() <= 1e-5  # the order of the four terms' sum may differ
    bf16 = image.bfloat16()  # bf16 inference: bf16 sums, within a few of bf16's roundings of the float32 result
    assert can_gather_warp(bf16) and gather_warp(bf16, grid).dtype == torch.bfloat16
    assert (gather_warp(bf16, grid).float() - expected).abs().max() <= 4 * 2 ** -8 * expected.abs().max()
    grid[0, 0, 0] = float("nan")
    assert torch.isfinite(gather_warp(image, grid)).all()
    assert not can_gather_warp(image.contiguous()) and not can_gather_warp(image.double())


@torch.no_grad()
def test_winograd_convolution_computes_in_float32_under_bf16_autocast():
    from modules.winograd import WinogradConv2d
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 8, 3, padding=1).eval().to(memory_format=torch.channels_last)
    x = torch.randn(2, 64, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = WinogradConv2d(conv)(x.bfloat16())  # a bf16 map from the layer before
        direct = conv(x)
    assert out.dtype == torch.float32 and direct.dtype == torch.bfloat16
    assert (out - conv(x.bfloat16().float())).abs().max() <= TOLERANCE  # only the input's own rounding


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("out_channels,kernel", [(3, 7), (1, 7), (8, 5), (2, 3)])
@torch.no_grad()
def test_narrow_convolution_equals_the_direct_one(out_channels, kernel, channels_last):
    """Rows in groups, the groups' maps shifted and summed (4 groups of 2 rows for 7x7 to 3 channels)."""
    from modules.optimize import NarrowConv2d
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, out_channels, kernel, padding=kernel // 2)
    x = torch.randn(2, 6, 11, 14)
    if channels_last:
        conv, x = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    narrow = NarrowConv2d(conv)
    assert narrow.groups * narrow.rows >= kernel and narrow.groups * out_channels <= NarrowConv2d.CHANNEL_BLOCK
    assert (narrow(x) - conv(x)).abs().max() <= 1e-5
    assert set(narrow.state_dict()) == {"conv.weight", "conv.bias"}  # its grouped kernel is derived, not saved
    assert narrow.to(memory_format=torch.channels_last).weight.is_contiguous(memory_format=torch.channels_last)
    assert not NarrowConv2d.supports(torch.nn.Conv2d(6, 9, 7, padding=3))  # too many channels to gain
    assert not NarrowConv2d.supports(torch.nn.Conv2d(6, 3, 7, padding=0))


@torch.no_grad()
def test_flow_predictor_heads_merged_give_both_outputs():
    from modules.optimize import FastPixelwiseFlowPredictor, merge_heads
    predictor = copy.deepcopy(build()["generator"].pixelwise_flow_predictor)
    prediction = torch.randn(2, predictor.mask.in_channels, 16, 16)
    mask, occlusion = predictor.heads(prediction)
    use_fast_paths(predictor)
    merge_heads(predictor)
    assert isinstance(predictor, FastPixelwiseFlowPredictor)
    assert predictor.merged_heads.out_channels == mask.shape[1] + 1
    merged_mask, merged_occlusion = predictor.heads(prediction)
    assert (merged_mask - mask).abs().max() <= 1e-5 and (merged_occlusion - occlusion).abs().max() <= 1e-5


def test_inference_warps_each_map_once(monkeypatch):
    """The deepest skip and the source image are each blended twice in a forward: warped once."""
    import modules.optimize as optimize
    calls = []

    def record(x, grid):
        calls.append((x.data_ptr(), tuple(x.shape), round(float(grid.double().sum()), 6)))

    grid_sample, gather_warp = F.grid_sample, optimize.gather_warp
    monkeypatch.setattr(F, "grid_sample", lambda x, grid, **kw: record(x, grid) or grid_sample(x, grid, **kw))
    monkeypatch.setattr(optimize, "gather_warp", lambda x, grid: record(x, grid) or gather_warp(x, grid))
    models = build()
    source, driving = images(1, 0), images(2, 1)
    animator = Animator(source, models["generator"], models["region_predictor"], mode="standard")
    calls.clear()
    out = animator(driving)
    assert len(calls) == len(set(calls)) >= len(animator.source_features) + 1, calls
    assert {"deformed", "prediction"} <= set(out)
