"""ONNX graphs of the networks animation runs, and an ONNX Runtime (CPU) runner with the calls animation makes.

Four graphs, each with a dynamic batch axis where frames go (opset ``OPSET``):

- ``region_predictor``: image (B, C, H, W) -> the region params (``shift``, ``heatmap``, and ``covar`` /
  ``affine`` unless keypoints only);
- ``encoder``: the source image (B, C, H, W) -> the generator's source features, run once per video;
- ``generator``: the per-frame part of the generator. The source image, its features and its region params come
  with batch 1 (one source per video); the driving region params and the background transform (B, 3, 3) with
  batch B. Returns ``prediction``, ``deformed``, ``optical_flow`` and, when estimated, ``occlusion_map``;
- ``avd_network``: the source's region params (batch 1) and the driving ones (batch B) -> ``shift``, ``affine``,
  ``covar``.

The generator is exported in its fast form (``modules.optimize.optimize_for_inference``, plain layout, no
Winograd). While the forward is traced, 2x2 inverses and SVDs take their closed forms (``modules.util.exporting``),
the SVD with LAPACK's signs, so the graphs compute what the torch path computes. :class:`OnnxNetworks` loads a folder
of graphs and offers ``region_predictor(image)``, ``generator(source, driving_params, source_params, bg_params,
source_features=...)``, ``generator.encode(source)`` and ``avd_network(source_params, driving_params)`` with
numpy or torch tensors in and the same kind out: ``animate.Animator(..., optimize=False)`` runs on them as they
are. :func:`cached_export` reuses an export made before for the same config, checkpoint and frame size, once
:func:`check_export` finds it whole (the manifest lists each graph's SHA-256); a damaged one is exported again.
"""
import hashlib
import importlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from checkpoint import CheckpointError
from config import load_config
from inference import load_networks
from media import check_outputs, clean_stale_temporaries, temporary_name
from modules.optimize import optimize_for_inference

OPSET = 18
FORMAT = 2  # bump when the graphs' inputs or outputs change: cached exports of another format are not reused
MANIFEST = "manifest.json"
REGION_KEYS = ("shift", "heatmap", "covar", "affine")  # what the region predictor's graph returns, when it has it
AVD_KEYS = ("shift", "affine", "covar")
GENERATOR_OUTPUTS = ("prediction", "deformed", "optical_flow", "occlusion_map")
GRAPH_NAMES = ("region_predictor", "encoder", "generator", "avd_network")
EXPORT_BATCH = 2  # the example batch traced: a batch of 1 would be taken for a constant


class OnnxBackendError(RuntimeError):
    """The ONNX backend cannot run here (a package missing, graphs of another format); the message says what to do."""


def _require(name):
    """Import an optional package of requirements-onnx.txt, or say how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise OnnxBackendError(f"the ONNX backend needs the package {name}: pip install -r requirements-onnx.txt"
                               ) from None


class RegionPredictorGraph(nn.Module):
    """The region predictor with its dict flattened to a tuple of ``keys``."""

    def __init__(self, region_predictor, keys):
        super().__init__()
        self.region_predictor, self.keys = region_predictor, keys

    def forward(self, image):
        params = self.region_predictor(image)
        return tuple(params[key] for key in self.keys)


class EncoderGraph(nn.Module):
    """The generator's source encoder: (B, C, H, W) -> its feature maps, [first, down_1, ..., down_n]."""

    def __init__(self, generator):
        super().__init__()
        self.generator = generator

    def forward(self, source_image):
        return tuple(self.generator.encode(source_image))


class GeneratorGraph(nn.Module):
    """The generator's per-frame part over one source's features; region params as flat tensors, in ``keys``."""

    def __init__(self, generator, num_features, keys):
        super().__init__()
        self.generator, self.num_features, self.keys = generator, num_features, keys

    def forward(self, source_image, *inputs):
        n, k = self.num_features, len(self.keys)
        features, driving, source, bg_params = inputs[:n], inputs[n:n + k], inputs[n + k:n + 2 * k], inputs[-1]
        B = bg_params.shape[0]
        source_params = {key: value.expand(B, *value.shape[1:]) for key, value in zip(self.keys, source)}
        out = self.generator(source_image.expand(B, *source_image.shape[1:]), dict(zip(self.keys, driving)),
                             source_params, bg_params, source_features=list(features))
        return tuple(out[key] for key in GENERATOR_OUTPUTS if key in out)


