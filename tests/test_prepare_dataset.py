"""tools/prepare_dataset.py on small videos written here: layout, sizes, counts, split, crops, CSV, resume."""
import json
import os
import re

import imageio.v3 as iio
import numpy as np
import pytest
import yaml

from tools import prepare_dataset as prep

RED, BLUE, GREEN, WHITE = (220, 30, 30), (30, 30, 220), (30, 200, 30), (250, 250, 250)
BASE_CONFIG = """\
# A tiny base config.
dataset_params:
  # where the data lives
  root_dir: data/base   # trailing comment
  frame_shape: [256, 256, 3]
  id_sampling: True
  pairs_list: data/base.csv
model_params:
  num_regions: 10
"""


def write_video(path, frames, fps=10):
    """(T, H, W, 3) uint8 frames -> an H.264 .mp4 (H, W multiples of 16, so ffmpeg keeps the size)."""
    iio.imwrite(path, np.asarray(frames, np.uint8), plugin="FFMPEG", fps=fps)
    return path


def moving_square(frames=20, height=64, width=96, background=BLUE, colour=WHITE, area=(0, 0, 96, 64), side=16):
    """(T, H, W, 3): a square of `side` sliding left to right inside area (left, top, right, bottom)."""
    video = np.empty((frames, height, width, 3), np.uint8)
    video[:] = background
    left, top, right, bottom = area
    for t in range(frames):
        x = left + round(t * (right - left - side) / max(frames - 1, 1))
        y = top + (bottom - top - side) // 2
        video[t, y:y + side, x:x + side] = colour
    return video


def clips(root):
    """{split: {clip name: number of PNG frames}} of a prepared dataset."""
    return {split: {c.name: len(list(c.glob("*.png"))) for c in (root / split).iterdir()} for split in prep.SPLITS}


def run(*argv):
    return prep.main([str(a) for a in argv])


def report_of(out):
    return json.loads((out / prep.REPORT_NAME).read_text())


def red_fraction(image):
    """Share of pixels of an (H, W, 3) uint8 image that are clearly red."""
    image = image.astype(int)
    return np.mean((image[..., 0] > 150) & (image[..., 2] < 100))


@pytest.fixture(scope="module")
def raw_videos(tmp_path_factory):
    """Five 20-frame sources, a garbage .mp4, a truncated .mp4 and a text file."""
    folder = tmp_path_factory.mktemp("raw")
    for k in range(5):
        write_video(folder / f"speaker{k}.mp4", moving_square(colour=(250, 40 * k, 250)))
    (folder / "garbage.mp4").write_bytes(b"not a video" * 50)
    (folder / "truncated.mp4").write_bytes((folder / "speaker0.mp4").read_bytes()[:600])
    (folder / "notes.txt").write_text("not a video either")
    return folder


@pytest.fixture(scope="module")
def prepared(raw_videos, tmp_path_factory):
    """The raw videos prepared once: 64x64, clips of 8 frames, config stub from a tmp base config."""
    work = tmp_path_factory.mktemp("prepared")
    (work / "base.yaml").write_text(BASE_CONFIG)
    out = work / "mine"
    code = run("--videos", raw_videos, "--out", out, "--size", 64, "--clip-length", 8, "--workers", 1,
               "--base-config", work / "base.yaml", "--config-out", work / "mine.yaml")
    assert code == 0
    return out


def test_layout_sizes_and_frame_counts(prepared):
    found = clips(prepared)
    names = sorted(found["train"]) + sorted(found["test"])
    assert len(names) == 5 * 3  # 20 frames -> clips of 8, 8 and 4 (4 >= the default --min-frames of 8 // 2)
    for key in (f"speaker{k}" for k in range(5)):
        split = "train" if f"{key}#000000#000008" in found["train"] else "test"
        assert found[split] == {**found[split], f"{key}#000000#000008": 8, f"{key}#000008#000016": 8,
                                f"{key}#000016#000020": 4}
    clip = next((prepared / "train").iterdir())
    frames = sorted(p.name for p in clip.iterdir())
    assert frames == [f"{i:07d}.png" for i in range(len(frames))]  # zero-padded: name order is time order
    frame = iio.imread(clip / "0000000.png")
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8


