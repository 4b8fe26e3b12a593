"""cropping.py and tools/crop.py on real photographs (scikit-image's astronaut, ../shared/realworld) and on
videos made from them: boxes contain the face or figure, are square, and stay fixed within a scene."""
import json

import imageio.v3 as iio
import numpy as np
import pytest
import skimage.data

from conftest import REPO_ROOT, require_app_module
from media import VideoWriter

require_app_module("cv2")
import cropping  # noqa: E402
from cropping import Box  # noqa: E402
from tools import crop as crop_cli  # noqa: E402

ASTRONAUT_FACE = Box(177, 66, 272, 161)
SOURCE_FACE, SOURCE_FIGURE_X = Box(230, 35, 290, 105), (175, 350)
DRIVING_FACE = Box(155, 10, 226, 90)


@pytest.fixture(scope="module")
def detector():
    return cropping.Detector()


def write_clip(path, frames, fps=10):
    with VideoWriter(path, fps) as writer:
        writer.write(np.asarray(frames))
    return path


def first_frames(video, count):
    return [frame for _, frame in zip(range(count), iio.imiter(video))]


def assert_square_containing(box, *inside):
    box = Box(*box)
    assert box.width == box.height, box
    for other in inside:
        assert box.contains(other), (box, other)


# ----------------------------------------------------------------------------------------------------------
# Real photographs


@pytest.mark.parametrize("target", ["face", "person", "auto"])
def test_astronaut_box_contains_her_face(target, tmp_path, detector):
    path = tmp_path / "astronaut.png"
    iio.imwrite(path, skimage.data.astronaut())
    report = cropping.crop_file(path, tmp_path / "out.png", target=target, size=128, detector=detector)
    assert_square_containing(report["box"], ASTRONAUT_FACE)
    assert iio.imread(tmp_path / "out.png").shape == (128, 128, 3)
    if target == "face":  # the face's square is a margin around it, not the whole photo
        assert Box(*report["box"]).side < 2.5 * ASTRONAUT_FACE.side


def test_a_large_photo_is_detected_small_and_boxed_in_its_own_pixels(tmp_path, detector):
    import cv2
    path = tmp_path / "astronaut1024.png"
    iio.imwrite(path, cv2.resize(skimage.data.astronaut(), (1024, 1024), interpolation=cv2.INTER_CUBIC))
    report = cropping.crop_file(path, tmp_path / "out.png", target="face", size=64, detector=detector)
    assert_square_containing(report["box"], Box(*(2 * v for v in ASTRONAUT_FACE)))
    assert Box(*report["box"]).side < 5 * ASTRONAUT_FACE.side


@pytest.mark.parametrize("target", ["face", "person"])
def test_realworld_source_box_contains_face_or_figure(target, tmp_path, realworld_dir, detector):
    report = cropping.crop_file(realworld_dir / "source.png", tmp_path / "s.png", target=target, size=64,
                                detector=detector)
    assert report["target"] == target
    if target == "face":
        assert_square_containing(report["box"], SOURCE_FACE)
    else:
        left, right = SOURCE_FIGURE_X
        assert_square_containing(report["box"], SOURCE_FACE, Box(left, SOURCE_FACE.top, right, 384))


@pytest.fixture
def realworld_clip(tmp_path, realworld_dir):
    """The first 12 frames of ../shared/realworld/driving.mp4, as an mp4."""
    return write_clip(tmp_path / "driving12.mp4", first_frames(realworld_dir / "driving.mp4", 12))


@pytest.mark.slow
@pytest.mark.parametrize("target", ["face", "person"])
def test_realworld_video_box_contains_the_face_and_stays_fixed(target, tmp_path, realworld_clip, detector):
    out = tmp_path / "d.mp4"
    report = cropping.crop_file(realworld_clip, out, target=target, size=64, detector=detector,
                                report=tmp_path / "d.json")
    assert report["frames"] == [0, 11] and len(report["scenes"]) == 1  # one fixed box for the clip
    assert_square_containing(report["scenes"][0]["box"], DRIVING_FACE)
    assert json.loads((tmp_path / "d.json").read_text()) == report
    assert len(first_frames(out, 100)) == 12 and iio.improps(out).shape[1:] == (64, 64, 3)


# ----------------------------------------------------------------------------------------------------------
# Boxes over time


def test_fill_gaps_takes_the_nearest_neighbour():
    a, b = Box(0, 0, 1, 1), Box(5, 5, 6, 6)
    assert cropping.fill_gaps([None, a, None, None, None, b, None]) == [a, a, a, a, b, b, b]
    assert cropping.fill_gaps([None, None]) == [None, None]


