"""Keypoint metrics (landmarks.py, keypoint_metrics.py, tools/eval_metrics.py, run.py --metrics) on real photographs
and footage, against what is known of them: a video against itself, against copies shifted by k pixels, against
copies with frames blanked.

The detectors need ai-edge-litert and mediapipe 0.10.14's models; without them these tests skip, except where
MRAA_REQUIRE_METRICS=1 (.ci/run), where they fail."""
import json
import os
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from skimage import data
from skimage.transform import resize

import keypoint_metrics as km
import landmarks
import run
from checkpoint import save_checkpoint
from config import load_config
from media import read_video
from modules.build import build_models
from tiny_training import write_tiny_config
from tools import eval_metrics

SHIFTS = (2, 5, 10)


def require_detectors():
    try:
        landmarks.check_available()
    except landmarks.DetectorUnavailable as error:
        if os.environ.get("MRAA_REQUIRE_METRICS") == "1":
            pytest.fail(str(error))
        pytest.skip(str(error))


class Cached:
    """A landmarker that remembers the keypoints of frames it has seen (the tests pass the same frames often)."""

    def __init__(self, landmarker):
        self.landmarker, self.seen = landmarker, {}
        self.keypoint_names = landmarker.keypoint_names

    def __call__(self, frame):
        key = hash(np.ascontiguousarray(frame).tobytes())
        if key not in self.seen:
            self.seen[key] = self.landmarker(frame)
        return self.seen[key]


@pytest.fixture(scope="module")
def face():
    require_detectors()
    return Cached(landmarks.make_landmarker("face"))


@pytest.fixture(scope="module")
def body():
    require_detectors()
    return Cached(landmarks.make_landmarker("body"))


def face_clip(num_frames=4):
    """(T, 256, 256, 3) float32: the astronaut's portrait, the camera panning over it a little from frame to frame."""
    photo = data.astronaut().astype(np.float32) / 255  # (512, 512, 3)
    corners = [(0, 60), (10, 70), (20, 50), (0, 90), (30, 80), (15, 65)][:num_frames]
    return np.stack([resize(photo[y:y + 320, x:x + 320], (256, 256), anti_aliasing=True) for y, x in corners]
                    ).astype(np.float32)


@pytest.fixture(scope="module")
def body_clip():
    """(6, 384, 384, 3): six frames spread over the real footage of a woman on a stage."""
    folder = Path(__file__).resolve().parents[2] / "shared" / "realworld"
    if not folder.is_dir():
        if os.environ.get("MRAA_REQUIRE_SHARED") == "1":
            pytest.fail(f"{folder} is absent")
        pytest.skip(f"{folder} is absent: the real footage in ../shared is needed for this test")
    video = read_video(folder / "driving.mp4")
    return video[np.linspace(0, len(video) - 1, 6).astype(int)]


def shifted(frames, k):
    """The frames moved k pixels right: k columns of edge pixels padded on the left, as many cut on the right."""
    return np.pad(frames, ((0, 0), (0, 0), (k, 0), (0, 0)), mode="edge")[:, :, :frames.shape[2]]


# ----------------------------------------------------------------------------------------------------------
# The detectors


def test_the_face_points_lie_where_the_face_is(face):
    frame = data.astronaut()  # uint8, 512x512: her face spans about x 170-270, y 60-170
    found = face(frame)
    assert found is not None and found.points.shape == (51, 2) and found.visible.all()
    assert (found.points[:, 0] > 160).all() and (found.points[:, 0] < 280).all()
    assert (found.points[:, 1] > 60).all() and (found.points[:, 1] < 180).all()
    by_name = dict(zip(landmarks.KEYPOINT_NAMES["face"], found.points))
    assert by_name["ibug36"][0] < by_name["ibug45"][0]  # her right eye is on the image's left
    assert by_name["ibug27"][1] < by_name["ibug30"][1] < by_name["ibug51"][1] < by_name["ibug57"][1]  # top to bottom


