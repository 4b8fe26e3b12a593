"""Checkpoint reading and writing: published format, atomic writes, and messages for every bad file."""
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import checkpoint as ckpt
from checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from config import validate_config
from modules.build import build_models
from tiny import tiny_model_params


def tiny_models(variant="mraa", **overrides):
    torch.manual_seed(0)
    return build_models(validate_config({"model_params": tiny_model_params(variant, **overrides)}))


def perturbed(models):
    with torch.no_grad():
        for model in models.values():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
    return models


def assert_same_weights(a, b):
    for name in a:
        for (k, v), (_, w) in zip(a[name].state_dict().items(), b[name].state_dict().items()):
            assert torch.equal(v, w), f"{name}.{k} differs"


@pytest.mark.parametrize("zip_format", [True, False])
def test_round_trip_in_both_serialisations(tmp_path, zip_format):
    models = perturbed(tiny_models())
    optimizer = torch.optim.Adam(models["generator"].parameters())
    state = {name: m.state_dict() for name, m in models.items()}
    state.update(optimizer_reconstruction=optimizer.state_dict(), epoch_reconstruction=7)
    path = tmp_path / "model.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    fresh = tiny_models()
    fresh_optimizer = torch.optim.Adam(fresh["generator"].parameters())
    loaded = load_checkpoint(path, fresh, {"optimizer_reconstruction": fresh_optimizer})
    assert loaded["epoch_reconstruction"] == 7
    assert_same_weights(models, fresh)


def test_save_is_loadable_and_atomic(tmp_path, monkeypatch):
    models = perturbed(tiny_models())
    path = save_checkpoint(tmp_path / "a.pth", models, epoch_reconstruction=3)
    assert read_checkpoint(path)["epoch_reconstruction"] == 3
    assert path.stat().st_mode & 0o044, "others and the group may read it, as any file the user writes"
    good = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if the process were interrupted in the middle of the write
    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, tiny_models(), epoch_reconstruction=4)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["a.pth"]  # no temporary file left behind


def test_half_precision_storage_loads_into_float32(tmp_path):
    models = perturbed(tiny_models())
    path = save_checkpoint(tmp_path / "half.pth", models, half=True)
    assert read_checkpoint(path)["generator"]["first.conv.weight"].dtype == torch.float16
    fresh = tiny_models()
    load_checkpoint(path, fresh)
    a, b = models["generator"].first.conv.weight, fresh["generator"].first.conv.weight
    assert b.dtype == torch.float32 and torch.allclose(a, b, rtol=1e-3, atol=1e-3)


def test_ddp_wrapped_models_save_plain_keys(tmp_path):
    class Wrapper(torch.nn.Module):  # stands for DistributedDataParallel: the network is under .module
        def __init__(self, module):
            super().__init__()
            self.module = module
    models = tiny_models()
    path = save_checkpoint(tmp_path / "w.pth", {"generator": Wrapper(models["generator"])})
    assert "first.conv.weight" in read_checkpoint(path)["generator"]


def test_region_count_mismatch_is_explained(tmp_path, parity_dir):
    models = tiny_models(num_regions=6)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(parity_dir / "mraa" / "checkpoint.pth", models, config_name="mine.yaml")
    assert "checkpoint has 5 regions, mine.yaml asks for 6" in str(info.value)


def test_architecture_mismatch_is_explained(tmp_path):
    path = save_checkpoint(tmp_path / "m.pth", tiny_models("mraa"))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, tiny_models("bg_perspective"), config_name="mine.yaml")
    assert "checkpoint has bg_type = 'affine', mine.yaml asks for 'perspective'" in str(info.value)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, tiny_models("regression"), config_name="mine.yaml")
    assert "region affines" in str(info.value)


def test_missing_avd_network(tmp_path):
    models = tiny_models()
    path = save_checkpoint(tmp_path / "no_avd.pth", {k: v for k, v in models.items() if k != "avd_network"})
    with pytest.raises(CheckpointError, match="checkpoint has no avd_network: use --mode relative or standard"):
        load_checkpoint(path, tiny_models())


@pytest.mark.parametrize("content,expected", [
    (b"", "the file is empty"),
    (b"<!DOCTYPE html><html><body>Sign in</body></html>", "HTML page"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n", "git-LFS pointer"),
    (b"\x00\x01 random bytes that are no checkpoint", "neither"),
    (b"model: vox256\nweights: see the README\n", "it is a text file \\(it begins 'model: vox256"),
    ("a note, written in UTF-8: \u00e9t\u00e9\n".encode(), "it is a text file"),
])
def test_files_that_are_not_checkpoints(tmp_path, content, expected):
    path = tmp_path / "vox256.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected):
        read_checkpoint(path)


@pytest.mark.parametrize("fraction", [0.5, 0.97])
def test_truncated_checkpoints(tmp_path, parity_dir, fraction):
    data = (parity_dir / "mraa" / "checkpoint.pth").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(path)


def test_refuses_to_unpickle_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"generator": Evil()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        read_checkpoint(path)


def test_other_mistakes(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint file not found$"):
        read_checkpoint(tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="not found; the authors' checkpoints .* are linked from their "
                                              "repository's README: https://github.com/snap-research/"):
        read_checkpoint(tmp_path / "vox256.pth")
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a checkpoint in the published format"):
        read_checkpoint(tmp_path / "other.pth")


def test_stale_temporaries_are_those_of_writers_gone(tmp_path):
    """A kill -9 during save_checkpoint leaves '<name>.pth.<host>-<pid>.<random>.tmp'; only files of that pattern
    whose writer is gone (or, without a writer on this machine, over an hour old) are removed."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = ckpt._writer().rsplit("-", 1)[0]
    names = {"dead": f"00000001-cpk-reconstruction.pth.{host}-{gone.pid}.k2j4_x0a.tmp",
             "alive": f"00000002-cpk-reconstruction.pth.{host}-{os.getpid()}.a8d0c2zz.tmp",
             "legacy-old": "00000003-cpk-avd.pth.ab12cd34.tmp",
             "legacy-new": "00000004-cpk-avd.pth.ef56gh78.tmp",
             "elsewhere-new": "00000005-cpk-avd.pth.othernode-12.ab12cd34.tmp",
             "not-ours": "notes.tmp"}
    for key, name in names.items():
        (tmp_path / name).write_bytes(b"\0" * 100)
    for key in ("legacy-old", "not-ours"):
        os.utime(tmp_path / names[key], (time.time() - 7200,) * 2)
    removed = ckpt.remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted([names["dead"], names["legacy-old"]])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        names[k] for k in ("alive", "legacy-new", "elsewhere-new", "not-ours"))
    assert ckpt.remove_stale_temporaries(tmp_path / "absent") == []


def test_save_names_its_temporary_after_the_writer(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(ckpt.os, "replace", lambda src, dst: seen.append(Path(src).name) or os.rename(src, dst))
    save_checkpoint(tmp_path / "00000000-cpk-avd.pth", tiny_models())
    name, = seen
    assert name.startswith(f"00000000-cpk-avd.pth.{ckpt._writer()}.") and name.endswith(".tmp")
    assert ckpt._TEMPORARY.match(name)["pid"] == str(os.getpid())
