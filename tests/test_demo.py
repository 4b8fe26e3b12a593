"""demo.py end to end on the parity model: every mode, the starting frame, sound, and each kind of bad input."""
import os
import subprocess
import sys

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest
import torch

import demo
import pipeline
from media import has_audio
from conftest import REPO_ROOT
from eval_media import (add_sound, count_frames, driving_frames, parity_paths, source_image, video_fps,
                        write_eval_config, write_sound_only, write_video)

NUM_FRAMES, FPS = 10, 12


@pytest.fixture
def media(tmp_path, parity_dir):
    """Paths of the parity config and checkpoint, a 64x64 source image and a 10-frame 12 fps driving video."""
    config, checkpoint = parity_paths(parity_dir)
    source = tmp_path / "source.png"
    iio.imwrite(source, source_image(parity_dir))
    driving = write_video(tmp_path / "driving.mp4", driving_frames(parity_dir, NUM_FRAMES), fps=FPS)
    return {"config": config, "checkpoint": checkpoint, "source_image": source, "driving_video": driving,
            "result_video": tmp_path / "result.mp4"}


def run(capsys, media, *extra, **changes):
    """demo.main with the media's paths (overridden by ``changes``); returns (exit code, stderr lines)."""
    paths = {**media, **changes}
    argv = [arg for key, value in paths.items() for arg in (f"--{key}", str(value))]
    code = demo.main(argv + ["--img_shape", "64,64", "--cpu", "--quiet", *extra])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def assert_one_line_error(code, lines, *fragments):
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 1 and len(errors) == 1, lines
    for fragment in fragments:
        assert str(fragment) in errors[0], errors[0]


@pytest.mark.parametrize("mode", [pytest.param("standard", marks=pytest.mark.slow), "relative", "avd"])
def test_each_mode_keeps_frame_count_and_rate(mode, media, capsys):
    code, lines = run(capsys, media, "--mode", mode, "--batch_size", "4")
    assert code == 0, lines
    result = media["result_video"]
    assert count_frames(result) == NUM_FRAMES and video_fps(result) == pytest.approx(FPS)
    assert iio.improps(result).shape[1:] == (64, 64, 3)


def test_find_best_frame_picks_the_frame_posed_like_the_source(media, capsys, parity_dir, tmp_path):
    frames = driving_frames(parity_dir, NUM_FRAMES)
    frames[6] = source_image(parity_dir)  # frame 6 is the source itself: its region layout matches exactly
    driving = write_video(tmp_path / "posed.mp4", frames, fps=FPS)
    code, lines = run(capsys, media, "--find_best_frame", "--batch_size", "4", driving_video=driving)
    assert code == 0 and "note: best frame: 6" in lines, lines
    assert count_frames(media["result_video"]) == NUM_FRAMES


@pytest.mark.slow
def test_best_frame_must_be_a_frame(media, capsys):
    code, lines = run(capsys, media, "--best_frame", "3")
    assert code == 0 and count_frames(media["result_video"]) == NUM_FRAMES
    assert_one_line_error(*run(capsys, media, "--best_frame", str(NUM_FRAMES)), media["driving_video"],
                          "--best_frame 10")


@pytest.mark.slow
def test_audio_is_copied_from_a_video_that_has_some(media, tmp_path):
    """Through the real command line, as a user runs it."""
    with_sound = add_sound(media["driving_video"], tmp_path / "with_sound.mp4")
    args = {**media, "driving_video": with_sound}
    command = [sys.executable, str(REPO_ROOT / "demo.py"), "--img_shape", "64,64", "--cpu", "--audio",
               *[arg for key, value in args.items() for arg in (f"--{key}", str(value))]]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "frame/s" in completed.stderr  # the progress bar
    result = media["result_video"]
    assert has_audio(result) and not has_audio(media["driving_video"])
    assert count_frames(result) == NUM_FRAMES and video_fps(result) == pytest.approx(FPS)
    assert not list(tmp_path.glob("tmp*")), "the silent intermediate video was left behind"


@pytest.mark.slow
def test_audio_on_a_silent_video_gives_a_silent_result(media, capsys):
    code, lines = run(capsys, media, "--audio")
    assert code == 0 and any("has no sound track" in line for line in lines)
    assert count_frames(media["result_video"]) == NUM_FRAMES and not has_audio(media["result_video"])


