"""cropping.py and tools/crop.py on real photographs (scikit-image's astronaut, ../shared/realworld) and on
videos made from them: boxes contain the face or figure, are square, and stay fixed within a scene."""
import json
from pathlib import Path

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


def test_a_box_that_moves_within_a_shot_stays_one_scene_holding_every_position():
    moves = [Box(100 + 15 * t, 100, 150 + 15 * t, 150) for t in range(12)]  # across 4 face sides, no cut
    found = [cropping.Found([(box, 20)], None) for box in moves]
    scenes = cropping.plan_scenes(found, "face", (400, 600), cuts=[])
    assert len(scenes) == 1
    assert_square_containing(scenes[0].box, *moves)


def test_a_false_detection_far_from_the_track_is_left_out_of_the_box():
    face, hand = Box(100, 10, 160, 70), Box(100, 250, 160, 310)
    found = [cropping.Found([(face, 20)], None)] * 5 + [cropping.Found([(hand, 20)], None)] \
        + [cropping.Found([(face, 20)], None)] * 5
    scene, = cropping.plan_scenes(found, "face", (400, 400), cuts=[])
    assert scene.object == face and not Box(*scene.box).contains(hand)


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# ----------------------------------------------------------------------------------------------------------
# Shots: a scene is a camera shot, found from the frames themselves


@pytest.fixture(scope="module")
def talk_clip(tmp_path_factory):
    """Frames 60-130 of ../shared/realworld/driving.mp4 (a TED talk): one continuous shot in which the speaker
    turns to her left, her face moving 170 pixels across the frame, undetected (in profile) in most frames."""
    from conftest import _require_shared
    frames = [frame for t, frame in enumerate(iio.imiter(_require_shared("realworld") / "driving.mp4"))
              if 60 <= t <= 130]
    return write_clip(tmp_path_factory.mktemp("talk") / "talk_60_130.mp4", frames)


@pytest.fixture(scope="module")
def astro_face(tmp_path_factory, detector):
    """The report of cropping scikit-image's astronaut with --target face (what --like reads)."""
    folder = tmp_path_factory.mktemp("astro")
    iio.imwrite(folder / "astronaut.png", skimage.data.astronaut())
    cropping.crop_file(folder / "astronaut.png", folder / "a.png", target="face", size=64, detector=detector,
                       report=folder / "astro_face.json")
    return folder / "astro_face.json"


def test_continuous_real_footage_has_no_cut(talk_clip):
    thumbnails = np.stack([cropping.thumbnail(frame) for frame in iio.imiter(talk_clip)])  # (71, 32, 32)
    differences = cropping.frame_differences(thumbnails)  # (70,)
    assert differences.max() < 5  # grey levels: a continuous shot
    assert cropping.find_cuts(thumbnails) == []


@pytest.mark.slow
def test_two_clips_concatenated_are_two_shots_cut_at_the_join(tmp_path, realworld_dir, astronaut256, detector):
    talk = first_frames(realworld_dir / "driving.mp4", 9)  # (384, 384, 3) each
    astronaut = jittered(astronaut256, (384, 384), [(60 + dx, 40) for dx in range(7)])
    clip = write_clip(tmp_path / "two.mp4", np.concatenate([np.stack(talk), astronaut]))
    report = cropping.crop_file(clip, tmp_path / "out.mp4", target="face", size=64, detector=detector)
    assert [s["frames"] for s in report["scenes"]] == [[0, 8], [9, 15]]
    assert_square_containing(report["scenes"][0]["box"], DRIVING_FACE)
    assert_square_containing(report["scenes"][1]["box"], Box(88 + 66, 33 + 40, 136 + 60, 80 + 40))


def test_a_flash_is_not_a_cut():
    frames = np.full((10, 32, 32), 80, np.uint8)
    frames[5] = 250  # one white frame, the same picture after it
    assert cropping.find_cuts(frames) == []
    frames[6:] = 10
    assert cropping.find_cuts(frames) == [5]  # a white frame, then another picture: a cut


