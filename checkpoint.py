"""The one place that reads and writes checkpoints, in the published format (docs/method.md §8).

A checkpoint is a dict holding the state dicts ``generator``, ``region_predictor``, ``bg_predictor``,
``avd_network``, the optimizer states ``optimizer_reconstruction`` / ``optimizer_avd``, and the epochs
``epoch_reconstruction`` / ``epoch_avd``, where present. Files written by torch 1.4 (the published ones) use the
legacy serialisation; torch reads both it and the zip format. Nothing is ever unpickled beyond tensors and
plain containers (``weights_only=True``).
"""
import os
import pickle
import re
import socket
import tempfile
import time
import zipfile
from pathlib import Path

import torch

from model_cards import where_to_get
from modules.build import MODEL_NAMES


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message says why in the user's terms."""


def _sniff(path):
    """A reason the file is plainly not a checkpoint (HTML page, git-LFS pointer, empty), or None."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "the file is empty"
    text = head.lstrip().lower()
    if text.startswith(b"version https://git-lfs"):
        return ("it is a git-LFS pointer, not the weights: fetch the real file (git lfs pull) or download it "
                "again")
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return ("it is an HTML page, not a checkpoint (a failed or redirected download): download the file "
                "again from its direct link")
    if head.startswith((b"PK\x03\x04", b"\x80")):  # a zip archive (torch >= 1.6) or a pickle (the published files)
        return None
    if b"\0" not in head and all(byte >= 32 or byte in b"\t\n\r" for byte in head):
        return f"it is a text file (it begins {head.decode('utf-8', 'replace').strip()[:40]!r}), not a checkpoint"
    return "torch writes a zip archive or a pickle, and this file is neither (another kind of file?)"


def read_checkpoint(path, map_location="cpu"):
    """Load a checkpoint file safely; raises CheckpointError with a plain reason for anything unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found{where_to_get(path)}")
    reason = _sniff(path)
    if reason:
        raise CheckpointError(f"{path}: not a checkpoint: {reason}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" in str(e).lower():  # a class or function reference: what a malicious pickle needs
            raise CheckpointError(f"{path}: the file holds Python objects other than tensors and plain "
                                  "containers; refusing to unpickle it (it could run code)") from None
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint; it is probably truncated or "
                              "another kind of file (an interrupted or failed download?)") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError, IndexError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint; it is probably truncated (an "
                              f"interrupted download or copy): {type(e).__name__}: {e}") from None
    if not isinstance(checkpoint, dict) or not any(name in checkpoint for name in MODEL_NAMES):
        found = ", ".join(map(str, list(checkpoint)[:8])) if isinstance(checkpoint, dict) else type(checkpoint)
        raise CheckpointError(f"{path}: not a checkpoint in the published format: expected the keys "
                              f"{', '.join(MODEL_NAMES)}; found {found}")
    return checkpoint


def _count(state_dict, prefix):
    indices = {k[len(prefix):].split(".")[0] for k in state_dict if k.startswith(prefix)}
    return len(indices)


def _shape(state_dict, key, dim=0):
    return tuple(state_dict[key].shape)[dim] if key in state_dict else None


def architecture_facts(name, state_dict):
    """What a network's state dict says about its config, in config terms: {description: value}."""
    sd = state_dict
    if name == "region_predictor":
        affine = ("regression (jacobian head)" if "jacobian.weight" in sd else "PCA or none")
        return {"regions": _shape(sd, "regions.weight"),
                "region_predictor_params.block_expansion": _shape(sd, "predictor.encoder.down_blocks.0.conv.weight")
                and _shape(sd, "predictor.encoder.down_blocks.0.conv.weight") // 2,
                "region_predictor_params.num_blocks": _count(sd, "predictor.encoder.down_blocks."),
                "region_predictor_params.scale_factor != 1": "down.weight" in sd,
                "region affines": affine}
    if name == "generator":
        flow = "pixelwise_flow_predictor."
        mask = _shape(sd, flow + "mask.weight")
        return {"regions": mask - 1 if mask else None,
                "generator_params.block_expansion": _shape(sd, "first.conv.weight"),
                "generator_params.num_down_blocks": _count(sd, "down_blocks."),
                "generator_params.num_bottleneck_blocks": _count(sd, "bottleneck."),
                "pixelwise_flow_predictor_params.estimate_occlusion_map": flow + "occlusion.weight" in sd,
                "pixelwise_flow_predictor_params.block_expansion":
                    _shape(sd, flow + "hourglass.encoder.down_blocks.0.conv.weight") and
                    _shape(sd, flow + "hourglass.encoder.down_blocks.0.conv.weight") // 2,
                "pixelwise_flow_predictor_params.num_blocks": _count(sd, flow + "hourglass.encoder.down_blocks."),
                "flow hourglass input channels": _shape(sd, flow + "hourglass.encoder.down_blocks.0.conv.weight", 1)}
    if name == "bg_predictor":
        outputs = _shape(sd, "fc.weight")
        return {"bg_type": {None: "zero", 2: "shift", 6: "affine", 8: "perspective"}.get(outputs, outputs),
                "bg_predictor_params.block_expansion": _shape(sd, "encoder.down_blocks.0.conv.weight") and
                _shape(sd, "encoder.down_blocks.0.conv.weight") // 2,
                "bg_predictor_params.num_blocks": _count(sd, "encoder.down_blocks.")}
    if name == "avd_network":
        inputs = _shape(sd, "id_encoder.0.weight", 1)
        return {"regions": inputs // 6 if inputs else None,
                "avd_network_params.id_bottle_size": _shape(sd, "id_encoder.9.weight"),
                "avd_network_params.pose_bottle_size": _shape(sd, "pose_encoder.9.weight")}
    return {}


