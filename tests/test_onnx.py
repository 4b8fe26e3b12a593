"""The ONNX graphs (onnx_backend.py) against the torch path: a tiny model exported and run, the cache, the CLI,
and the three parity cases (../shared/parity) in every animation mode, within 1e-4."""
import importlib.util
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

if not all(importlib.util.find_spec(name) for name in ("onnxruntime", "onnxscript")):  # found, not imported: 1 s
    pytest.skip("the ONNX backend's requirements (requirements-onnx.txt) are absent", allow_module_level=True)

import onnx_backend  # noqa: E402
from animate import Animator, get_animation_region_params  # noqa: E402
from conftest import REPO_ROOT, parity_case_dir  # noqa: E402
from inference import load_networks  # noqa: E402
from tiny_puppets import one_thread, write_tiny_model  # noqa: E402, F401 (a fixture)
from tools import export_onnx  # noqa: E402

from tolerances import TOLERANCE, reference_tolerance  # noqa: E402
SIZE = (32, 32)  # tests/data/tiny.yaml's frames
# Each export traces the networks for tens of seconds: the whole module is in the slow tier.
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def smooth_images(batch, seed, size=SIZE):
    """Random images without pixel noise: on noise, a flow difference of 1e-6 (float rounding) would move
    warped pixels by more than the tolerance."""
    coarse = torch.rand(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)  # (B, 3, H, W)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny model (tests/data/tiny.yaml) as files, exported through the cache: (config, checkpoint,
    cache folder, the torch networks, the ONNX networks)."""
    root = tmp_path_factory.mktemp("onnx")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    config, checkpoint = write_tiny_model(root / "model", root / "data")
    folder, exported = onnx_backend.cached_export(config, checkpoint, SIZE, cache_dir=root / "cache")
    torch.set_num_threads(before)
    assert exported
    return config, checkpoint, root / "cache", load_networks(config, checkpoint, "cpu"), \
        onnx_backend.OnnxNetworks(folder, threads=1)


def assert_close(ours, expected, what, tolerance=TOLERANCE):
    error = (torch.as_tensor(ours) - torch.as_tensor(expected)).abs().max().item()
    assert error <= tolerance, f"{what}: max abs error {error:.3g}"


@pytest.mark.parametrize("batch", [1, 3])
@torch.no_grad()
def test_tiny_graphs_match_torch_at_any_batch(tiny, batch):
    *_, models, onnx = tiny
    source, driving = smooth_images(1, 0), smooth_images(batch, 1)
    expected = models["region_predictor"](driving)
    ours = onnx.region_predictor(driving)
    assert set(ours) == {"shift", "heatmap", "covar", "affine"}
    for key in ours:
        assert_close(ours[key], expected[key], f"region_predictor.{key}")
    source_params = models["region_predictor"](source)
    bg_params = torch.eye(3).repeat(batch, 1, 1) + 0.01 * torch.randn(batch, 3, 3)  # (B, 3, 3)
    repeated = {key: value.expand(batch, *value.shape[1:]) for key, value in source_params.items()}
    expected = models["generator"](source.expand(batch, -1, -1, -1), expected, repeated, bg_params)
    ours = onnx.generator(source, models["region_predictor"](driving), source_params, bg_params)
    assert set(ours) == {"prediction", "deformed", "optical_flow", "occlusion_map"}
    for key, value in ours.items():
        assert torch.is_tensor(value) and value.shape == expected[key].shape
        assert_close(value, expected[key], f"generator.{key}")
    avd = onnx.avd_network(source_params, models["region_predictor"](driving))
    for key, value in models["avd_network"](repeated, models["region_predictor"](driving)).items():
        assert_close(avd[key], value, f"avd_network.{key}")


def test_numpy_in_numpy_out(tiny):
    *_, models, onnx = tiny
    image = smooth_images(2, 3)
    ours = onnx.region_predictor(image.numpy())
    assert isinstance(ours["shift"], np.ndarray) and ours["shift"].dtype == np.float32
    with torch.no_grad():
        assert_close(ours["shift"], models["region_predictor"](image)["shift"], "shift")


@pytest.mark.parametrize("mode", ["standard", "relative", "avd"])
def test_animator_runs_on_the_onnx_networks(tiny, mode):
    """What ``demo.py --backend onnxruntime`` runs: the Animator, unoptimised, over the runners."""
    *_, models, onnx = tiny
    source, driving = smooth_images(1, 0), smooth_images(3, 1)
    torch_path = Animator(source, models["generator"], models["region_predictor"], models["avd_network"],
                          mode=mode, optimize=False)
    onnx_path = Animator(source, onnx.generator, onnx.region_predictor, onnx.avd_network, mode=mode,
                         optimize=False)
    expected, ours = torch_path(driving), onnx_path(driving)
    for key in ("prediction", "deformed", "occlusion_map"):
        assert_close(ours[key], expected[key], f"{mode}: {key}")


def test_the_generator_takes_one_source_per_call(tiny):
    *_, models, onnx = tiny
    sources = smooth_images(2, 0)  # two different sources
    with torch.no_grad():
        params = models["region_predictor"](sources)
    with pytest.raises(ValueError, match="one source per call"):
        onnx.generator(sources, params, params)


def test_the_cache_reuses_an_export_and_keys_on_what_it_depends_on(tiny, monkeypatch, tmp_path):
    config, checkpoint, cache, *_ = tiny
    monkeypatch.setattr(onnx_backend, "export_networks", lambda *a: pytest.fail("exported again"))
    folder, exported = onnx_backend.cached_export(config, checkpoint, SIZE, cache_dir=cache)
    assert not exported and (folder / "manifest.json").is_file()
    key = onnx_backend.export_key(config, checkpoint, SIZE)
    assert onnx_backend.export_key(config, checkpoint, (64, 64)) != key
    changed = tmp_path / "changed.pth"
    changed.write_bytes(checkpoint.read_bytes() + b"\0")
    assert onnx_backend.export_key(config, changed, SIZE) != key
    assert not list(cache.glob(".*")), "no scratch folder left behind"


def test_exported_graph_format_and_dynamic_batch(tiny):
    import onnx
    config, checkpoint, cache, *_ = tiny
    folder, _ = onnx_backend.cached_export(config, checkpoint, SIZE, cache_dir=cache)
    for name in ("region_predictor", "encoder", "generator", "avd_network"):
        model = onnx.load(str(folder / f"{name}.onnx"))
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        ops = {node.op_type for node in model.graph.node}
        assert not ops & {"Inverse", "SVD"}, f"{name}: {ops & {'Inverse', 'SVD'}}"
        batched = [i for i in model.graph.input if i.type.tensor_type.shape.dim[0].dim_param]
        assert batched, f"{name} has no dynamic batch axis"


@pytest.mark.parametrize("argv, message", [
    (["--img_shape", "64,x"], "--img_shape '64,x': expected"),
    (["--img_shape", "63,64"], "expected the frame height and width"),
    (["--checkpoint", "missing.pth"], "missing.pth: checkpoint file not found"),
    (["--config", "missing.yaml"], "missing.yaml: config file not found"),
])
def test_cli_bad_input_is_one_error_line(tiny, tmp_path, capsys, argv, message):
    config, checkpoint, *_ = tiny
    args = {"--config": str(config), "--checkpoint": str(checkpoint), "--out": str(tmp_path / "out"),
            "--img_shape": "32,32"}
    args.update(dict(zip(argv[::2], argv[1::2])))
    assert export_onnx.main([x for pair in args.items() for x in pair]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["the checkpoint", "a file", "under a file"])
def test_cli_out_that_is_a_file_is_one_line_before_the_export(tiny, tmp_path, capsys, monkeypatch, case):
    """--out CHECKPOINT exported for half a minute, then said "[Errno 17] File exists"."""
    config, checkpoint, *_ = tiny
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    out = {"the checkpoint": checkpoint, "a file": mine, "under a file": mine / "graphs"}[case]
    kept = out.read_bytes() if case == "the checkpoint" else None
    monkeypatch.setattr(onnx_backend, "load_networks", lambda *args: pytest.fail("exported before the checks"))
    assert export_onnx.main(["--config", str(config), "--checkpoint", str(checkpoint), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}") and err.count("\n") == 1 and "Errno" not in err, err
    assert mine.read_text() == "mine" and (kept is None or checkpoint.read_bytes() == kept)


def test_cli_writes_the_graphs_and_keeps_other_files(tiny, tmp_path, capsys):
    config, checkpoint, *_ = tiny
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert export_onnx.main(["--config", str(config), "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["avd_network.onnx", "encoder.onnx", "generator.onnx", "manifest.json", "notes.txt",
                     "region_predictor.onnx"]
    assert (out / "notes.txt").read_text() == "mine" and not list(tmp_path.glob(".out.*"))
    assert onnx_backend.OnnxNetworks(out).frame_shape == SIZE  # the config's frame_shape


# The parity cases: ONNX Runtime reproduces the reference's arrays as the torch path does.

CASES = {"mraa": (64, 64), "fomm_like": (64, 64), "keypoints_only": (48, 64)}


@pytest.fixture(scope="module")
def parity_exports(tmp_path_factory):
    return tmp_path_factory.mktemp("parity_onnx")


def parity_case(cache, name):
    folder = parity_case_dir(name)
    config, checkpoint = folder / "config.yaml", folder / "checkpoint.pth"
    graphs, _ = onnx_backend.cached_export(config, checkpoint, CASES[name], cache_dir=cache)
    return onnx_backend.OnnxNetworks(graphs, threads=1), dict(np.load(folder / "expected.npz"))


@pytest.mark.parametrize("name", list(CASES))
def test_parity_forward(name, parity_exports):
    onnx, expected = parity_case(parity_exports, name)
    source, driving = expected["source"], expected["driving"]
    source_params, driving_params = onnx.region_predictor(source), onnx.region_predictor(driving)
    for prefix, params in (("source_region_params", source_params), ("driving_region_params", driving_params)):
        assert set(params) == {k for k in ("shift", "heatmap", "covar", "affine") if f"{prefix}.{k}" in expected}
        for key, value in params.items():
            assert_close(value, expected[f"{prefix}.{key}"], f"{name}: {prefix}.{key}")
    generated = onnx.generator(source, driving_params, source_params, expected["bg_params"])
    for key in ("prediction", "deformed", "occlusion_map"):
        if f"generator.{key}" in expected:
            assert_close(generated[key], expected[f"generator.{key}"], f"{name}: generator.{key}")
    if "flow.optical_flow" in expected:
        assert_close(generated["optical_flow"], expected["flow.optical_flow"], f"{name}: optical_flow")
    if "avd.shift" in expected:
        avd = onnx.avd_network(source_params, driving_params)
        for key in ("shift", "affine", "covar"):
            assert_close(avd[key], expected[f"avd.{key}"], f"{name}: avd.{key}")


@pytest.mark.parametrize("name", ["mraa", "fomm_like"])  # keypoints_only has no animation arrays
@pytest.mark.parametrize("mode", ["standard", "relative", "avd"])
def test_parity_animation(name, mode, parity_exports):
    """The reference demo's loop, one frame at a time, on the ONNX networks; and the Animator on them, batched."""
    onnx, expected = parity_case(parity_exports, name)
    source, driving = torch.from_numpy(expected["source"]), torch.from_numpy(expected["driving"])
    source_params, initial = onnx.region_predictor(source), onnx.region_predictor(driving[:1])
    frames = []
    for t in range(driving.shape[0]):
        params = get_animation_region_params(source_params, onnx.region_predictor(driving[t:t + 1]), initial,
                                             mode=mode, avd_network=onnx.avd_network)
        frames.append(onnx.generator(source, params, source_params)["prediction"])
    assert_close(torch.cat(frames), expected[f"animate.{mode}.prediction"], f"{name} {mode}: frame by frame",
                 reference_tolerance(mode))
    animator = Animator(source, onnx.generator, onnx.region_predictor, onnx.avd_network, mode=mode,
                        optimize=False)
    assert_close(animator(driving)["prediction"], expected[f"animate.{mode}.prediction"], f"{name} {mode}",
                 reference_tolerance(mode))