def test_split_is_per_source_and_seeded(prepared):
    found = clips(prepared)
    train_ids = {name.split("#")[0] for name in found["train"]}
    test_ids = {name.split("#")[0] for name in found["test"]}
    assert len(test_ids) == 1 and len(train_ids) == 4 and not train_ids & test_ids  # round(0.2 * 5) sources
    keys = [f"video{k}" for k in range(20)]
    split = prep.assign_splits(keys, 0.25, seed=3)
    assert split == prep.assign_splits(keys[::-1], 0.25, seed=3)  # the order files are listed in does not matter
    assert sum(s == "test" for s in split.values()) == 5
    assert split != prep.assign_splits(keys, 0.25, seed=4)
    assert set(prep.assign_splits(["a", "b"], 0.01, seed=0).values()) == {"train", "test"}  # each split gets one


def test_workers_give_the_same_dataset(prepared, raw_videos, tmp_path):
    out = tmp_path / "again"
    assert run("--videos", raw_videos, "--out", out, "--size", 64, "--clip-length", 8, "--workers", 2,
               "--no-config") == 0
    assert clips(out) == clips(prepared)
    name = next(iter(clips(out)["train"]))
    np.testing.assert_array_equal(iio.imread(out / "train" / name / "0000003.png"),
                                  iio.imread(prepared / "train" / name / "0000003.png"))


def test_bad_files_are_reported_and_skipped(prepared):
    report = report_of(prepared)
    reasons = {os.path.basename(item["file"]): item["reason"] for item in report["skipped_files"]}
    assert set(reasons) == {"garbage.mp4", "truncated.mp4", "notes.txt"}
    assert "not a video extension" in reasons["notes.txt"]
    assert all(reasons[name] for name in ("garbage.mp4", "truncated.mp4"))
    all_names = [n for split in clips(prepared).values() for n in split]
    assert not any(n.startswith(("garbage", "truncated")) for n in all_names)
    assert report["clips_written"] == 15 and report["frames_written"] == 5 * 20
    assert report["clips_in_dataset"] == {"train": 12, "test": 3}


def test_frames_dataset_accepts_the_output(prepared):
    from frames_dataset import FramesDataset
    train = FramesDataset(prepared, frame_shape=(64, 64, 3), id_sampling=True, is_train=True)
    assert len(train) == 4  # one entry per identity (source video), not per clip
    item = train[0]
    assert item["source"].shape == (3, 64, 64) and item["id"] == item["name"].split("#")[0]
    assert item["id"].startswith("speaker")
    test = FramesDataset(prepared, frame_shape=(64, 64, 3), id_sampling=True, is_train=False)
    assert len(test) == 3 and test[0]["video"].shape[:2] == (3, 8)


def test_config_stub(prepared):
    text = (prepared.parent / "mine.yaml").read_text()
    assert "# where the data lives" in text and "# trailing comment" in text and "num_regions: 10" in text
    params = yaml.safe_load(text)["dataset_params"]
    assert params["root_dir"] == prepared.resolve().as_posix()  # outside the repository: absolute
    assert params["frame_shape"] == [64, 64, 3] and params["pairs_list"] is None and params["id_sampling"] is True
    assert report_of(prepared)["config"]["path"] == str(prepared.parent / "mine.yaml")


def test_config_stub_block_values_and_crop_size():
    base = ("dataset_params:\n  frame_shape:\n  - 128\n  - 128\n  - 3\n  augmentation_params:\n    crop_param:\n"
            "      size: [128, 128]  # crop back\nmodel_params: {}\n")
    config = yaml.safe_load(prep.make_config_stub(base, "data/x y", 32, "base.yaml"))
    assert config["dataset_params"] == {"frame_shape": [32, 32, 3], "root_dir": "data/x y",
                                        "augmentation_params": {"crop_param": {"size": [32, 32]}}}
    with pytest.raises(ValueError, match="no top-level dataset_params"):
        prep.make_config_stub("model_params: {}\n", "d", 32, "base.yaml")