def test_img_shape_defaults_to_the_configs_frame_shape(media, tmp_path, parity_dir, capsys):
    config = write_eval_config(tmp_path / "config.yaml", parity_dir, tmp_path)  # frame_shape 64x64
    source = tmp_path / "big.png"
    iio.imwrite(source, np.repeat(np.repeat(source_image(parity_dir), 2, axis=0), 2, axis=1))  # 128x128
    argv = ["--config", str(config), "--checkpoint", str(media["checkpoint"]), "--source_image", str(source),
            "--driving_video", str(media["driving_video"]), "--result_video", str(media["result_video"]),
            "--cpu", "--quiet"]
    assert demo.main(argv) == 0
    assert iio.improps(media["result_video"]).shape[1:] == (64, 64, 3)


@pytest.mark.parametrize("kind,channels", [("alpha", 4), pytest.param("grey", 1, marks=pytest.mark.slow),
                                           pytest.param("grey with alpha", 2, marks=pytest.mark.slow)])
def test_images_with_alpha_or_one_channel_are_used_as_rgb_with_a_note(kind, channels, media, capsys, tmp_path,
                                                                      parity_dir):
    image = source_image(parity_dir)
    if channels == 4:
        image = np.concatenate([image, np.full_like(image[..., :1], 255)], axis=2)
    elif channels == 1:
        image = image[..., 0]
    else:
        image = np.stack([image[..., 0], np.full_like(image[..., 0], 255)], axis=2)
    path = tmp_path / "odd.png"
    iio.imwrite(path, image)
    code, lines = run(capsys, media, source_image=path)
    assert code == 0, lines
    word = "alpha channel" if kind == "alpha" else "grey-scale"
    assert any(line.startswith("note:") and str(path) in line and word in line for line in lines), lines


def test_a_non_square_image_is_resized_with_a_note(media, capsys, tmp_path, parity_dir):
    path = tmp_path / "wide.png"
    iio.imwrite(path, np.concatenate([source_image(parity_dir)] * 2, axis=1))  # 64x128
    code, lines = run(capsys, media, source_image=path)
    assert code == 0 and any("64x128" in line and str(path) in line and "resized" in line for line in lines)


def test_the_source_is_resized_like_the_reference_did(media, parity_dir):
    """read_source at the model's size equals the image itself at that size."""
    image = pipeline.read_source(media["source_image"], (64, 64))
    assert image.shape == (64, 64, 3) and np.abs(image * 255 - source_image(parity_dir)).max() < 1e-3


def _garbage(path):
    path.write_bytes(b"this is not a picture at all" * 10)
    return path


def _truncated_png(path):
    iio.imwrite(path, np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:3000])  # its header says 64x64; its pixels stop early
    return path


def _mismatched_config(tmp_path, parity_dir):
    config = write_eval_config(tmp_path / "config10.yaml", parity_dir, tmp_path)
    config.write_text(config.read_text().replace("num_regions: 5", "num_regions: 10"))
    return config