def test_a_missing_package_is_named_with_the_fix(monkeypatch):
    real_import = onnx_backend.importlib.import_module

    def import_module(name):
        if name == "onnxruntime":
            raise ImportError(f"No module named {name!r}")
        return real_import(name)

    monkeypatch.setattr(onnx_backend.importlib, "import_module", import_module)
    with pytest.raises(onnx_backend.OnnxBackendError, match="onnxruntime: pip install -r requirements-onnx.txt"):
        onnx_backend._require("onnxruntime")


def test_load_onnx_checkpoints_gives_the_demo_triple_from_the_cache(tiny, monkeypatch):
    config, checkpoint, cache, models, _ = tiny
    monkeypatch.setattr(onnx_backend, "export_networks", lambda *a: pytest.fail("exported again"))
    generator, region_predictor, avd_network = onnx_backend.load_onnx_checkpoints(config, checkpoint, SIZE,
                                                                                  cache_dir=cache, threads=1)
    image = smooth_images(1, 5)
    features = generator.encode(image)
    with torch.no_grad():
        expected = models["generator"].encode(image)
    assert len(features) == len(expected) and avd_network is not None
    for ours, theirs in zip(features, expected):
        assert_close(ours, theirs, "source features")


def test_the_frame_size_of_an_authors_config_is_the_demos(capsys):
    """config/vox256.yaml says frame_shape: null, as the authors' files do: 384,384 with a note, as in the demo."""
    import argparse

    from config import ConfigError
    args = argparse.Namespace(config=str(REPO_ROOT / "config" / "vox256.yaml"), img_shape=None)
    assert export_onnx.frame_shape(args) == (384, 384)
    assert "frame_shape null" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="multiples of 128"):
        export_onnx.frame_shape(argparse.Namespace(config=args.config, img_shape="50,70"))