PROFILE_FACE_35 = Box(185, 25, 255, 95)  # the speaker's face in frames 35-36 of talk_clip, in profile, by hand


@pytest.mark.slow
@pytest.mark.parametrize("how", ["--like", "--target person"])
def test_a_continuous_talk_is_one_box_holding_the_face_in_every_frame(how, tmp_path, talk_clip, astro_face,
                                                                      detector, monkeypatch, capsys):
    """The red-team's command: tools/crop.py talk_60_130.mp4 --like astro_face.json --size 256 (2 scenes before,
    3 for --target person, with a jump cut in the result)."""
    seen = []
    real_look = cropping.look
    monkeypatch.setattr(cropping, "look", lambda *args: seen.append(real_look(*args)) or seen[-1])
    flags = ["--like", astro_face] if how == "--like" else how.split()
    code, lines = run(capsys, talk_clip, *flags, "--size", "64", "--out", tmp_path / "t.mp4",
                      "--report", tmp_path / "t.json")
    assert code == 0, lines
    report = json.loads((tmp_path / "t.json").read_text())
    assert [s["frames"] for s in report["scenes"]] == [[0, 70]]  # one shot, one box
    faces = [face for face in cropping.track_faces(seen) if face is not None]  # the face the detector finds
    assert len(seen) == 71 and len(faces) > 15
    assert_square_containing(report["box"], PROFILE_FACE_35, *faces)


# ----------------------------------------------------------------------------------------------------------
# Paths: no output over an input or over another output; every output writable before any work


@pytest.fixture
def files(tmp_path, monkeypatch):
    """In tmp_path (the working folder): img.png, clip.mp4 and a face report s.json; their bytes, to check."""
    monkeypatch.chdir(tmp_path)
    iio.imwrite("img.png", np.full((200, 200, 3), 90, np.uint8))
    write_clip(tmp_path / "clip.mp4", np.full((2, 64, 64, 3), 90, np.uint8))
    report = {"target": "face", "box": [0, 0, 100, 100],
              "scenes": [{"frames": [0, 0], "box": [0, 0, 100, 100], "object": [25, 25, 75, 75],
                          "face": [25, 25, 75, 75]}]}
    (tmp_path / "s.json").write_text(json.dumps(report))
    return {name: (tmp_path / name).read_bytes() for name in ("img.png", "clip.mp4", "s.json")}


def no_detection(*args):
    raise AssertionError("detected before checking the outputs")


@pytest.mark.parametrize("argv, fragments", [
    (["img.png", "--box", "0,0,64,64", "--out", "o.png", "--report", "img.png"], ["--report img.png", "input"]),
    (["img.png", "--box", "0,0,64,64", "--out", "o.png", "--preview", "img.png"], ["--preview img.png", "input"]),
    (["clip.mp4", "--box", "0,0,32,32", "--out", "o.mp4", "--report", "clip.mp4"], ["--report clip.mp4", "input"]),
    (["img.png", "--out", "o.png", "--like", "s.json", "--report", "s.json"], ["--report s.json", "--like"]),
    (["img.png", "--out", "o.png", "--like", "s.json", "--preview", "./s.json"], ["--preview ./s.json", "--like"]),
    (["img.png", "--box", "0,0,64,64", "--out", "o.png", "--report", "o.png"], ["--report o.png", "--out"]),
    (["img.png", "--box", "0,0,64,64", "--out", "o.png", "--preview", "o.png"], ["--preview o.png", "--out"]),
    (["img.png", "--box", "0,0,64,64", "--out", "o.png", "--report", "p.png", "--preview", "p.png"],
     ["p.png", "--report", "--preview"]),
])
def test_an_output_over_an_input_or_another_output_is_refused_and_nothing_is_lost(argv, fragments, files, capsys,
                                                                                   monkeypatch):
    monkeypatch.setattr(cropping, "Detector", no_detection)
    assert_one_error(*run(capsys, *argv), *fragments)
    assert {name: Path(name).read_bytes() for name in files} == files
    assert not any(Path(name).exists() for name in ("o.png", "o.mp4", "p.png"))