class AVDGraph(nn.Module):
    """The AVD network: the source's (batch 1) and the driving (batch B) shifts and affines -> ``AVD_KEYS``."""

    def __init__(self, avd_network):
        super().__init__()
        self.avd_network = avd_network

    def forward(self, source_shift, source_affine, driving_shift, driving_affine):
        B = driving_shift.shape[0]
        source = {"shift": source_shift.expand(B, -1, -1), "affine": source_affine.expand(B, -1, -1, -1)}
        out = self.avd_network(source, {"shift": driving_shift, "affine": driving_affine})
        return tuple(out[key] for key in AVD_KEYS)


def _export(module, inputs, names, outputs, batched, path):
    """Write ``module`` called on ``inputs`` as an ONNX graph; inputs named in ``batched`` get a dynamic axis 0.
    A forward of the form ``forward(first, *rest)`` (the generator's) has its dynamic shapes nested so."""
    batch = torch.export.Dim("batch", min=1)
    dynamic = tuple({0: batch} if name in batched else None for name in names)
    if isinstance(module, GeneratorGraph):
        dynamic = (dynamic[0], dynamic[1:])
    _require("onnx"), _require("onnxscript")  # what torch.onnx's exporter imports
    with torch.no_grad(), warnings.catch_warnings():
        # Every batched input shares the one batch axis, which the exporter reports once per extra input.
        warnings.filterwarnings("ignore", message=".*shares the same shape constraints with another axis")
        torch.onnx.export(module.eval(), tuple(inputs), str(path), dynamo=True, opset_version=OPSET,
                          input_names=list(names), output_names=list(outputs), dynamic_shapes=dynamic,
                          external_data=False, verbose=False, verify=False)