def test_config_stub_missing_base_or_existing_file(raw_videos, tmp_path):
    out = tmp_path / "d"
    assert run("--videos", raw_videos, "--out", out, "--size", 16, "--base-config", tmp_path / "none.yaml",
               "--config-out", tmp_path / "d.yaml") == 0  # the dataset is written regardless
    assert "not found" in report_of(out)["config"]["note"] and not (tmp_path / "d.yaml").exists()
    (tmp_path / "base.yaml").write_text(BASE_CONFIG)
    (tmp_path / "d.yaml").write_text("# mine, hand-edited\n")
    assert run("--videos", raw_videos, "--out", out, "--size", 16, "--base-config", tmp_path / "base.yaml",
               "--config-out", tmp_path / "d.yaml") == 0
    assert (tmp_path / "d.yaml").read_text() == "# mine, hand-edited\n"
    assert "--overwrite-config" in report_of(out)["config"]["note"]


def test_fixed_and_centre_crops_hold_the_box(tmp_path):
    video = np.empty((6, 64, 96, 3), np.uint8)
    video[:] = GREEN
    video[:, 16:48, 32:64] = RED  # the known box: left 32, top 16, right 64, bottom 48
    (tmp_path / "raw").mkdir()
    write_video(tmp_path / "raw" / "box.mp4", video)
    for crop, out in (("32,16,64,48", tmp_path / "fixed"), ("center", tmp_path / "centre"),
                      ("none", tmp_path / "whole")):
        assert run("--videos", tmp_path / "raw", "--out", out, "--size", 32, "--crop", crop, "--no-config") == 0
    fixed = iio.imread(tmp_path / "fixed" / "train" / "box#000000#000006" / "0000002.png")
    assert red_fraction(fixed) > 0.95  # the box, and only the box, fills the frame
    centre = iio.imread(tmp_path / "centre" / "train" / "box#000000#000006" / "0000002.png")
    assert abs(red_fraction(centre) - 0.25) < 0.05  # the 32x32 box inside the centred 64x64 square
    whole = iio.imread(tmp_path / "whole" / "train" / "box#000000#000006" / "0000002.png")
    assert abs(red_fraction(whole) - 32 * 32 / (64 * 96)) < 0.05


def test_crop_helpers_exact():
    frame = np.zeros((40, 60, 3), np.uint8)
    frame[10:20, 30:40] = 200
    np.testing.assert_array_equal(prep.crop_and_resize(frame, (30, 10, 40, 20), 10), np.full((10, 10, 3), 200))
    assert prep.center_box(40, 60) == (10, 0, 50, 40)
    assert prep.square_box((50, 0, 60, 4), 40, 60, margin=0.0) == (50, 0, 60, 10)  # shifted inside, not cut
    moved = np.zeros((40, 60), bool)
    moved[5:15, 20:30] = True
    moved[39, 0] = True  # an isolated noisy pixel is ignored
    assert prep.motion_bounds(moved) == (20, 5, 30, 15)
    assert prep.motion_bounds(np.zeros((4, 4), bool)) is None


def test_motion_crop_finds_the_moving_content(tmp_path):
    (tmp_path / "raw").mkdir()
    write_video(tmp_path / "raw" / "mover.mp4", moving_square(frames=12, area=(48, 16, 96, 48), colour=RED))
    opts = prep.Options(out=str(tmp_path / "out"), size=32, crop="motion", crop_margin=0.0)
    (box,) = prep.motion_boxes(str(tmp_path / "raw" / "mover.mp4"), opts).values()
    left, top, right, bottom = box
    assert right - left == bottom - top  # square
    assert abs(left - 48) <= 2 and right >= 94 and top <= 16 and bottom >= 48  # holds the 48x32 swept area
    assert run("--videos", tmp_path / "raw", "--out", tmp_path / "out", "--size", 32, "--crop", "motion",
               "--no-config") == 0
    frame = iio.imread(tmp_path / "out" / "train" / "mover#000000#000012" / "0000000.png")
    assert red_fraction(frame) > 0.08  # the 16x16 square in a ~48x48 crop, not in the 64x96 frame (4%)