@pytest.mark.parametrize("flag", ["--out", "--report", "--preview"])
def test_an_unwritable_output_is_one_line_naming_it_before_any_work(flag, files, read_only_folder, capsys,
                                                                    monkeypatch):
    monkeypatch.setattr(cropping, "Detector", no_detection)
    paths = {"--out": "o.mp4", "--report": "r.json", "--preview": "p.png"}
    paths[flag] = str(read_only_folder / Path(paths[flag]).name)
    argv = ["clip.mp4", *[arg for item in paths.items() for arg in item]]
    assert_one_error(*run(capsys, *argv), f"{flag} {paths[flag]}")
    assert not Path("o.mp4").exists() and not Path("r.json").exists()


def test_an_output_that_is_a_folder_is_refused(files, tmp_path, capsys):
    (tmp_path / "shown.png").mkdir()
    assert_one_error(*run(capsys, "img.png", "--box", "0,0,64,64", "--out", "o.png", "--preview", "shown.png"),
                     "--preview shown.png", "folder")
    assert not Path("o.png").exists()


# ----------------------------------------------------------------------------------------------------------
# Reports (--like) and sizes


@pytest.mark.parametrize("box, expected", [
    ([0, 0, 0, 0], "LEFT < RIGHT"), ("abcd", "four numbers"), ([1, 2, 3], "four numbers"),
    ([10, 10, "x", 50], "four numbers"), ([10, 10, 5, 50], "LEFT < RIGHT"), ([-5, 0, 50, 50], "0 <= LEFT"),
])
def test_a_report_with_a_bad_box_is_one_line_naming_the_file(box, expected, files, capsys, monkeypatch):
    monkeypatch.setattr(cropping, "Detector", no_detection)
    report = json.loads(Path("s.json").read_text())
    report["scenes"][0]["box"] = box
    Path("bad.json").write_text(json.dumps(report))
    assert_one_error(*run(capsys, "clip.mp4", "--like", "bad.json", "--out", "o.mp4"), "bad.json",
                     "scenes[0].box", expected)


@pytest.mark.parametrize("change, fragments", [
    (lambda r: r["scenes"][0].update(face=[3, 3, 3, 3]), ["scenes[0].face"]),
    (lambda r: r["scenes"][0].update(object=None), ["scenes[0].object"]),
    (lambda r: r.update(scenes=[]), ["scenes"]),
    (lambda r: r.update(target=7), ["target"]),
])
def test_a_report_with_bad_fields_is_one_line_naming_the_file(change, fragments, files, capsys, monkeypatch):
    report = json.loads(Path("s.json").read_text())
    change(report)
    Path("bad.json").write_text(json.dumps(report))
    assert_one_error(*run(capsys, "clip.mp4", "--like", "bad.json", "--out", "o.mp4"), "bad.json", *fragments)


@pytest.mark.parametrize("text, expected", [
    ("[" * 100_000 + "]" * 100_000, "not a crop report"),  # nested past Python's recursion limit
    ('{"target": "face", "scenes": [{"frames": [0, 0], "box": [0, 0, 1' + "0" * 400 + ', 100], '
     '"object": [25, 25, 75, 75]}]}', "four numbers"),  # an integer past any float
    ('{"target": "face", "scenes": [{"frames": [0, 0], "box": [0, 0, 100, 100], '
     '"object": [1e300, 1e300, 1e301, 1e301]}]}', "four numbers"),
], ids=["nested", "huge-int", "huge-float"])
def test_a_report_nested_too_deep_or_with_huge_numbers_is_one_line(text, expected, files, capsys, monkeypatch):
    monkeypatch.setattr(cropping, "Detector", no_detection)
    Path("bad.json").write_text(text)
    assert_one_error(*run(capsys, "clip.mp4", "--like", "bad.json", "--out", "o.mp4"), "bad.json", expected)
    assert not Path("o.mp4").exists()