def test_median_filter_ignores_a_one_frame_misdetection():
    boxes = [Box(10, 10, 50, 50)] * 4 + [Box(200, 200, 300, 300)] + [Box(10, 10, 50, 50)] * 4
    assert all(box == Box(10, 10, 50, 50) for box in cropping.median_filter(boxes))


def test_a_passing_false_face_does_not_pull_the_track():
    face, hand = Box(100, 10, 170, 80), Box(100, 200, 180, 280)
    found = [cropping.Found([(face, 30)], None), cropping.Found([(hand, 6)], None),  # the face missed, a hand seen
             cropping.Found([(hand, 7), (Box(104, 12, 172, 80), 5)], None), None]
    assert cropping.track_faces(found) == [face, None, Box(104, 12, 172, 80), None]


@pytest.mark.parametrize("jump, scenes", [(3, 1), (200, 2)])
def test_a_scene_ends_only_where_the_object_leaves_the_box(jump, scenes):
    boxes = [Box(100, 100, 150, 150)] * 6 + [Box(100 + jump, 100, 150 + jump, 150)] * 6
    assert len(cropping.split_scenes(boxes)) == scenes


def jittered(image, canvas, offsets):
    """Frames (T, h, w, 3): ``image`` pasted on a grey ``canvas`` (h, w) at each (x, y) of ``offsets``."""
    frames = []
    for x, y in offsets:
        frame = np.full((*canvas, 3), 128, np.uint8)
        frame[y:y + image.shape[0], x:x + image.shape[1]] = image
        frames.append(frame)
    return np.stack(frames)


@pytest.fixture(scope="module")
def astronaut256():
    return skimage.data.astronaut()[::2, ::2]  # (256, 256, 3): the face about x 88-136, y 33-80


def test_jittering_face_gets_one_fixed_box_and_missed_frames_use_neighbours(tmp_path, astronaut256, detector):
    offsets = [(20 + dx, 20 + dy) for dx, dy in [(0, 0), (3, -2), (-2, 3), (4, 1), (0, 0), (-3, -3), (2, 2), (1, 0)]]
    frames = jittered(astronaut256, (300, 300), offsets)
    frames[3:5] = 128  # two frames with nothing in them
    report = cropping.crop_file(write_clip(tmp_path / "j.mp4", frames), tmp_path / "out.mp4", target="face",
                                size=64, detector=detector)
    assert len(report["scenes"]) == 1 and report["scenes"][0]["frames"] == [0, 7]
    face = Box(88 + 20, 33 + 20, 136 + 20, 80 + 20)
    assert_square_containing(report["box"], *[Box(face.left + dx - 20, face.top + dy - 20, face.right + dx - 20,
                                                  face.bottom + dy - 20) for dx, dy in offsets])


def test_face_that_moves_across_the_frame_gets_a_box_per_scene(tmp_path, astronaut256, detector):
    frames = jittered(astronaut256, (256, 600), [(0, 0)] * 5 + [(340, 0)] * 5)
    report = cropping.crop_file(write_clip(tmp_path / "m.mp4", frames), tmp_path / "out.mp4", target="face",
                                size=64, detector=detector, preview=tmp_path / "p.png")
    assert [s["frames"] for s in report["scenes"]] == [[0, 4], [5, 9]]
    assert_square_containing(report["scenes"][0]["box"], Box(88, 33, 136, 80))
    assert_square_containing(report["scenes"][1]["box"], Box(428, 33, 476, 80))
    assert iio.imread(tmp_path / "p.png").shape == (256, 1200, 3)  # the first frame of each scene


def test_like_gives_the_driving_face_the_source_faces_share_of_the_crop(tmp_path, astronaut256, detector):
    source = tmp_path / "source.png"
    iio.imwrite(source, skimage.data.astronaut())  # face side about 95 of 512
    source_report = cropping.crop_file(source, tmp_path / "s.png", target="face", size=64, detector=detector)
    driving = write_clip(tmp_path / "d.mp4", jittered(astronaut256, (320, 320), [(40, 30)] * 4))  # face about 48
    report = cropping.crop_file(driving, tmp_path / "d64.mp4", size=64, like=source_report, detector=detector)

    def share(scene):
        return Box(*scene["face"]).side / Box(*scene["box"]).side

    assert report["target"] == "face"
    assert share(report["scenes"][0]) == pytest.approx(share(source_report["scenes"][0]), rel=0.05)
    assert Box(*report["box"]).side < 0.7 * Box(*source_report["box"]).side


# ----------------------------------------------------------------------------------------------------------
# The command line: errors, manual box, atomic writes