def test_the_ibug_points_lie_on_the_contours_mediapipe_publishes():
    """Each mapped mesh point is on the contour of the wheel's face_mesh_connections.py that its iBUG point is on."""
    require_detectors()
    source = (landmarks.model_folder() / "python" / "solutions" / "face_mesh_connections.py").read_text()

    def contour(name):
        body = re.search(name + r"\s*=\s*frozenset\(\[(.*?)\]\)", source, re.S).group(1)
        return {int(i) for i in re.findall(r"\d+", body)}

    parts = {"FACEMESH_RIGHT_EYEBROW": range(17, 22), "FACEMESH_LEFT_EYEBROW": range(22, 27),
             "FACEMESH_NOSE": range(27, 36), "FACEMESH_RIGHT_EYE": range(36, 42), "FACEMESH_LEFT_EYE": range(42, 48),
             "FACEMESH_LIPS": range(48, 68)}
    for name, ibug in parts.items():
        points = contour(name)
        assert {landmarks.IBUG51[i] for i in ibug} <= points, name
    assert sorted(landmarks.IBUG51) == list(range(17, 68))


def test_nothing_is_found_in_a_blank_frame(face, body):
    assert face(np.zeros((256, 256, 3), np.float32)) is None
    assert body(np.zeros((256, 256, 3), np.float32)) is None


@pytest.mark.slow
def test_the_body_joints_of_real_footage(body, body_clip):
    found = body(body_clip[0])
    assert found is not None and found.points.shape == (18, 2)
    by_name = dict(zip(landmarks.KEYPOINT_NAMES["body"], zip(found.points, found.visible)))
    for joint in ("nose", "neck", "left_shoulder", "right_shoulder", "left_eye", "right_eye"):
        assert by_name[joint][1], joint
    assert not by_name["left_ankle"][1] and not by_name["right_ankle"][1]  # her legs leave the frame at the knees
    assert by_name["nose"][0][1] < by_name["neck"][0][1]
    assert by_name["right_shoulder"][0][0] < by_name["left_shoulder"][0][0]  # she faces the camera


# ----------------------------------------------------------------------------------------------------------
# The metrics against ground truth


def compare(landmarker, truth, generated):
    return km.compare_video(landmarker, truth, generated).summary()


def test_a_face_video_against_itself(face):
    frames = face_clip()
    metrics = compare(face, frames, frames.copy())
    assert metrics["akd"] == 0 and metrics["mkr"] == 0
    assert metrics["keypoint_pairs"] == 51 * len(frames)
    assert metrics["frames_without_detection"] == {"ground_truth": 0, "generated": 0}


@pytest.mark.parametrize("k", SHIFTS)
def test_a_face_video_against_a_copy_shifted_by_k_pixels(face, k):
    frames = face_clip()
    metrics = compare(face, frames, shifted(frames, k))
    assert metrics["akd"] == pytest.approx(k, abs=0.5)
    assert metrics["mkr"] == 0


def test_blanked_frames_are_missed_and_counted_not_averaged_in(face):
    frames = face_clip(6)
    generated = frames.copy()
    generated[[1, 4]] = 0  # two of six frames blanked
    metrics = compare(face, frames, generated)
    assert metrics["mkr"] == pytest.approx(2 / 6)
    assert metrics["frames_without_detection"] == {"ground_truth": 0, "generated": 2}
    assert metrics["akd"] == 0 and metrics["keypoint_pairs"] == 51 * 4  # the blanked frames are not zeros in AKD
    reverse = compare(face, generated, frames)  # nothing in the ground truth: nothing to compare, counted
    assert reverse["frames_without_detection"] == {"ground_truth": 2, "generated": 0}
    assert reverse["mkr"] == 0 and reverse["truth_keypoints"] == 51 * 4