def export_networks(models, out_dir, frame_shape):
    """Write the graphs of ``models`` (eval-mode networks as ``modules.build.build_models`` names them; the
    AVD network may be absent) for frames of ``frame_shape`` (H, W) to ``out_dir``, with a ``manifest.json``
    naming each graph's inputs and outputs. Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    H, W = frame_shape
    # The generator's fast form (modules/optimize.py: batch norms folded, up-sampling and 3x3 convolution as one
    # transposed convolution): the same numbers, 2.25x fewer multiply-adds in the decoder, for ONNX Runtime too.
    generator = optimize_for_inference(models["generator"], channels_last=False)
    region_predictor = models["region_predictor"]
    channels = generator.num_channels
    frames = torch.rand(EXPORT_BATCH, channels, H, W, generator=torch.Generator().manual_seed(0))  # (B, C, H, W)
    source = frames[:1]  # (1, C, H, W)
    manifest = {"format": FORMAT, "opset": OPSET, "frame_shape": [H, W], "graphs": {}}

    def write(name, module, inputs, input_names, output_names, batched):
        _export(module, inputs, input_names, output_names, batched, out_dir / f"{name}.onnx")
        manifest["graphs"][name] = {"inputs": list(input_names), "outputs": list(output_names)}

    with torch.no_grad():
        params = region_predictor(frames)
        region_keys = tuple(key for key in REGION_KEYS if key in params)
        write("region_predictor", RegionPredictorGraph(region_predictor, region_keys), [frames], ["image"],
              region_keys, {"image"})

        features = generator.encode(source)
        feature_names = [f"feature{i}" for i in range(len(features))]
        write("encoder", EncoderGraph(generator), [frames], ["source_image"], feature_names, {"source_image"})

        flow = generator.pixelwise_flow_predictor
        keys = () if flow is None else tuple(
            key for key in ("shift", "affine", "covar")
            if key in params and (key != "covar" or flow.use_covar_heatmap))
        driving = [params[key] for key in keys]
        source_params = [params[key][:1] for key in keys]
        bg_params = torch.eye(3).repeat(EXPORT_BATCH, 1, 1)  # (B, 3, 3)
        graph = GeneratorGraph(generator, len(features), keys)
        outputs = ["prediction"] if flow is None else \
            ["prediction", "deformed", "optical_flow"] + (["occlusion_map"] if flow.occlusion is not None else [])
        input_names = (["source_image"] + feature_names + [f"driving_{k}" for k in keys]
                       + [f"source_{k}" for k in keys] + ["bg_params"])
        write("generator", graph, [source, *features, *driving, *source_params, bg_params], input_names, outputs,
              {f"driving_{k}" for k in keys} | {"bg_params"})

        if models.get("avd_network") is not None and "affine" in params:
            inputs = [params["shift"][:1], params["affine"][:1], params["shift"], params["affine"]]
            write("avd_network", AVDGraph(models["avd_network"]), inputs,
                  ["source_shift", "source_affine", "driving_shift", "driving_affine"], AVD_KEYS,
                  {"driving_shift", "driving_affine"})
    manifest["files"] = {f"{name}.onnx": _file_digest(out_dir / f"{name}.onnx") for name in manifest["graphs"]}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return out_dir


def export_checkpoint(config_path, checkpoint_path, out_dir, frame_shape):
    """Export the graphs of a config and checkpoint to ``out_dir``, atomically: they are written to a folder beside
    it, then moved in one by one, manifest last (files of other names already in ``out_dir`` stay). The files it
    writes may not be the config or the checkpoint it reads."""
    out_dir = Path(out_dir)
    written = {name: out_dir / name for name in (*(f"{n}.onnx" for n in GRAPH_NAMES), MANIFEST)}
    check_outputs(written, {"config": config_path, "checkpoint": checkpoint_path})
    if out_dir.exists() and not out_dir.is_dir():  # else found only after the export, as "[Errno 17] File exists"
        raise OnnxBackendError(f"{out_dir} is a file: give a folder for the graphs (it is made when missing)")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as error:
        raise OnnxBackendError(f"{out_dir}: cannot write in {out_dir.parent}: {error.strerror or error}") from None
    models = load_networks(config_path, checkpoint_path, "cpu")
    clean_stale_temporaries(out_dir)
    scratch = temporary_name(out_dir)
    scratch.mkdir()
    try:
        export_networks(models, scratch, frame_shape)
        out_dir.mkdir(exist_ok=True)
        for path in sorted(scratch.glob("*.onnx")) + [scratch / MANIFEST]:
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out_dir


def _file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_key(config_path, checkpoint_path, frame_shape):
    """What an export depends on, hashed: the resolved model config, the checkpoint's bytes, the frame size, the
    graph format and the torch version that traced it."""
    model_params = load_config(config_path)["model_params"]
    if not Path(checkpoint_path).is_file():
        raise CheckpointError(f"{checkpoint_path}: checkpoint file not found")
    key = json.dumps({"model_params": model_params, "checkpoint": _file_digest(checkpoint_path),
                      "frame_shape": list(frame_shape), "format": FORMAT, "opset": OPSET,
                      "torch": torch.__version__}, sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def default_cache_dir():
    """``$MRAA_CACHE_DIR/onnx``, else ``~/.cache/mraa/onnx``."""
    root = os.environ.get("MRAA_CACHE_DIR") or Path.home() / ".cache" / "mraa"
    return Path(root) / "onnx"


def check_export(folder):
    """None when ``folder`` holds a whole export of this code's format, unchanged since it was written; else why
    not, as a phrase."""
    manifest_path = Path(folder) / MANIFEST
    if not manifest_path.is_file():
        return f"{MANIFEST} is missing"
    try:
        manifest = json.loads(manifest_path.read_text())
        graphs, files = manifest["graphs"], manifest.get("files")
        if not isinstance(graphs, dict):
            raise TypeError(graphs)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):  # nested thousands deep
        return f"{MANIFEST} is not a manifest (damaged)"
    if manifest.get("format") != FORMAT:
        return f"its graphs are of format {manifest.get('format')}; this code reads format {FORMAT}"
    if not isinstance(files, dict) or set(files) != {f"{name}.onnx" for name in graphs}:
        return f"{MANIFEST} lists no hashes of its graphs (an export by an older version)"
    for name, digest in files.items():
        path = Path(folder) / name
        if not path.is_file():
            return f"{name} is missing"
        if _file_digest(path) != digest:
            return f"{name} has changed since it was exported (damaged or truncated)"
    return None


def _discard(path):
    """Remove a damaged export (a folder, or a file where one should be) by renaming it aside first, so that no
    other process sees it half removed."""
    aside = temporary_name(path)
    os.replace(path, aside)
    shutil.rmtree(aside, ignore_errors=True) if aside.is_dir() else aside.unlink(missing_ok=True)


def cached_export(config_path, checkpoint_path, frame_shape, cache_dir=None, notify=None):
    """The folder of the graphs for a config, checkpoint and frame size (H, W): exported the first time, reused
    after (the folder appears whole or not at all), and exported again, with a note, when it is damaged.
    Scratch folders of exports that were killed are removed. Returns (folder, whether it was exported now)."""
    notify = notify or (lambda message: None)
    folder = Path(cache_dir or default_cache_dir()) / export_key(config_path, checkpoint_path, frame_shape)
    clean_stale_temporaries(folder)
    if folder.exists():
        problem = check_export(folder) if folder.is_dir() else "it is not a folder"
        if problem is None:
            return folder, False
        notify(f"the cached ONNX export {folder} cannot be used ({problem}); exporting the networks again "
               f"(about 25 s)")
        _discard(folder)
    else:
        notify(f"exporting the networks for ONNX Runtime (once per model and frame size, about 25 s) into "
               f"{folder.parent}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = temporary_name(folder)
    scratch.mkdir()
    try:
        export_networks(load_networks(config_path, checkpoint_path, "cpu"), scratch, frame_shape)
        try:
            os.replace(scratch, folder)
        except OSError:  # another process exported it meanwhile
            if check_export(folder) is not None:
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder, True


class _Graph:
    """One ONNX Runtime session: call it with tensors in the manifest's input order, get a dict of outputs."""

    def __init__(self, path, names, threads=None):
        onnxruntime = _require("onnxruntime")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime's own exception types (InvalidProtobuf, NoSuchFile, Fail)
            raise OnnxBackendError(f"{path}: ONNX Runtime cannot load this graph ({type(error).__name__}): "
                                   f"export it again (tools/export_onnx.py)") from None
        self.inputs, self.outputs = names["inputs"], names["outputs"]

    def __call__(self, *tensors):
        as_torch = any(torch.is_tensor(t) for t in tensors)
        feed = {name: _to_numpy(t) for name, t in zip(self.inputs, tensors)}
        results = self.session.run(self.outputs, feed)
        return {name: torch.from_numpy(r) if as_torch else r for name, r in zip(self.outputs, results)}