@pytest.mark.parametrize("mode", ["avd", "relative"])
def test_the_demo_animates_with_onnx_runtime_from_the_cache(tiny, tmp_path, monkeypatch, capsys, mode):
    """``demo.py --backend onnxruntime`` reuses the export in the cache and writes as many frames as it reads."""
    import demo
    from media import VideoWriter, video_info, write_image
    config, checkpoint, cache, *_ = tiny
    monkeypatch.setattr(onnx_backend, "default_cache_dir", lambda: cache)
    monkeypatch.setattr(onnx_backend, "export_networks", lambda *a: pytest.fail("exported again"))
    source, driving, result = tmp_path / "source.png", tmp_path / "driving.mp4", tmp_path / "result.mp4"
    frames = (smooth_images(6, seed=1).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()  # (T, H, W, 3)
    write_image(source, frames[0])
    with VideoWriter(driving, 10) as writer:
        writer.write(frames)
    code = demo.main(["--config", str(config), "--checkpoint", str(checkpoint), "--source_image", str(source),
                      "--driving_video", str(driving), "--result_video", str(result), "--backend", "onnxruntime",
                      "--mode", mode, "--find_best_frame", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert video_info(result).num_frames == 6


# The cache checks itself: a damaged export is exported again with one note, never an onnxruntime traceback.

def _flip_a_byte(folder):
    path = folder / "generator.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "flipped byte": _flip_a_byte,
    "truncated": lambda f: (f / "generator.onnx").write_bytes((f / "generator.onnx").read_bytes()[:1000]),
    "emptied": lambda f: (f / "encoder.onnx").write_bytes(b""),
    "graph deleted": lambda f: (f / "avd_network.onnx").unlink(),
    "format 1": lambda f: (f / "manifest.json").write_text(
        json.dumps({**json.loads((f / "manifest.json").read_text()), "format": 1})),
    "manifest corrupt": lambda f: (f / "manifest.json").write_text('{"format": 2, "graphs": '),
    "manifest deleted": lambda f: (f / "manifest.json").unlink(),
    "manifest graphs a number": lambda f: (f / "manifest.json").write_text('{"format": 2, "graphs": 5, "files": {}}'),
    "manifest nested deep": lambda f: (f / "manifest.json").write_text("[" * 100_000),  # was RecursionError
    "no hashes (older export)": lambda f: (f / "manifest.json").write_text(
        json.dumps({k: v for k, v in json.loads((f / "manifest.json").read_text()).items() if k != "files"})),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_cached_export_is_exported_again_with_a_note(tiny, tmp_path, monkeypatch, damage):
    config, checkpoint, cache, *_ = tiny
    pristine, _ = onnx_backend.cached_export(config, checkpoint, SIZE, cache_dir=cache)
    mine = tmp_path / "cache"
    folder = mine / pristine.name
    shutil.copytree(pristine, folder)
    DAMAGE[damage](folder)
    assert onnx_backend.check_export(folder) is not None
    exports = []

    def export_again(models, out_dir, frame_shape):  # the pristine graphs, without tracing for seconds
        exports.append(out_dir)
        for path in pristine.iterdir():
            shutil.copy(path, out_dir / path.name)

    monkeypatch.setattr(onnx_backend, "export_networks", export_again)
    notes = []
    again, exported = onnx_backend.cached_export(config, checkpoint, SIZE, cache_dir=mine, notify=notes.append)
    assert exported and again == folder and len(exports) == 1 and onnx_backend.check_export(folder) is None
    assert len(notes) == 1 and "cannot be used" in notes[0] and "exporting the networks again" in notes[0]
    assert onnx_backend.OnnxNetworks(folder, threads=1).avd_network is not None
    assert sorted(p.name for p in mine.iterdir()) == [folder.name], "nothing left beside it"
    assert onnx_backend.cached_export(config, checkpoint, SIZE, cache_dir=mine) == (folder, False)


def test_the_first_export_says_so_and_a_killed_exports_scratch_is_removed(tiny, tmp_path, monkeypatch):
    config, checkpoint, cache, *_ = tiny
    pristine, _ = onnx_backend.cached_export(config, checkpoint, SIZE, cache_dir=cache)
    mine = tmp_path / "cache"
    mine.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    scratch = mine / f".{pristine.name}.{dead.pid}.0badcafe.part"  # what `kill -9` during an export leaves
    scratch.mkdir()
    (scratch / "generator.onnx").write_bytes(b"\0" * 1000)
    monkeypatch.setattr(onnx_backend, "export_networks",
                        lambda models, out, shape: [shutil.copy(p, out / p.name) for p in pristine.iterdir()])
    notes = []
    folder, exported = onnx_backend.cached_export(config, checkpoint, SIZE, cache_dir=mine, notify=notes.append)
    assert exported and not scratch.exists() and sorted(p.name for p in mine.iterdir()) == [folder.name]
    assert len(notes) == 1 and "exporting the networks for ONNX Runtime (once" in notes[0]


@pytest.mark.parametrize("damage", ["flipped byte", "format 1", "manifest corrupt"])
def test_a_damaged_export_folder_given_by_hand_is_one_line_naming_the_fix(tiny, tmp_path, damage):
    config, checkpoint, cache, *_ = tiny
    pristine, _ = onnx_backend.cached_export(config, checkpoint, SIZE, cache_dir=cache)
    folder = tmp_path / "graphs"
    shutil.copytree(pristine, folder)
    DAMAGE[damage](folder)
    with pytest.raises(onnx_backend.OnnxBackendError, match="export them again: python tools/export_onnx.py"):
        onnx_backend.OnnxNetworks(folder)


@pytest.mark.parametrize("written", ["manifest.json", "generator.onnx"])
def test_cli_refuses_to_write_over_its_config_or_checkpoint(tiny, tmp_path, capsys, written):
    config, checkpoint, *_ = tiny
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(checkpoint, out / written)
    code = export_onnx.main(["--config", str(config), "--checkpoint", str(out / written), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "is also the checkpoint" in err and err.count("\n") == 1
    assert (out / written).read_bytes() == checkpoint.read_bytes()


def test_the_demo_on_onnx_runtime_says_that_bf16_is_not_applied(tiny, tmp_path, monkeypatch, capsys):
    import demo
    from media import VideoWriter, write_image
    config, checkpoint, cache, *_ = tiny
    monkeypatch.setattr(onnx_backend, "default_cache_dir", lambda: cache)
    frames = (smooth_images(2, seed=2).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()  # (T, H, W, 3)
    write_image(tmp_path / "source.png", frames[0])
    with VideoWriter(tmp_path / "driving.mp4", 10) as writer:
        writer.write(frames)
    code = demo.main(["--config", str(config), "--checkpoint", str(checkpoint), "--source_image",
                      str(tmp_path / "source.png"), "--driving_video", str(tmp_path / "driving.mp4"), "--result_video",
                      str(tmp_path / "result.mp4"), "--backend", "onnxruntime", "--precision", "bf16", "--quiet",
                      "--mode", "relative"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "note: --backend onnxruntime runs its graphs in float32; --precision bf16 applies to the torch backend" \
        in err