@pytest.mark.slow
def test_a_body_video_against_itself_shifted_copies_and_blanked_frames(body, body_clip):
    itself = compare(body, body_clip, body_clip.copy())
    assert itself["akd"] == 0 and itself["mkr"] == 0 and itself["keypoint_pairs"] > 12 * len(body_clip)
    for k in SHIFTS:
        moved = compare(body, body_clip, shifted(body_clip, k))
        assert moved["akd"] == pytest.approx(k, abs=0.5), (k, moved)
    generated = body_clip.copy()
    generated[[2, 5]] = 0
    blanked = compare(body, body_clip, generated)
    found = [int(body(frame).visible.sum()) for frame in body_clip]  # the joints of each ground-truth frame
    assert blanked["mkr"] == pytest.approx((found[2] + found[5]) / sum(found))  # their share of the joints
    assert blanked["mkr"] == pytest.approx(2 / 6, abs=0.05)  # about the blanked share of the frames
    assert blanked["frames_without_detection"] == {"ground_truth": 0, "generated": 2}
    assert blanked["akd"] == 0


def test_frame_formats_are_recorded(tmp_path):
    (tmp_path / "frames").mkdir()
    iio.imwrite(tmp_path / "frames" / "0.png", np.zeros((8, 8, 3), np.uint8))
    assert km.frame_format(tmp_path / "frames") == "png frames (lossless)"
    assert km.frame_format(tmp_path / "clip.mp4") == "mp4 video (lossy)"
    assert km.frame_format(tmp_path / "strip.png") == "png strip (lossless)"


# ----------------------------------------------------------------------------------------------------------
# The command line and run.py --metrics


def write_frames(folder, frames):
    folder.mkdir(parents=True)
    for t, frame in enumerate(frames):
        iio.imwrite(folder / f"{t:03d}.png", (frame * 255).round().astype(np.uint8))
    return folder


class FindsNothing:
    keypoint_names = ("nose",)

    def __call__(self, frame):
        return None