BAD_INPUTS = {
    # name: (function of (tmp_path, parity_dir) -> {flag: path}, the words the error must hold besides the path)
    "missing image": (lambda tmp, shared: {"source_image": tmp / "nope.png"}, "not found"),
    "unreadable image": (lambda tmp, shared: {"source_image": _garbage(tmp / "bad.png")}, "cannot read image"),
    "truncated image": (lambda tmp, shared: {"source_image": _truncated_png(tmp / "cut.png")}, "cannot read image"),
    "missing video": (lambda tmp, shared: {"driving_video": tmp / "nope.mp4"}, "not found"),
    "unreadable video": (lambda tmp, shared: {"driving_video": _garbage(tmp / "bad.mp4")}, ""),
    "video with no frames": (lambda tmp, shared: {"driving_video": write_sound_only(tmp / "sound.mp4")},
                             "contains no frames"),
    "empty frame folder": (lambda tmp, shared: {"driving_video": (tmp / "frames").mkdir() or tmp / "frames"},
                           "no frames"),
    "missing checkpoint": (lambda tmp, shared: {"checkpoint": tmp / "nope.pth"}, "not found"),
    "not a checkpoint": (lambda tmp, shared: {"checkpoint": _garbage(tmp / "bad.pth")}, "checkpoint"),
    "missing config": (lambda tmp, shared: {"config": tmp / "nope.yaml"}, "not found"),
    "config/checkpoint mismatch": (lambda tmp, shared: {"config": _mismatched_config(tmp, shared)},
                                   "checkpoint has 5 regions"),
    "unknown result format": (lambda tmp, shared: {"result_video": tmp / "out.xyz"}, "cannot write"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_one_line_error_naming_the_file(case, media, capsys, tmp_path, parity_dir):
    make, words = BAD_INPUTS[case]
    changes = make(tmp_path, parity_dir)
    code, lines = run(capsys, media, **changes)
    assert_one_line_error(code, lines, next(iter(changes.values())), words)
    assert not media["result_video"].exists()


def test_avd_mode_with_a_checkpoint_without_avd_is_a_one_line_error(media, capsys, tmp_path):
    checkpoint = torch.load(media["checkpoint"], map_location="cpu", weights_only=True)
    del checkpoint["avd_network"]
    torch.save(checkpoint, tmp_path / "no_avd.pth")
    code, lines = run(capsys, media, "--mode", "avd", checkpoint=tmp_path / "no_avd.pth")
    assert_one_line_error(code, lines, tmp_path / "no_avd.pth", "no avd_network", "--mode relative")
    code, lines = run(capsys, media, "--mode", "relative", checkpoint=tmp_path / "no_avd.pth")
    assert code == 0


@pytest.mark.slow
def test_no_arguments_runs_the_bundled_example_or_says_what_is_missing(tmp_path):
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "demo.py"), "--cpu", "--quiet"],
                               capture_output=True, text=True, cwd=tmp_path, timeout=300)
    missing = [path for path in demo.BUNDLED.values() if not (REPO_ROOT / path).exists()]
    if missing:
        assert completed.returncode != 0
        lines = completed.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), completed.stderr
        assert all(path in lines[0] for path in missing)
    else:
        assert completed.returncode == 0, completed.stderr
        assert count_frames(tmp_path / "result.mp4") == count_frames(REPO_ROOT / demo.BUNDLED["driving_video"])


@pytest.mark.slow
def test_real_footage_with_the_best_frame(media, capsys, realworld_dir):
    """The authors' sample inputs (384x384 photo, 133-frame 10 fps video without sound) at the model's 64x64."""
    driving = realworld_dir / "driving.mp4"
    code, lines = run(capsys, media, "--find_best_frame", "--audio", "--batch_size", "16",
                      source_image=realworld_dir / "source.png", driving_video=driving)
    assert code == 0, lines
    assert any(line.startswith("note: best frame: ") for line in lines) and any("no sound track" in line for line in lines)
    result = media["result_video"]
    assert count_frames(result) == 133 and video_fps(result) == pytest.approx(10)
    assert iio.improps(result).shape[1:] == (64, 64, 3)


@pytest.mark.slow
def test_a_gif_result_cannot_have_sound(media, capsys, tmp_path):
    assert_one_line_error(*run(capsys, media, "--audio", result_video=tmp_path / "out.gif"), "out.gif", "no sound")
    code, lines = run(capsys, media, result_video=tmp_path / "out.gif")
    assert code == 0 and count_frames(tmp_path / "out.gif") == NUM_FRAMES


# ----------------------------------------------------------------------------------------------------------
# Nothing a user had is lost; sizes the networks cannot take; inputs of every kind


@pytest.mark.parametrize("name", ["same path", "relative path", "symlink"])
def test_the_result_is_never_written_over_an_input(name, media, capsys, tmp_path, monkeypatch):
    driving = media["driving_video"]
    before = driving.read_bytes()
    monkeypatch.chdir(tmp_path)
    result = {"same path": driving, "relative path": driving.name, "symlink": tmp_path / "link.mp4"}[name]
    if name == "symlink":
        result.symlink_to(driving)
    assert_one_line_error(*run(capsys, media, result_video=result), "is also the driving video")
    assert driving.read_bytes() == before
    source = media["source_image"].read_bytes()
    assert_one_line_error(*run(capsys, media, result_video=media["source_image"]), "is also the source image")
    assert media["source_image"].read_bytes() == source