def _to_numpy(tensor):
    """A C-contiguous float32 numpy array of a torch tensor (any layout, on the CPU) or of an array."""
    if torch.is_tensor(tensor):
        tensor = tensor.detach().cpu().float().contiguous().numpy()
    return np.ascontiguousarray(tensor, dtype=np.float32)


def _one_source(tensor, what):
    """The batch-1 form of a source input: given as batch 1, or as one source repeated along the batch (as
    ``animate.Animator`` expands it); the graphs take one source per call."""
    first = tensor[:1]
    batch_stride = tensor.stride(0) if torch.is_tensor(tensor) else tensor.strides[0]
    if tensor.shape[0] == 1 or batch_stride == 0:
        return first  # batch 1, or a view of one source repeated
    same = torch.equal(tensor, first.expand_as(tensor)) if torch.is_tensor(tensor) else \
        np.array_equal(tensor, np.broadcast_to(first, tensor.shape))
    if not same:
        raise ValueError(f"the ONNX generator takes one source per call: {what} differs along the batch")
    return first


class RegionPredictorRunner:
    """``region_predictor(image)`` (B, C, H, W) -> region params dict."""

    def __init__(self, graph):
        self.graph = graph

    def __call__(self, image):
        return self.graph(image)


class GeneratorRunner:
    """``generator(source_image, driving_params, source_params, bg_params=None, source_features=None)`` and
    ``generator.encode(source_image)``, as :class:`modules.generator.Generator` has them."""

    def __init__(self, encoder, graph, num_features, keys):
        self.encoder, self.graph, self.num_features, self.keys = encoder, graph, num_features, keys

    def encode(self, source_image):
        """(B, C, H, W) -> the source's feature maps, a list."""
        return list(self.encoder(source_image).values())

    def __call__(self, source_image, driving_region_params, source_region_params, bg_params=None,
                 source_features=None):
        B = driving_region_params["shift"].shape[0]
        source_image = _one_source(source_image, "the source image")
        if source_features is None:
            source_features = self.encode(source_image)
        features = [_one_source(f, "the source features") for f in source_features]
        if bg_params is None:  # the identity: the same numbers as no background motion
            bg_params = np.broadcast_to(np.eye(3, dtype=np.float32), (B, 3, 3))
            if torch.is_tensor(source_image):
                bg_params = torch.from_numpy(bg_params.copy())
        driving = [driving_region_params[key] for key in self.keys]
        source = [_one_source(source_region_params[key], f"the source's {key}") for key in self.keys]
        return self.graph(source_image, *features, *driving, *source, bg_params)