def test_cli_on_two_folders_writes_metrics(tmp_path, capsys):
    require_detectors()
    frames = face_clip(3)
    truth, generated = write_frames(tmp_path / "truth", frames), write_frames(tmp_path / "fake", shifted(frames, 5))
    out = tmp_path / "m.json"
    assert eval_metrics.main(["--target", "face", str(truth), str(generated), "--out", str(out), "--threads", "1"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["akd"] == pytest.approx(5, abs=0.5) and metrics["mkr"] == 0
    assert metrics["frame_format"] == {"ground_truth": "png frames (lossless)", "generated": "png frames (lossless)"}
    assert metrics["videos"]["fake"]["num_frames"] == 3 and "not the paper's detectors" in metrics["note"]
    assert json.loads(capsys.readouterr().out) == metrics


@pytest.mark.parametrize("problem", ["missing", "frame_count", "frame_size", "no_detector"])
def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch, problem):
    truth = write_frames(tmp_path / "truth", np.zeros((3, 16, 16, 3), np.float32))
    generated = tmp_path / "missing"
    if problem == "frame_count":
        generated = write_frames(tmp_path / "fake", np.zeros((2, 16, 16, 3), np.float32))
    elif problem == "frame_size":
        generated = write_frames(tmp_path / "fake", np.zeros((3, 16, 24, 3), np.float32))
    elif problem == "no_detector":
        def unavailable():
            raise landmarks.DetectorUnavailable(f"the TFLite runtime ai-edge-litert is not installed: "
                                                f"{landmarks.INSTALL_HINT}")
        monkeypatch.setattr(eval_metrics, "check_available", unavailable)
    if problem != "no_detector":
        monkeypatch.setattr(eval_metrics, "check_available", lambda: None)
        monkeypatch.setattr(landmarks, "make_landmarker", lambda target, threads=1: FindsNothing())
    code = eval_metrics.main(["--target", "face", str(truth), str(generated), "--out", str(tmp_path / "m.json")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error: ") and "\n" not in err
    expected = {"missing": "missing does not exist", "frame_count": "has 3 frames", "frame_size": "16x16",
                "no_detector": "pip install -r requirements-metrics.txt"}[problem]
    assert expected in err, err
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("case", ["truth itself", "generated by a link", "a frame of the generated", "one video"])
def test_out_over_an_input_is_refused_and_the_input_kept(case, tmp_path, capsys, monkeypatch):
    """--out was written over TRUTH (v.mp4 v.mp4 --out v.mp4): the video became JSON."""
    monkeypatch.setattr(eval_metrics, "check_available", lambda: None)
    monkeypatch.setattr(landmarks, "make_landmarker", lambda target, threads=1: FindsNothing())
    truth = write_frames(tmp_path / "truth", np.zeros((3, 16, 16, 3), np.float32))
    generated = write_frames(tmp_path / "fake", np.zeros((3, 16, 16, 3), np.float32))
    (tmp_path / "link").symlink_to(generated)
    out = {"truth itself": truth, "generated by a link": tmp_path / "link" / "001.png",
           "a frame of the generated": generated / "001.png", "one video": tmp_path / "v.mp4"}[case]
    if case == "one video":  # v.mp4 v.mp4 --out v.mp4
        iio.imwrite(out, np.zeros((3, 16, 16, 3), np.uint8), fps=10)
        truth = generated = out
        before = {out: out.read_bytes()}
    else:
        before = {p: p.read_bytes() for p in [*truth.iterdir(), *generated.iterdir()]}
    code = eval_metrics.main(["--target", "face", str(truth), str(generated), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith(f"error: --out {out} is") and "\n" not in err, err
    assert {p: p.read_bytes() for p in before} == before


@pytest.mark.parametrize("threads", ["100000", "99999999999999999999999"])
def test_threads_beyond_any_cpu_are_refused(threads, capsys):
    with pytest.raises(SystemExit):  # was a segmentation fault (100000) or LiteRT's TypeError traceback
        eval_metrics.main(["--target", "face", "a.mp4", "b.mp4", "--threads", threads])
    assert "--threads must be 1 to 1024" in capsys.readouterr().err


def test_run_metrics_needs_reconstruction_mode(tmp_path, capsys):
    config = write_tiny_config(tmp_path / "tiny.yaml", tmp_path / "data")
    assert run.cli(["--config", config, "--mode", "animate", "--checkpoint", config, "--metrics", "face"]) == 1
    assert "--metrics is for --mode reconstruction" in capsys.readouterr().err


def test_run_reconstruction_with_metrics(tmp_path, capsys):
    """run.py --mode reconstruction --metrics face on a tiny model with random weights, a face video as the test
    set: the metrics file is written beside metrics.json and counts every frame."""
    require_detectors()
    write_frames(tmp_path / "data" / "test" / "astronaut", face_clip(3))
    write_frames(tmp_path / "data" / "train" / "astronaut", face_clip(2))
    config_path = write_tiny_config(tmp_path / "tiny.yaml", tmp_path / "data",
                                    dataset_params={"frame_shape": [128, 128, 3]},
                                    reconstruction_params={"num_videos": None})
    config = load_config(config_path)
    torch.manual_seed(0)
    checkpoint = tmp_path / "random.pth"
    save_checkpoint(checkpoint, build_models(config))
    code = run.cli(["--config", config_path, "--mode", "reconstruction", "--checkpoint", checkpoint,
                    "--log_dir", tmp_path / "eval", "--device", "cpu", "--metrics", "face"])
    assert code == 0, capsys.readouterr().err
    folder = tmp_path / "eval" / "reconstruction"
    metrics = json.loads((folder / "metrics-face.json").read_text())
    assert json.loads((folder / "metrics.json").read_text())["num_videos"] == 1  # the L1 metrics kept
    assert metrics["num_frames"] == 3 and set(metrics["videos"]) == {"astronaut"}
    assert metrics["frames_without_detection"]["ground_truth"] == 0  # her face is found in every test frame
    assert metrics["frame_format"] == {"ground_truth": "png frames (lossless)", "generated": "png strip (lossless)"}
    assert "face keypoints of 1 videos (3 frames)" in capsys.readouterr().out