def test_an_interrupted_demo_keeps_the_earlier_result(media, capsys, monkeypatch):
    import signal

    import errors
    assert run(capsys, media)[0] == 0
    before = media["result_video"].read_bytes()
    
    def stopped_half_way(animator, driving, writer, *args, **kwargs):
        writer.write(np.zeros((3, 64, 64, 3), np.uint8))
        raise errors.Interrupted(signal.SIGTERM)

    monkeypatch.setattr(pipeline, "animate_video", stopped_half_way)
    code, lines = run(capsys, media)
    assert code == 143 and len(lines) == 1 and lines[0].startswith("interrupted by SIGTERM"), lines
    assert media["result_video"].read_bytes() == before
    assert sorted(p.name for p in media["result_video"].parent.iterdir() if p.name.startswith(".")) == []


@pytest.mark.slow
def test_sigterm_and_ctrl_c_end_the_demo_with_one_line_and_the_earlier_result_intact(media, tmp_path, parity_dir):
    """Through the real command line: the signal arrives while the result is being written."""
    import signal
    import time
    long_video = write_video(tmp_path / "long.mp4", driving_frames(parity_dir, 400), fps=FPS)
    result = media["result_video"]
    result.write_bytes(b"an earlier result")
    args = {**media, "driving_video": long_video}
    command = [sys.executable, str(REPO_ROOT / "demo.py"), "--img_shape", "64,64", "--cpu", "--quiet",
               "--batch_size", "1", *[arg for key, value in args.items() for arg in (f"--{key}", str(value))]]
    for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(".result.mp4.") for p in tmp_path.iterdir()) and child.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        child.send_signal(signum)
        _, stderr = child.communicate(timeout=60)
        lines = stderr.strip().splitlines()
        assert child.returncode == code and len(lines) == 1 and "interrupted" in lines[0], stderr
        assert result.read_bytes() == b"an earlier result"
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".result.mp4.")]


@pytest.mark.parametrize("case", ["folder", "under a file", "read-only folder"])
def test_a_result_that_cannot_be_written_is_a_one_line_error(case, media, capsys, tmp_path, request):
    if case == "folder":
        result = tmp_path / "out.mp4"
        result.mkdir()
    elif case == "under a file":
        (tmp_path / "file").write_text("x")
        result = tmp_path / "file" / "out.mp4"
    else:
        result = request.getfixturevalue("read_only_folder") / "out.mp4"
    assert_one_line_error(*run(capsys, media, result_video=result), result)


@pytest.mark.parametrize("shape,words", [("50,70", "multiples of 16"), ("3,3", "multiples of 16"),
                                         ("20000,20000", "4096")])