class AVDRunner:
    """``avd_network(source_params, driving_params)`` -> ``shift``, ``affine``, ``covar``."""

    def __init__(self, graph):
        self.graph = graph

    def __call__(self, source_region_params, driving_region_params):
        return self.graph(_one_source(source_region_params["shift"], "the source's shift"),
                          _one_source(source_region_params["affine"], "the source's affine"),
                          driving_region_params["shift"], driving_region_params["affine"])


class OnnxNetworks:
    """The graphs of a folder made by :func:`export_networks`, run by ONNX Runtime on the CPU.

    Attributes ``region_predictor``, ``generator`` (with ``encode``) and ``avd_network`` (None when the
    checkpoint had none) are called as the torch networks are, with numpy arrays or CPU torch tensors.
    """

    def __init__(self, folder, threads=None, checked=False):
        folder = Path(folder)
        problem = None if checked else check_export(folder)
        if problem:
            raise OnnxBackendError(f"{folder}: cannot use these graphs: {problem}; export them again: python "
                                   f"tools/export_onnx.py --config CONFIG --checkpoint CHECKPOINT --out {folder}")
        manifest = json.loads((folder / MANIFEST).read_text())
        self.frame_shape = tuple(manifest["frame_shape"])
        graphs = {name: _Graph(folder / f"{name}.onnx", names, threads) for name, names in manifest["graphs"].items()}
        inputs = manifest["graphs"]["generator"]["inputs"]
        keys = tuple(name[len("driving_"):] for name in inputs if name.startswith("driving_"))
        num_features = sum(name.startswith("feature") for name in inputs)
        self.region_predictor = RegionPredictorRunner(graphs["region_predictor"])
        self.generator = GeneratorRunner(graphs["encoder"], graphs["generator"], num_features, keys)
        self.avd_network = AVDRunner(graphs["avd_network"]) if "avd_network" in graphs else None

    @classmethod
    def from_checkpoint(cls, config_path, checkpoint_path, frame_shape, cache_dir=None, threads=None, notify=None):
        """The networks of a config and checkpoint for frames of ``frame_shape`` (H, W), exported into
        ``cache_dir`` the first time (see :func:`cached_export`)."""
        folder, _ = cached_export(config_path, checkpoint_path, frame_shape, cache_dir, notify)
        return cls(folder, threads, checked=True)


def load_onnx_checkpoints(config_path, checkpoint_path, frame_shape, cache_dir=None, threads=None, notify=None):
    """``demo.load_checkpoints`` for ONNX Runtime: (generator, region_predictor, avd_network or None) for frames of
    ``frame_shape`` (H, W), exported the first time. Animate with them through ``animate.Animator(...,
    optimize=False)`` in float32, on the CPU."""
    networks = OnnxNetworks.from_checkpoint(config_path, checkpoint_path, frame_shape, cache_dir, threads, notify)
    return networks.generator, networks.region_predictor, networks.avd_network