def test_frame_rate_reduction(tmp_path):
    assert [i for i in range(9) if prep.keep_for_fps(i, 30, 10)] == [0, 3, 6]
    assert sum(prep.keep_for_fps(i, 29.97, 15) for i in range(300)) in (150, 151)
    (tmp_path / "raw").mkdir()
    write_video(tmp_path / "raw" / "v.mp4", moving_square(frames=20), fps=20)
    assert run("--videos", tmp_path / "raw", "--out", tmp_path / "out", "--size", 16, "--fps", 5,
               "--no-config") == 0
    assert clips(tmp_path / "out")["train"] == {"v#000000#000017": 5}  # frames 0, 4, 8, 12, 16


def test_gif_and_other_containers(tmp_path):
    (tmp_path / "raw").mkdir()
    video = moving_square(frames=7)
    iio.imwrite(tmp_path / "raw" / "cartoon.gif", video, plugin="pillow", duration=100, loop=0)
    iio.imwrite(tmp_path / "raw" / "old.avi", video, plugin="FFMPEG", fps=10, codec="mjpeg")
    assert run("--videos", tmp_path / "raw", "--out", tmp_path / "out", "--size", 16, "--test-fraction", 0,
               "--no-config") == 0
    assert clips(tmp_path / "out")["train"] == {"cartoon#000000#000007": 7, "old#000000#000007": 7}


def write_metadata(path, rows, columns="video_id,start,end,bbox,fps,width,height,partition"):
    path.write_text("\n".join([columns] + rows) + "\n")
    return path


def test_csv_rows_with_local_and_missing_sources(tmp_path):
    sources = tmp_path / "sources"
    sources.mkdir()
    video = np.empty((30, 64, 96, 3), np.uint8)
    video[:] = GREEN
    video[:, 16:48, 32:64] = RED
    write_video(sources / "abc_DEF-123.mp4", video, fps=10)
    metadata = write_metadata(tmp_path / "meta.csv", [
        "abc_DEF-123#000002#000012,2,12,64-32-128-96,10,192,128,train",  # bbox in a 2x larger reference frame
        "abc_DEF-123#000020#000030,20,30,64-32-128-96,10,192,128,test",
        "abc_DEF-123#000001#000003,1,3,0-0-192-128,5,192,128,train",  # 5 fps rows: source frames 2..5
        "abc_DEF-123#000025#000040,25,40,0-0-192-128,10,192,128,train",  # the source ends at frame 30
        "abc_DEF-123#000003#000006,3,6,200-0-300-50,10,192,128,train",  # a box right of the frame
        "abc_DEF-123#000050#000060,50,60,0-0-192-128,10,192,128,train",  # after the source's end
        "gone1234567#000000#000010,0,10,0-0-10-10,25,640,480,train",
        "abc_DEF-123#000000#000005,0,5,1-2-3,10,192,128,train",
    ])
    assert run("--csv", metadata, "--sources", sources, "--out", tmp_path / "out", "--size", 32,
               "--no-config", "--workers", 1) == 0
    assert clips(tmp_path / "out") == {
        "train": {"abc_DEF-123#000002#000012": 10, "abc_DEF-123#000001#000003": 4, "abc_DEF-123#000025#000040": 5},
        "test": {"abc_DEF-123#000020#000030": 10}}
    frame = iio.imread(tmp_path / "out" / "train" / "abc_DEF-123#000002#000012" / "0000004.png")
    assert red_fraction(frame) > 0.95  # the scaled bbox is the red box
    report = report_of(tmp_path / "out")
    assert [(m["source"], m["clips"]) for m in report["missing_sources"]] == [("gone1234567", 1)]
    assert "gone1234567" in report["missing_sources"][0]["reason"]
    assert [s["file"].endswith("meta.csv:9") for s in report["skipped_files"]] == [True]
    assert "left-top-right-bottom" in report["skipped_files"][0]["reason"]
    short = next(c for c in report["written"] if c["name"].endswith("#000040"))
    assert "ends before" in short["note"]
    skipped = {c["clip"]: c["reason"] for c in report["skipped_clips"]}
    assert "lies outside the 96x64 source frames" in skipped["abc_DEF-123#000003#000006"]
    assert "the source has 30 frames, none in the row's frames 50-60" in skipped["abc_DEF-123#000050#000060"]


