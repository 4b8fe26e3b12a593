"""tools/eval_transfer.py on a tiny model and a tiny puppet set: the JSON, the baseline, a checkpoint without AVD."""
import csv
import json

import numpy as np
import pytest
import torch

from media import read_video
from tiny_puppets import FRAMES, SMALL, make_tiny_puppets, write_tiny_model
from tiny_puppets import one_thread  # noqa: F401 (a fixture)
from tools import eval_transfer as et

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_transfer")
    data = make_tiny_puppets(folder / "puppets")
    config, checkpoint = write_tiny_model(folder, data)
    return {"data": data, "config": config, "checkpoint": checkpoint, "folder": folder}


def run(tiny, capsys, *extra, **paths):
    """eval_transfer.main on the tiny set; returns (exit code, printed JSON or None, stderr lines)."""
    paths = {"config": tiny["config"], "checkpoint": tiny["checkpoint"], "data": tiny["data"], **paths}
    code = et.main([arg for key, value in paths.items() for arg in (f"--{key}", str(value))]
                   + ["--device", "cpu", *map(str, extra)])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else None, captured.err.strip().splitlines()


def test_every_mode_and_the_baseline_per_pair(tiny, capsys):
    code, results, _ = run(tiny, capsys, "--out", tiny["folder"] / "transfer.json")
    assert code == 0 and results == json.loads((tiny["folder"] / "transfer.json").read_text())
    assert results["modes"] == ["standard", "relative", "avd"]
    assert results["num_pairs"] == SMALL["num_pairs"] and results["num_frames"] == SMALL["num_pairs"] * FRAMES
    with open(tiny["data"] / "test_pairs.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    for pair, row in zip(results["pairs"], rows):
        assert (pair["source"], pair["driving"], pair["num_frames"]) == (row["source"], row["driving"], FRAMES)
        assert all(0 < value < 1 for value in pair["l1"].values())
        # The baseline, recomputed from the files: the source's first frame against every ground-truth frame.
        source = read_video(tiny["data"] / "test" / row["source"])[0]  # (H, W, 3)
        truth = read_video(tiny["data"] / row["ground_truth"])  # (T, H, W, 3)
        assert pair["l1"]["copy_source"] == pytest.approx(np.abs(truth - source).mean(), rel=1e-5)
    for key in ("standard", "relative", "avd", "copy_source"):
        assert results["mean_l1"][key] == pytest.approx(np.mean([p["l1"][key] for p in results["pairs"]]))
    assert results["avd_closer_than_standard"] == (results["mean_l1"]["avd"] < results["mean_l1"]["standard"])
    assert results["avd_over_standard"] == pytest.approx(results["mean_l1"]["avd"] / results["mean_l1"]["standard"])


def test_pair_l1_is_the_mean_absolute_difference_per_frame(tiny):
    from demo import load_checkpoints
    networks = load_checkpoints(tiny["config"], tiny["checkpoint"], device="cpu")
    source, driving, truth = et.read_pair(tiny["data"], et.read_test_pairs(tiny["data"])[0], (32, 32), "cpu")
    l1 = et.pair_l1(networks, source, driving, truth, ("standard",), batch_size=3)  # batches of 3 and 1
    with torch.inference_mode():
        prediction = networks[0](source.expand(FRAMES, -1, -1, -1), networks[1](driving),
                                 networks[1](source.expand(FRAMES, -1, -1, -1)))["prediction"]  # (T, 3, H, W)
    np.testing.assert_allclose(l1["standard"], (prediction - truth).abs().mean(dim=(1, 2, 3)), rtol=1e-4)
    np.testing.assert_allclose(l1["copy_source"], (truth - source).abs().mean(dim=(1, 2, 3)), rtol=1e-6)


def test_a_checkpoint_without_avd_is_a_clear_error_unless_avd_is_left_out(tiny, capsys):
    config, checkpoint = write_tiny_model(tiny["folder"] / "no_avd", tiny["data"], avd=False)
    code, _, errors = run(tiny, capsys, config=config, checkpoint=checkpoint)
    assert code == 1 and len(errors) == 1, errors
    assert str(checkpoint) in errors[0] and "no avd_network" in errors[0] and "--modes" in errors[0]
    code, results, _ = run(tiny, capsys, "--modes", "standard", "relative", "--max-pairs", "1", "--max-frames", "2",
                           config=config, checkpoint=checkpoint)
    assert code == 0 and list(results["mean_l1"]) == ["standard", "relative", "copy_source"]
    assert results["num_frames"] == 2 and "avd_closer_than_standard" not in results


def test_data_without_pairs_is_a_clear_error(tiny, capsys, tmp_path):
    code, _, errors = run(tiny, capsys, data=tmp_path)
    assert code == 1 and len(errors) == 1 and str(tmp_path / "test_pairs.csv") in errors[0], errors


def test_an_out_that_is_a_folder_is_one_line_before_the_evaluation(tiny, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(et, "evaluate_checkpoint", lambda *args: pytest.fail("evaluated before checking --out"))
    code, _, errors = run(tiny, capsys, "--out", tmp_path)
    assert code == 1 and errors == [f"error: {tmp_path}: --out is a folder; expected the path of a JSON file"]