def test_like_with_a_report_of_a_hand_box_says_why_not(files, capsys, monkeypatch):
    monkeypatch.setattr(cropping, "Detector", no_detection)
    assert run(capsys, "img.png", "--box", "10,10,90,90", "--out", "o.png", "--report", "hand.json")[0] == 0
    assert_one_error(*run(capsys, "clip.mp4", "--like", "hand.json", "--out", "o.mp4"), "hand.json", "--box",
                     "--target face")
    assert not Path("o.mp4").exists()


@pytest.mark.parametrize("size", ["100000", "30000", "8", "0", "-3"])
def test_a_size_out_of_range_is_one_line_before_any_work(size, files, capsys, monkeypatch):
    monkeypatch.setattr(cropping, "Detector", no_detection)
    assert_one_error(*run(capsys, "img.png", "--out", "o.png", "--size", size), f"--size {size}",
                     "16 to 4096 pixels")
    assert not Path("o.png").exists()


def test_size_range_is_in_the_help(capsys):
    with pytest.raises(SystemExit):
        crop_cli.parse_args(["--help"])
    assert "16 to 4096" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------------
# Decompression bombs and huge frames, refused from the header


def write_bomb_png(path, side=20000):
    """A 1-bit grey PNG of side x side pixels (400 megapixels, about 50 KB), written row by row with zlib:
    Pillow's own writer would hold the 400 MB picture in memory first."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), b"\0" * (1 + (side + 7) // 8)  # filter byte, then side bits
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    return write_bomb_png(tmp_path_factory.mktemp("bomb") / "bomb20k.png")


def test_a_decompression_bomb_is_one_line_before_any_work(bomb, tmp_path, capsys, monkeypatch):
    import time
    monkeypatch.setattr(cropping, "Detector", no_detection)
    start = time.monotonic()
    assert_one_error(*run(capsys, bomb, "--out", tmp_path / "o.png"), str(bomb), "megapixels")
    assert time.monotonic() - start < 5 and not (tmp_path / "o.png").exists()


def test_max_pixels_refuses_a_video_of_large_frames(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cropping, "Detector", no_detection)
    clip = write_clip(tmp_path / "hd.mp4", np.full((3, 720, 1280, 3), 90, np.uint8))
    assert_one_error(*run(capsys, clip, "--out", tmp_path / "o.mp4", "--max_pixels", "500000"), str(clip),
                     "1280x720", "0.5 megapixels")
    assert not (tmp_path / "o.mp4").exists()


# ----------------------------------------------------------------------------------------------------------
# demo.py --crop and the demo's pixel limit


@pytest.fixture
def demo_media(tmp_path, parity_dir, astronaut256):
    """demo.py's paths: the parity model, the astronaut as the source, a 3-frame clip of her as the driving video."""
    from eval_media import parity_paths
    config, checkpoint = parity_paths(parity_dir)
    iio.imwrite(tmp_path / "source.png", skimage.data.astronaut())
    driving = write_clip(tmp_path / "driving.mp4", jittered(astronaut256, (320, 320), [(40, 30)] * 3))
    return {"config": config, "checkpoint": checkpoint, "source_image": tmp_path / "source.png",
            "driving_video": driving, "result_video": tmp_path / "result.mp4"}