def one_error_line(capsys):
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_csv_errors_a_user_can_act_on(tmp_path, capsys):
    metadata = write_metadata(tmp_path / "meta.csv", ["x,0,1,0-0-1-1"], columns="video_id,start,end,bbox")
    assert run("--csv", metadata, "--sources", tmp_path, "--out", tmp_path / "out") == 1
    assert re.search("missing column.*fps.*found video_id,start,end,bbox", one_error_line(capsys))


def test_fetch_without_yt_dlp_lists_the_source_as_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(prep, "yt_dlp_command", lambda: None)
    metadata = write_metadata(tmp_path / "meta.csv", ["gone1234567#000000#000010,0,10,0-0-10-10,25,640,480,train"])
    run("--csv", metadata, "--sources", tmp_path / "src", "--out", tmp_path / "out", "--fetch", "--no-config")
    (missing,) = report_of(tmp_path / "out")["missing_sources"]
    assert missing["source"] == "gone1234567" and "pip install yt-dlp" in missing["reason"]


def test_resume_after_an_interrupted_run(raw_videos, tmp_path, monkeypatch, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    for k in (0, 1):
        os.link(raw_videos / f"speaker{k}.mp4", raw / f"speaker{k}.mp4")
    argv = ("--videos", raw, "--out", tmp_path / "out", "--size", 16, "--clip-length", 8, "--workers", 1,
            "--test-fraction", 0, "--no-config")
    add, written = prep.ClipWriter.add, []

    def add_then_stop(self, frame):  # as if the user pressed Ctrl-C in the middle of the second clip
        if len(written) == 12:
            raise KeyboardInterrupt
        written.append(1)
        add(self, frame)

    monkeypatch.setattr(prep.ClipWriter, "add", add_then_stop)
    assert run(*argv) == 130
    assert clips(tmp_path / "out")["train"] == {"speaker0#000000#000008": 8}  # only the finished clip is in place
    assert any((tmp_path / "out" / prep.STATE_DIR / "partial").iterdir())
    first = tmp_path / "out" / "train" / "speaker0#000000#000008" / "0000000.png"
    stamp = first.stat().st_mtime_ns
    monkeypatch.setattr(prep.ClipWriter, "add", add)
    assert run(*argv) == 0
    report = report_of(tmp_path / "out")
    assert report["clips_already_complete"] == 1 and report["clips_written"] == 5
    assert first.stat().st_mtime_ns == stamp  # kept, not rewritten
    assert not (tmp_path / "out" / prep.STATE_DIR / "partial").exists()
    assert clips(tmp_path / "out")["train"] == {f"speaker{k}#{a:06d}#{b:06d}": b - a
                                                for k in (0, 1) for a, b in ((0, 8), (8, 16), (16, 20))}
    monkeypatch.setattr(prep, "stream_video", None)  # a third run must not decode anything
    assert run(*argv) == 0 and report_of(tmp_path / "out")["clips_already_complete"] == 6
    capsys.readouterr()
    assert run(*argv[:5], 32, *argv[6:]) == 1
    assert "size was 16, now 32" in one_error_line(capsys)


def test_cli_help_and_argument_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        run("--help")
    assert done.value.code == 0 and "examples:" in capsys.readouterr().out
    assert run("--videos", tmp_path / "nowhere", "--out", tmp_path / "out") == 1
    assert "no such folder" in one_error_line(capsys)
    with pytest.raises(SystemExit):  # argparse's own: a value of the wrong form
        run("--videos", tmp_path, "--out", tmp_path / "out", "--crop", "1,2,3")
    assert "LEFT,TOP,RIGHT,BOTTOM" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["a file", "under a file"])
def test_an_out_that_is_not_a_folder_is_one_error_line(raw_videos, tmp_path, capsys, kind):
    (tmp_path / "mine.txt").write_text("mine")
    out = tmp_path / "mine.txt" if kind == "a file" else tmp_path / "mine.txt" / "dataset"
    assert run("--videos", raw_videos, "--out", out, "--no-config") == 1
    assert one_error_line(capsys).startswith(f"error: --out {out}: ")
    assert (tmp_path / "mine.txt").read_text() == "mine"