def run(capsys, *argv):
    code = crop_cli.main([str(arg) for arg in argv])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def assert_one_error(code, lines, *fragments):
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_nothing_found_is_one_line_suggesting_box_and_keeps_the_old_output(tmp_path, capsys):
    blank = tmp_path / "blank.png"
    iio.imwrite(blank, np.full((200, 200, 3), 90, np.uint8))
    out = tmp_path / "out.png"
    out.write_bytes(b"what the user had")
    assert_one_error(*run(capsys, blank, "--out", out), str(blank), "no face or person found", "--box")
    assert out.read_bytes() == b"what the user had"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank.png", "out.png"]  # no temporary file left


@pytest.mark.parametrize("argv, fragments", [
    (["missing.png", "--out", "o.png"], ["missing.png: input not found"]),
    (["IMG", "--out", "o.png", "--box", "1,2,3"], ["--box '1,2,3'", "LEFT,TOP,RIGHT,BOTTOM"]),
    (["IMG", "--out", "o.png", "--box", "10,10,300,100"], ["outside", "200x200"]),
    (["IMG", "--out", "o.png", "--like", "missing.json"], ["missing.json: crop report not found"]),
    (["IMG", "--out", "o.png", "--like", "IMG"], ["not a crop report"]),
    (["IMG", "--out", "IMG"], ["is the input itself"]),
    (["IMG", "--out", "o.mp4"], ["--out o.mp4: an image's crop is an image"]),
    (["CLIP", "--out", "o.png"], ["--out o.png: a video's crop is a video"]),
    (["notes.txt", "--out", "o.png"], ["notes.txt: expected an image"]),
])
def test_bad_input_is_one_error_line(argv, fragments, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    iio.imwrite(tmp_path / "img.png", np.full((200, 200, 3), 90, np.uint8))
    write_clip(tmp_path / "clip.mp4", np.full((2, 64, 64, 3), 90, np.uint8))
    (tmp_path / "notes.txt").write_text("not a picture")
    argv = [arg.replace("IMG", "img.png").replace("CLIP", "clip.mp4") for arg in argv]
    assert_one_error(*run(capsys, *argv), *[f.replace("IMG", "img.png") for f in fragments])


def test_manual_box_crops_exactly_there(tmp_path, capsys):
    image = np.zeros((100, 120, 3), np.uint8)
    image[20:60, 30:70] = 255
    iio.imwrite(tmp_path / "img.png", image)
    code, lines = run(capsys, tmp_path / "img.png", "--out", tmp_path / "o.png", "--box", "30,20,70,60",
                      "--size", "40", "--report", tmp_path / "r.json", "--preview", tmp_path / "p.png")
    assert code == 0, lines
    assert (iio.imread(tmp_path / "o.png") == 255).all()
    assert json.loads((tmp_path / "r.json").read_text())["box"] == [30, 20, 70, 60]
    preview = iio.imread(tmp_path / "p.png")
    assert (preview[20, 30:70] == [0, 255, 0]).all()  # the box drawn in green


def test_a_failure_mid_video_keeps_the_old_output_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    clip = write_clip(tmp_path / "clip.mp4", np.full((4, 64, 64, 3), 100, np.uint8))
    out = tmp_path / "out.mp4"
    out.write_bytes(b"what the user had")

    def broken(frame, box, size):
        raise OSError("disk full")

    monkeypatch.setattr(cropping, "crop_frame", broken)
    with pytest.raises(OSError):
        cropping.crop_file(clip, out, box=Box(0, 0, 32, 32), size=32)
    assert out.read_bytes() == b"what the user had"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "out.mp4"]


def test_crop_inputs_for_the_demo(tmp_path, astronaut256, detector):
    source = tmp_path / "source.png"
    iio.imwrite(source, skimage.data.astronaut())
    driving = write_clip(tmp_path / "d.mp4", jittered(astronaut256, (320, 320), [(40, 30)] * 3), fps=12)
    cropped = cropping.crop_inputs(source, driving, "face", tmp_path / "crops", size=64,
                                   preview=tmp_path / "result.crop.png", detector=detector)
    assert iio.imread(cropped.source).shape == (64, 64, 3)
    assert iio.improps(cropped.driving).shape[1:] == (64, 64, 3)
    assert iio.immeta(cropped.driving)["fps"] == pytest.approx(12)
    assert cropped.driving_report["target"] == "face" and (tmp_path / "result.crop.png").exists()


def test_done_when_command_on_the_realworld_source(tmp_path, realworld_dir):
    """The README's crop command line, through a real process."""
    import subprocess
    import sys
    command = [sys.executable, str(REPO_ROOT / "tools" / "crop.py"), str(realworld_dir / "source.png"), "--target",
               "person", "--size", "256", "--out", "s.png", "--report", "s.json"]
    completed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    report = json.loads((tmp_path / "s.json").read_text())
    left, right = SOURCE_FIGURE_X
    assert_square_containing(report["box"], Box(left, SOURCE_FACE.top, right, 384))
    assert iio.imread(tmp_path / "s.png").shape == (256, 256, 3)