def run_demo(capsys, monkeypatch, media, *extra, networks=True, **changes):
    """demo.main on the parity model at 64x64; returns (exit code, stderr lines). ``networks=False``: loading them
    fails the test (the input should have been refused before)."""
    import demo
    import pipeline
    if not networks:
        monkeypatch.setattr(pipeline, "load_animation_networks", lambda *a: pytest.fail("networks loaded"))
    argv = [arg for key, value in {**media, **changes}.items() for arg in (f"--{key}", str(value))]
    code = demo.main(argv + ["--img_shape", "64,64", "--cpu", "--quiet", "--mode", "relative", *extra])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_demo_refuses_a_decompression_bomb_before_loading_networks(bomb, demo_media, capsys, monkeypatch):
    import time
    import demo  # noqa: F401 (imported before the clock starts: torch takes seconds)
    start = time.monotonic()
    code, lines = run_demo(capsys, monkeypatch, demo_media, networks=False, source_image=bomb)
    assert_one_error(code, lines, str(bomb), "megapixels")
    assert time.monotonic() - start < 5 and not demo_media["result_video"].exists()


def test_demo_refuses_a_frame_folder_of_huge_frames(bomb, demo_media, tmp_path, capsys, monkeypatch):
    import shutil
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(3):
        shutil.copyfile(bomb, folder / f"{t:03d}.png")
    code, lines = run_demo(capsys, monkeypatch, demo_media, networks=False, driving_video=folder)
    assert_one_error(code, lines, "frames", "megapixels")


def test_demo_max_pixels_refuses_large_video_frames(demo_media, tmp_path, capsys, monkeypatch):
    clip = write_clip(tmp_path / "hd.mp4", np.full((3, 720, 1280, 3), 90, np.uint8))
    code, lines = run_demo(capsys, monkeypatch, demo_media, "--max_pixels", "500000", networks=False,
                           driving_video=clip)
    assert_one_error(code, lines, str(clip), "1280x720", "0.5 megapixels")


def test_demo_max_pixels_refuses_a_large_source(demo_media, capsys, monkeypatch):
    code, lines = run_demo(capsys, monkeypatch, demo_media, "--max_pixels", "200000", networks=False)
    assert_one_error(code, lines, str(demo_media["source_image"]), "512x512")


@pytest.mark.parametrize("case", ["source", "result folder"])
def test_demo_crop_preview_is_checked_before_any_work(case, demo_media, tmp_path, capsys, monkeypatch):
    preview = tmp_path / "result.crop.png"
    if case == "source":
        preview.write_bytes(demo_media["source_image"].read_bytes())
        changes = {"source_image": preview}
    else:
        preview.mkdir()
        changes = {}
    kept = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    code, lines = run_demo(capsys, monkeypatch, demo_media, "--crop", "face", networks=False, **changes)
    assert_one_error(code, lines, str(preview))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == kept


def test_demo_crop_box_outside_the_source_names_the_demos_flag(demo_media, capsys, monkeypatch):
    code, lines = run_demo(capsys, monkeypatch, demo_media, "--crop", "100,100,600,600", networks=False)
    assert_one_error(code, lines, "--crop 100,100,600,600", str(demo_media["source_image"]), "512x512")
    assert "--box" not in lines[0]


def test_demo_nothing_found_suggests_the_demos_own_flag(demo_media, tmp_path, capsys, monkeypatch):
    iio.imwrite(tmp_path / "blank.png", np.full((128, 128, 3), 90, np.uint8))
    code, lines = run_demo(capsys, monkeypatch, demo_media, "--crop", "face", networks=False,
                           source_image=tmp_path / "blank.png")
    assert_one_error(code, lines, "no face found", "--crop LEFT,TOP,RIGHT,BOTTOM")
    assert "tools/crop.py" not in lines[0]


@pytest.mark.slow
def test_demo_crop_notes_name_the_users_files(demo_media, capsys, monkeypatch):
    code, lines = run_demo(capsys, monkeypatch, demo_media, "--crop", "face", "--audio")
    assert code == 0, lines
    assert f"note: {demo_media['driving_video']} has no sound track; the result is silent" in lines
    assert not [line for line in lines if "mraa-crop" in line], lines
    assert (demo_media["result_video"].parent / "result.crop.png").exists()