@pytest.mark.parametrize("case", ["stub over --base-config", "stub over --csv", "--out inside --videos"])
def test_outputs_over_inputs_are_one_error_line_before_any_work(raw_videos, tmp_path, capsys, case):
    base = tmp_path / "base.yaml"
    base.write_text((prep.REPO_ROOT / "config" / "vox256.yaml").read_text())
    argv = ["--videos", raw_videos, "--out", tmp_path / "out", "--base-config", base]
    if case == "stub over --base-config":
        argv += ["--config-out", tmp_path / "." / "base.yaml", "--overwrite-config"]
        expected = "is also the --base-config"
    elif case == "stub over --csv":
        (tmp_path / "rows.csv").write_text("video_id,start,end,bbox,fps,width,height,partition\n")
        argv = ["--csv", tmp_path / "rows.csv", "--sources", raw_videos, "--out", tmp_path / "out",
                "--config-out", tmp_path / "rows.csv"]
        expected = "is also the --csv"
    else:
        argv[3] = raw_videos / "dataset"
        expected = "is inside --videos"
    before = {p: p.read_bytes() for p in (*raw_videos.iterdir(), *tmp_path.glob("*.*")) if p.is_file()}
    assert run(*argv) == 1
    assert expected in one_error_line(capsys)
    assert {p: p.read_bytes() for p in before} == before and not (tmp_path / "out").exists()
    assert not (raw_videos / "dataset").exists()


def test_a_config_stub_the_networks_cannot_take_says_so(raw_videos, tmp_path):
    """--size 96 is no multiple of 128: the stub of config/vox256.yaml is written with a note saying why."""
    base = prep.REPO_ROOT / "config" / "vox256.yaml"
    path, note = prep.write_config_stub(base, tmp_path / "stub.yaml", "data/mine", 96, overwrite=False)
    assert path == str(tmp_path / "stub.yaml") and (tmp_path / "stub.yaml").is_file()
    assert note.startswith(f"written from {base}, but ") and "multiples of 128" in note
    assert "\n" not in note


@pytest.mark.parametrize("name", ["vox256", "taichi256", "ted384", "mgif256", "ted-youtube384"])
def test_stub_of_each_published_config_passes_validation(name, tmp_path):
    from config import load_config
    base = prep.REPO_ROOT / "config" / f"{name}.yaml"
    if not base.is_file():
        pytest.skip(f"{base} is absent")
    (tmp_path / "stub.yaml").write_text(prep.make_config_stub(base.read_text(), "data/mine", 128, str(base)))
    dataset = load_config(tmp_path / "stub.yaml")["dataset_params"]
    assert dataset["root_dir"] == "data/mine" and list(dataset["frame_shape"]) == [128, 128, 3]
    assert dataset.get("pairs_list") is None


@pytest.mark.parametrize("content", ["nothing", "text file", "broken video"])
def test_a_videos_folder_without_a_usable_video_is_one_error_line(content, tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    if content == "text file":
        (videos / "notes.txt").write_text("hello")
    elif content == "broken video":
        (videos / "clip.mp4").write_bytes(b"not a video")
    assert run("--videos", videos, "--out", tmp_path / "out") == 1
    line = one_error_line(capsys)
    assert f"--videos {videos}" in line
    assert ("no video found" if content == "nothing" else "none of its 1 files is a usable video") in line
    assert not (tmp_path / "out").exists() and not (prep.REPO_ROOT / "config" / "out.yaml").exists()


def test_a_run_that_writes_no_clip_ends_with_an_error_line(tmp_path, capsys):
    metadata = write_metadata(tmp_path / "meta.csv", ["gone1234567#000000#000010,0,10,0-0-10-10,25,640,480,train"])
    (tmp_path / "src").mkdir()
    assert run("--csv", metadata, "--sources", tmp_path / "src", "--out", tmp_path / "out", "--no-config") == 1
    line = one_error_line(capsys)
    assert "no clip was written" in line and "prepare_report.json" in line
