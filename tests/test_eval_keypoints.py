"""tools/eval_keypoints.py: the ridge regression and joint error on synthetic landmarks, and the CLI on a tiny model."""
import json

import numpy as np
import pytest
import yaml

from tiny_puppets import FRAMES, SIZE, SMALL, make_tiny_puppets, write_tiny_model
from tiny_puppets import one_thread  # noqa: F401 (a fixture)
from tools import eval_keypoints as ek
from tools import make_puppets

pytestmark = pytest.mark.usefixtures("one_thread")

J, K = 14, 10


def synthetic_joints(basis, mean, num_videos, frames, seed):
    """Joint trajectories (V * T, J, 2) about [-1, 1] and a video id per frame: a mean pose plus a smooth motion
    of 6 latent factors through a fixed basis (6, 2J), as articulated poses vary in a low-dimensional space."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[None, :, None]  # (1, T, 1)
    latent = np.sin(2 * np.pi * rng.uniform(0.01, 0.05, (num_videos, 1, 6)) * t
                    + rng.uniform(0, 2 * np.pi, (num_videos, 1, 6)))  # (V, T, 6)
    joints = (mean + latent.reshape(-1, 6) @ basis).reshape(-1, J, 2)  # (V * T, J, 2)
    return joints, np.repeat(np.arange(num_videos), frames)


@pytest.fixture(scope="module")
def poses():
    """Training and test joints of disjoint videos, from one pose space."""
    rng = np.random.default_rng(0)
    basis, mean = rng.normal(0, 0.08, (6, 2 * J)), rng.uniform(-0.6, 0.6, 2 * J)
    train, groups = synthetic_joints(basis, mean, 12, 40, seed=1)
    test, _ = synthetic_joints(basis, mean, 4, 40, seed=2)
    return train, groups, test


def test_regions_that_follow_the_joints_beat_the_mean_pose_clearly(poses):
    train, groups, test = poses
    rng = np.random.default_rng(3)
    mixing = rng.normal(0, 0.2, (2 * J, 2 * K))  # a fixed linear map from joints to region centres

    def centres(joints):
        return (joints.reshape(len(joints), -1) @ mixing + rng.normal(0, 0.01, (len(joints), 2 * K))).reshape(-1, K, 2)

    results = ek.evaluate_landmarks(centres(train), train, groups, centres(test), test, (64, 64))
    assert results["error_px"] < 0.2 * results["baseline_error_px"], results
    assert results["baseline_error_px"] > 1.0  # the poses do move: the baseline is not trivially good
    assert results["ratio_to_baseline"] == pytest.approx(results["error_px"] / results["baseline_error_px"])
    assert results["error_fraction"] == pytest.approx(results["error_px"] / 64)
    assert len(results["per_joint_error_px"]) == J


def test_regions_that_ignore_the_joints_do_not_beat_the_mean_pose(poses):
    train, groups, test = poses
    rng = np.random.default_rng(4)
    noise_train, noise_test = rng.uniform(-1, 1, (len(train), K, 2)), rng.uniform(-1, 1, (len(test), K, 2))
    results = ek.evaluate_landmarks(noise_train, train, groups, noise_test, test, (64, 64))
    assert 0.95 < results["ratio_to_baseline"] < 1.2, results
    assert results["alpha"] >= 0.1  # the held-out videos ask for strong shrinkage towards the mean pose


def test_ridge_recovers_an_exact_linear_map_and_shrinks_to_the_mean():
    rng = np.random.default_rng(5)
    X, W, b = rng.normal(size=(200, 5)), rng.normal(size=(5, 3)), rng.normal(size=3)
    Y = X @ W + b  # (200, 3)
    W_fit, b_fit = ek.ridge_fit(X, Y, alpha=1e-9)
    np.testing.assert_allclose(W_fit, W, atol=1e-6)
    np.testing.assert_allclose(b_fit, b, atol=1e-6)
    shrunk = ek.ridge_predict(ek.ridge_fit(X, Y, alpha=1e9), X)  # (200, 3)
    np.testing.assert_allclose(shrunk, np.broadcast_to(Y.mean(0), Y.shape), atol=1e-6)


def test_joint_error_is_in_pixels_of_each_axis():
    true = np.zeros((2, 3, 2))
    predicted = true.copy()
    predicted[0, :, 0] = 2 / (64 - 1)  # one pixel to the right in a 64-wide frame
    predicted[1, :, 1] = 3 * 2 / (32 - 1)  # three pixels down in a 32-high frame
    np.testing.assert_allclose(ek.joint_error(predicted, true, (32, 64)), [[1, 1, 1], [3, 3, 3]])


def test_frames_are_sampled_evenly_without_repeats():
    picks = ek.sample_frames([48] * 200, 1001)
    assert len(picks) == len(set(picks)) == 1001
    assert {v for v, _ in picks} == set(range(200))
    assert ek.sample_frames([3, 2], None) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert sorted({v for v, _ in ek.sample_frames([10] * 50, 5)}) == [0, 12, 24, 37, 49]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_keypoints")
    data = make_tiny_puppets(folder / "puppets")
    config, checkpoint = write_tiny_model(folder, data)
    return {"data": data, "config": config, "checkpoint": checkpoint, "folder": folder}


def test_cli_on_a_tiny_model_gives_a_sane_json(tiny, capsys):
    out = tiny["folder"] / "keypoints.json"
    code = ek.main(["--config", str(tiny["config"]), "--checkpoint", str(tiny["checkpoint"]), "--data",
                    str(tiny["data"]), "--device", "cpu", "--max-train-frames", "10", "--out", str(out)])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed == json.loads(out.read_text())
    assert printed["num_train_frames"] == 10 and printed["num_train_videos"] == SMALL["num_train"]
    assert printed["num_test_frames"] == SMALL["num_test"] * FRAMES
    assert printed["num_regions"] == 4 and printed["image_size"] == [SIZE, SIZE]
    assert printed["alpha"] in ek.ALPHAS
    for name in ("error", "baseline_error"):
        assert 0 < printed[f"{name}_px"] < SIZE
        assert printed[f"{name}_fraction"] == pytest.approx(printed[f"{name}_px"] / SIZE)
    assert list(printed["per_joint_error_px"]) == list(make_puppets.JOINTS)
    assert np.mean(list(printed["per_joint_error_px"].values())) == pytest.approx(printed["error_px"])


def test_cli_says_which_file_is_missing(tiny, tmp_path, capsys):
    code = ek.main(["--config", str(tiny["config"]), "--checkpoint", str(tiny["checkpoint"]), "--data",
                    str(tmp_path), "--device", "cpu"])
    errors = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(errors) == 1 and str(tmp_path / "train") in errors[0], errors
    code = ek.main(["--config", str(tiny["config"]), "--checkpoint", str(tmp_path / "none.pth"), "--data",
                    str(tiny["data"]), "--device", "cpu"])
    errors = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(errors) == 1 and "none.pth" in errors[0], errors


def run_cli(tiny, out, capsys, config=None):
    code = ek.main(["--config", str(config or tiny["config"]), "--checkpoint", str(tiny["checkpoint"]), "--data",
                    str(tiny["data"]), "--device", "cpu", "--max-train-frames", "10", "--out", str(out)])
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if line.strip()]


@pytest.mark.parametrize("kind", ["read-only folder", "folder", "under a file"])
def test_an_out_that_cannot_be_written_is_one_line_before_the_evaluation(tiny, tmp_path, capsys, monkeypatch, kind,
                                                                        read_only_folder):
    """The check comes first: an evaluation of minutes is not run to end in a traceback at the write."""
    folder = tmp_path / "results"
    folder.mkdir()
    out = {"read-only folder": read_only_folder / "keypoints.json", "folder": folder,
           "under a file": tmp_path / "a-file" / "keypoints.json"}[kind]
    (tmp_path / "a-file").write_text("")
    monkeypatch.setattr(ek, "evaluate_checkpoint", lambda *args: pytest.fail("evaluated before checking --out"))
    code, errors = run_cli(tiny, out, capsys)
    assert code == 1 and len(errors) == 1 and errors[0].startswith(f"error: {out}: "), errors


@pytest.mark.parametrize("what", ["config", "checkpoint"])
def test_an_out_that_names_an_input_is_one_line_and_the_input_is_kept(tiny, capsys, monkeypatch, what):
    before = tiny[what].read_bytes()
    monkeypatch.setattr(ek, "evaluate_checkpoint", lambda *args: pytest.fail("evaluated before checking --out"))
    code, errors = run_cli(tiny, tiny[what].parent / "." / tiny[what].name, capsys)
    assert code == 1 and len(errors) == 1 and f"is also the --{what}" in errors[0], errors
    assert tiny[what].read_bytes() == before


def test_out_is_written_atomically_and_replaces_the_previous_file(tiny, tmp_path, capsys):
    out = tmp_path / "keypoints.json"
    out.write_text("previous")
    code, errors = run_cli(tiny, out, capsys)
    assert code == 0 and json.loads(out.read_text())["num_train_frames"] == 10
    assert [p.name for p in tmp_path.iterdir()] == ["keypoints.json"]  # no temporary file left


def test_frame_shape_null_reads_frames_at_their_stored_size(tiny, tmp_path, capsys):
    config = yaml.safe_load(tiny["config"].read_text())
    config["dataset_params"]["frame_shape"] = None
    (tmp_path / "null.yaml").write_text(yaml.safe_dump(config))
    code, errors = run_cli(tiny, tmp_path / "keypoints.json", capsys, config=tmp_path / "null.yaml")
    assert code == 0, errors
    assert json.loads((tmp_path / "keypoints.json").read_text())["image_size"] == [SIZE, SIZE]