def test_sizes_the_networks_cannot_take_are_refused_where_read(shape, words, media, capsys):
    paths = {**media}
    argv = [arg for key, value in paths.items() for arg in (f"--{key}", str(value))]
    code = demo.main(argv + ["--img_shape", shape, "--cpu", "--quiet"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert_one_line_error(code, lines, f"--img_shape {shape.replace(',', 'x')}", words)
    assert not media["result_video"].exists()


def test_frame_shape_null_falls_back_to_the_authors_384_with_a_note(media, tmp_path, parity_dir, capsys):
    config = write_eval_config(tmp_path / "null.yaml", parity_dir, tmp_path)
    config.write_text(config.read_text().replace("frame_shape:\n  - 64\n  - 64\n  - 3", "frame_shape: null"))
    assert "frame_shape: null" in config.read_text()
    args = demo.parse_args(["--config", str(config)])
    assert pipeline.choose_img_shape(args.config, args.img_shape) == (384, 384)
    assert "384x384" in capsys.readouterr().err
    args = demo.parse_args(["--config", str(config), "--img_shape", "64,64"])
    assert pipeline.choose_img_shape(args.config, args.img_shape) == (64, 64) and "note" not in capsys.readouterr().err


def test_a_cmyk_jpeg_source_keeps_its_colours(media, capsys, tmp_path, parity_dir):
    from PIL import Image
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(source_image(parity_dir)).convert("CMYK").save(path, quality=100)
    image = pipeline.read_source(path, (64, 64))
    assert np.abs(image * 255 - source_image(parity_dir).astype(float)).mean() < 4
    assert "alpha" not in capsys.readouterr().err


@pytest.mark.parametrize("threads", ["100000", "99999999999999999999999"])
def test_more_threads_than_anyone_has_is_refused_before_any_work(threads, media, capsys):
    with pytest.raises(SystemExit) as stop:  # was a hang (100000 threads) or a line about unpacking a long long
        run(capsys, media, "--threads", threads)
    assert stop.value.code == 2 and f"--threads must be 1 to {demo.MAX_THREADS}, got {threads}" in \
        capsys.readouterr().err
    assert not media["result_video"].exists()


def test_sources_that_are_not_images_say_what_they_are(media, capsys, tmp_path):
    (tmp_path / "frames").mkdir()
    assert_one_line_error(*run(capsys, media, source_image=tmp_path / "frames"), "is a folder, not an image")
    assert_one_line_error(*run(capsys, media, source_image=media["driving_video"]), "is a video, not an image")


def test_a_tiny_source_is_used_with_a_note(media, capsys, tmp_path):
    path = tmp_path / "dot.png"
    iio.imwrite(path, np.full((1, 1, 3), 200, np.uint8))
    code, lines = run(capsys, media, source_image=path)
    assert code == 0 and any(line.startswith("note:") and "1x1" in line and str(path) in line for line in lines)


def test_a_truncated_driving_video_is_animated_to_the_break_with_a_note(media, capsys, tmp_path):
    whole = tmp_path / "whole.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi", "-i",
                    "testsrc=size=64x64:rate=10:duration=6", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
                    str(whole)], check=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size * 6 // 10])
    code, lines = run(capsys, media, "--mode", "standard", driving_video=cut)
    notes = [line for line in lines if line.startswith("note:") and "ends early" in line]
    assert code == 0 and len(notes) == 1 and str(cut) in notes[0], lines
    assert f"frame {count_frames(media['result_video'])} of the 60" in notes[0]


@pytest.mark.slow
def test_a_variable_frame_rate_driving_video_keeps_its_duration(media, capsys, tmp_path):
    from test_media import write_vfr_clip
    from media import video_info
    driving = write_vfr_clip(tmp_path / "vfr.mp4")
    code, lines = run(capsys, media, "--mode", "standard", driving_video=driving)
    assert code == 0, lines
    result, source = video_info(media["result_video"]), video_info(driving)
    assert result.num_frames / result.fps == pytest.approx(source.duration, abs=1.5 / source.fps)


def test_precision_auto_is_the_default_and_float32_where_the_device_has_no_faster_one(media, capsys, tmp_path,
                                                                                      monkeypatch):
    import animate
    if animate.native_precisions("cpu"):
        pytest.skip("this CPU computes bf16 natively: auto measures it (the next test)")
    monkeypatch.setenv("MRAA_KERNELS", "measure")  # as a user's run: auto itself, kernels timed (a cache of ours)
    monkeypatch.setenv("MRAA_CACHE_DIR", str(tmp_path / "cache"))
    code, lines = run(capsys, media)
    assert code == 0 and not any(line.startswith("note: precision") for line in lines), lines
    pinned = tmp_path / "fp32.mp4"
    assert run(capsys, media, "--precision", "fp32", result_video=pinned)[0] == 0
    assert np.array_equal(iio.imread(media["result_video"]), iio.imread(pinned))  # the same frames, bit for bit


def test_precision_auto_says_what_it_measured_and_chose(media, capsys, monkeypatch, tmp_path):
    import animate
    monkeypatch.setenv("MRAA_KERNELS", "measure")
    monkeypatch.setenv("MRAA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(animate, "native_precisions", lambda device: ["bf16"])  # as on a CPU with AMX
    code, lines = run(capsys, media, "--mode", "relative")
    notes = [line for line in lines if line.startswith("note: precision auto: ")]
    assert code == 0 and len(notes) == 1, lines
    assert "dB from float32 on the first 4 frame(s)" in notes[0]


@pytest.mark.parametrize("argv, compile", [([], False), (["--compile"], "default"),
                                           (["--compile", "reduce-overhead"], "reduce-overhead")])
def test_compile_takes_an_optional_mode(argv, compile, media, monkeypatch):
    """``--compile`` alone is torch.compile's default mode; ``--compile reduce-overhead`` replays CUDA graphs."""
    requests = []
    monkeypatch.setattr(demo, "animate_files", lambda request, **kwargs: requests.append(request) or
                        request.result_video)
    paths = [arg for key, value in media.items() for arg in (f"--{key}", str(value))]
    assert demo.main(paths + ["--cpu", "--quiet", *argv]) == 0
    assert requests[0].compile == compile