def describe_mismatch(name, model, state_dict, path, config_name):
    """Why ``state_dict`` does not fit ``model``, in the config's terms when possible."""
    ours, theirs = architecture_facts(name, model.state_dict()), architecture_facts(name, state_dict)
    lines = []
    for fact, wanted in ours.items():
        found = theirs.get(fact)
        if found != wanted:
            if fact == "regions":
                lines.append(f"checkpoint has {found} regions, {config_name} asks for {wanted}")
            else:
                lines.append(f"checkpoint has {fact} = {found!r}, {config_name} asks for {wanted!r}")
    if not lines:  # Same architecture facts yet different tensors: list the raw differences.
        own = model.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)}, model {tuple(own[k].shape)}"
                  for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shapes", shapes)):
            if items:
                lines.append(f"{label}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}")
    return (f"{path}: the {name} weights do not fit the model built from {config_name}:\n  " + "\n  ".join(lines))


def load_checkpoint(path, models, optimizers=None, config_name="the config", map_location="cpu", optional=()):
    """Load the state dicts of ``models`` (name -> module) strictly, and of ``optimizers`` (key -> optimizer),
    from ``path``. Every model named must be in the file, except those named in ``optional`` (e.g. the demo's
    ``avd_network``), which are left as they are when absent: the returned dict says whether they were there.

    Returns the raw checkpoint dict (epochs and any other entries are read from it by the caller).
    """
    checkpoint = read_checkpoint(path, map_location=map_location)
    for name, model in models.items():
        if name not in checkpoint:
            if name in optional:
                continue
            if name == "avd_network":
                raise CheckpointError(f"{path}: checkpoint has no avd_network: use --mode relative or standard, "
                                      "or train AVD first (--mode train_avd)")
            raise CheckpointError(f"{path}: checkpoint has no {name} weights (it holds "
                                  f"{', '.join(k for k in checkpoint if k in MODEL_NAMES)})")
        module = getattr(model, "module", model)  # DistributedDataParallel wraps the network
        try:
            module.load_state_dict(checkpoint[name], strict=True)
        except RuntimeError:
            raise CheckpointError(describe_mismatch(name, module, checkpoint[name], path, config_name)) from None
    for key, optimizer in (optimizers or {}).items():
        if key in checkpoint:
            optimizer.load_state_dict(checkpoint[key])
    return checkpoint


def _half(state_dict):
    return {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}


def save_checkpoint(path, models, optimizers=None, half=False, **extra):
    """Write a checkpoint atomically: to a temporary file in the same folder, then renamed over ``path``.

    A crash during the write leaves any previous file at ``path`` intact. ``half`` stores floating weights
    in float16 (they load back into float32 modules unchanged in shape); ``extra`` entries (epochs, scheduler
    states, the config) are stored as they are.
    """
    path = Path(path)
    state = {}
    for name, model in models.items():
        state_dict = getattr(model, "module", model).state_dict()
        state[name] = _half(state_dict) if half else state_dict
    for key, optimizer in (optimizers or {}).items():
        state[key] = optimizer.state_dict()
    state.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.{_writer()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


# save_checkpoint's temporary files: '<name>.pth.<host>-<pid>.<random>.tmp'; files written before the writer was
# part of the name are '<name>.pth.<random>.tmp'.
_TEMPORARY = re.compile(r"^.+\.pth\.(?:(?P<host>[A-Za-z0-9-]*)-(?P<pid>\d+)\.)?[a-z0-9_]+\.tmp$")
_ORPHAN_AGE = 3600  # seconds after which a temporary file of another machine, or an unnamed writer, is stale


def _writer():
    """'<host>-<pid>' of this process, so that a later run can tell whether the writer of a temporary is alive."""
    return f"{re.sub(r'[^A-Za-z0-9-]', '', socket.gethostname())}-{os.getpid()}"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(folder):
    """Delete the temporary files in ``folder`` that a killed checkpoint write left behind (each as big as a
    checkpoint); returns their paths. Only save_checkpoint's own names are touched, and only those whose writer
    on this machine is gone, or that are over an hour old (another machine's, or from before writers were named).
    """
    host = _writer().rsplit("-", 1)[0]
    removed = []
    folder = Path(folder)
    for path in sorted(folder.glob("*.tmp")) if folder.is_dir() else ():
        match = _TEMPORARY.match(path.name)
        if match is None or not path.is_file():
            continue
        if match["pid"] is not None and match["host"] == host:
            stale = not _alive(int(match["pid"]))
        else:
            stale = time.time() - path.stat().st_mtime > _ORPHAN_AGE
        if stale:
            try:
                path.unlink()
            except FileNotFoundError:  # another run cleaned it up meanwhile
                continue
            removed.append(path)
    return removed
