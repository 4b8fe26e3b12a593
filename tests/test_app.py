"""app.py: each safety property of the web page, its requests on the bundled model, and the page itself driven in
a real headless browser (Debian's chromium through chromium-driver)."""
import base64
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import tempfile
import uuid
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO_ROOT, require_app_module
from media import VideoWriter

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


require_app_module("gradio")
require_app_module("cv2")
import app  # noqa: E402
import gradio as gr  # noqa: E402

SOURCE, DRIVING = app.EXAMPLE


@pytest.fixture
def settings(tmp_path):
    return app.Settings(app.find_models([REPO_ROOT / "sup-mat"]), device="cpu", max_upload_mb=5, max_frames=20,
                        work_dir=tmp_path / "work")


@pytest.fixture
def clip(tmp_path):
    """The first 6 frames of the bundled driving video (12 fps)."""
    return write_clip(tmp_path / "clip.mp4", 6)


def write_clip(path, num_frames):
    frames = [frame for _, frame in zip(range(num_frames), iio.imiter(DRIVING))]
    with VideoWriter(path, 12) as writer:
        writer.write(np.stack(frames))
    return path


def request(settings, source=SOURCE, driving=None, model="puppets64", mode="avd", crop="none", box="",
            best=False, audio=False):
    return app.run_request(settings, str(source) if source else None, str(driving) if driving else None, model,
                           mode, crop, box, best, audio)


def assert_one_line_error(status, *fragments):
    assert status.startswith("error: ") and "\n" not in status and "Traceback" not in status, status
    for fragment in fragments:
        assert fragment in status, status


# ----------------------------------------------------------------------------------------------------------
# Safe by default


def test_listens_on_this_machine_only_and_makes_no_share_link_unless_asked():
    options = app.launch_options(app.parse_args([]))
    assert options["server_name"] == "127.0.0.1" and options["share"] is False
    assert options["show_error"] is False  # no exception text from Gradio itself
    assert "api" not in options["footer_links"]  # no "Use via API" link on the page
    options = app.launch_options(app.parse_args(["--host", "0.0.0.0", "--share", "--port", "8000"]))
    assert (options["server_name"], options["share"], options["server_port"]) == ("0.0.0.0", True, 8000)


@pytest.mark.parametrize("argv, fragment", [
    (["--models", "EMPTY"], "no model found in EMPTY"), (["--device", "tpu"], "unknown device 'tpu'"),
    *[(["--max_upload_mb", value], "--max_upload_mb") for value in ["nan", "inf", "1e10", "0", "-1", "abc"]],
    *[(["--max_frames", value], "--max_frames") for value in ["0.5", "nan", "0", "1e9"]],
    (["--port", "70000"], "--port"), (["--max_pixels", "nan"], "--max_pixels"),
    (["--max_frame_pixels", "-5"], "--max_frame_pixels"), (["--max_work_gb", "inf"], "--max_work_gb"),
    (["--work_dir", "EMPTY/file.txt/work"], "--work_dir EMPTY/file.txt/work cannot be used")])
def test_a_bad_command_line_is_one_error_line(argv, fragment, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("a file, not a folder")  # the work folder below it cannot be made
    argv = [arg.replace("EMPTY", str(tmp_path)) for arg in argv]
    assert app.main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment.replace("EMPTY", str(tmp_path)) in lines[0]


@pytest.mark.parametrize("host", ["127.0.0.1", "not a host"])
def test_a_port_in_use_or_a_host_not_ours_is_one_error_line(host, capsys):
    with socket.socket() as taken:  # was Gradio's OSError traceback
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert app.main(["--host", host, "--port", str(port), "--device", "cpu"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot serve the page on {host}:{port}"), lines
    assert "--port" in lines[0]


@pytest.mark.parametrize("value, limit", [("0.5", 2 ** 19), ("1.5", 3 * 2 ** 19), ("1e3", 1000 * 2 ** 20)])
def test_fractional_and_written_upload_limits_are_taken(value, limit):
    assert app.launch_options(app.parse_args(["--max_upload_mb", value]))["max_file_size"] == limit


def test_no_analytics(settings):
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert app.build_page(settings).analytics_enabled is False


def test_models_come_from_the_models_folders_only(tmp_path, settings, clip):
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(REPO_ROOT / "sup-mat" / "puppets64.pth", folder / "mine.pth")
    shutil.copy(REPO_ROOT / "config" / "puppets64.yaml", folder / "mine.yaml")
    (folder / "orphan.pth").write_bytes(b"no config beside it")
    assert set(app.find_models([folder])) == {"mine"}
    assert set(app.find_models([REPO_ROOT / "sup-mat", REPO_ROOT / "checkpoints"])) == {"puppets64"}
    for typed in [str(folder / "mine.pth"), "../sup-mat/puppets64.pth", "mine"]:
        assert_one_line_error(request(settings, driving=clip, model=typed)[2], "unknown model", "puppets64")


@pytest.mark.slow
def test_checkpoints_are_loaded_with_weights_only(settings, clip, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    result, _, status = request(settings, driving=clip)
    assert result and status.startswith("done"), status
    assert calls and all(flag is True for flag in calls)


def test_upload_size_limit(settings, clip, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(SOURCE.read_bytes() + bytes(6 * 2 ** 20))  # a 6 MB file against a 5 MB limit
    assert_one_line_error(request(settings, source=big, driving=clip)[2], "source image is 6.0 MB", "5 MB",
                          "--max_upload_mb")
    assert app.launch_options(app.parse_args(["--max_upload_mb", "5"]))["max_file_size"] == 5 * 2 ** 20


def test_frame_limit(settings, tmp_path):
    long_clip = write_clip(tmp_path / "long.mp4", 21)
    assert_one_line_error(request(settings, driving=long_clip)[2], "21 frames", "at most 20", "--max_frames")


@pytest.mark.slow
def test_two_users_at_once_get_their_own_results(settings, tmp_path):
    clips = [write_clip(tmp_path / "a.mp4", 4), write_clip(tmp_path / "b.mp4", 7)]
    results = [None, None]

    def press(i):
        results[i] = request(settings, driving=clips[i])

    threads = [threading.Thread(target=press, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    paths = [result[0] for result in results]
    assert all(paths) and paths[0] != paths[1], results
    assert [len(list(iio.imiter(path))) for path in paths] == [4, 7]  # each user's own frames
    alone = request(settings, driving=clips[0])[0]
    assert np.array_equal(np.stack(list(iio.imiter(alone))), np.stack(list(iio.imiter(paths[0]))))  # the same


@pytest.mark.parametrize("change, fragments", [
    ({"source": None}, ["no source image", "example under the uploads"]),
    ({"source": REPO_ROOT / "README.md"}, ["README.md"]),
    ({"driving": REPO_ROOT / "README.md"}, ["README.md"]),
    ({"crop": "box", "box": "1,2"}, ["crop box '1,2'", "LEFT,TOP,RIGHT,BOTTOM"]),
    ({"crop": "box", "box": "0,0," + "9" * 400 + ",5"}, ["crop box '0,0,99", "...'", "LEFT,TOP,RIGHT,BOTTOM"]),
    ({"crop": "box", "box": "\0" * 10_000}, ["crop box '", "...'"]),  # was a 40 000-character status
    ({"crop": "box", "box": "0,0,99999,5"}, ["crop box 0,0,99999,5: outside"]),  # not the demo's "--crop"
    ({"crop": "face"}, ["no face found", "choose the crop 'box'"]),
    ({"mode": "sideways"}, ["mode one of"]),
])
def test_bad_input_is_one_line_on_the_page(change, fragments, settings, clip):
    result, preview, status = request(settings, **{"driving": clip, **change})
    assert result is None and preview is None
    assert_one_line_error(status, *fragments)
    assert len(status) < 400 and "--crop" not in status, status


def test_a_bug_is_one_line_on_the_page_and_a_traceback_in_the_log(settings, clip, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(app, "animate_files", broken)
    assert_one_line_error(request(settings, driving=clip)[2], "internal error", "KeyError")
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.slow
def test_a_box_drawn_by_two_clicks(settings, clip):
    class Click:
        def __init__(self, x, y):
            self.index = (x, y)

    box, crop = app.box_from_clicks("", Click(40, 30))
    box, crop = app.box_from_clicks(box, Click(10, 5))
    assert (box, crop) == ("10,5,40,30", "box")
    result, preview, status = request(settings, driving=clip, crop="box", box=box)
    assert status.startswith("done") and iio.imread(preview).shape[:2] == (64, 64)
    assert iio.improps(result).shape[1:] == (64, 64, 3)


# ----------------------------------------------------------------------------------------------------------
# The work folder: the page's own, and only its request folders are ever removed


def age(path, seconds):
    """Set a path's times ``seconds`` back (a link's own times, never its target's)."""
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_the_default_work_folder_is_new_and_a_linked_old_one_is_never_touched(tmp_path, monkeypatch, clip):
    """issue 24.2: with $TMPDIR/mraa-app a link to a thesis, a request deleted old-thesis/chapter1.tex."""
    thesis = tmp_path / "home" / "old-thesis"
    thesis.mkdir(parents=True)
    (thesis / "chapter1.tex").write_text("\\chapter{One}")
    age(thesis, 2 * 3600)
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "mraa-app").symlink_to(tmp_path / "home")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    settings = app.Settings(app.find_models([REPO_ROOT / "sup-mat"]), device="cpu", max_frames=20)
    assert settings.work_dir.parent == tmp_path / "tmp" and settings.work_dir.name.startswith("mraa-app-")
    assert not settings.work_dir.is_symlink() and settings.work_dir.stat().st_mode & 0o777 == 0o700
    assert request(settings, driving=clip)[2].startswith("done")
    assert (thesis / "chapter1.tex").read_text() == "\\chapter{One}"


def test_the_sweep_removes_only_its_own_old_request_folders_and_follows_no_link(settings):
    work, outside = settings.work_dir, settings.work_dir.parent / "outside"
    for folder in [work / "request-old", work / "request-new", work / "old-thesis", outside / "request-x"]:
        folder.mkdir(parents=True)
        (folder / "data.txt").write_text("keep me" if folder.name != "request-old" else "old result")
    (work / "request-link").symlink_to(outside)
    (work / "request-file").write_text("a file")
    for path in [work / "request-old", work / "old-thesis", outside, outside / "request-x", work / "request-link",
                 work / "request-file"]:
        age(path, 2 * 3600)
    app.sweep_work_dir(settings)
    assert sorted(p.name for p in work.iterdir()) == ["old-thesis", "request-file", "request-link", "request-new"]
    assert (outside / "request-x" / "data.txt").read_text() == "keep me"


def test_the_work_folder_is_bounded_in_size_oldest_first_never_one_in_use(settings):
    settings.max_work_gb = 2500 / 1e9  # 2500 bytes
    folders = []
    for i, name in enumerate(["request-a", "request-b", "request-c", "request-d"]):
        folder = settings.work_dir / name
        folder.mkdir()
        (folder / "result.mp4").write_bytes(bytes(1000))
        age(folder, 100 - 10 * i)  # a oldest, d newest; all younger than an hour
        folders.append(folder)
    settings.busy.add(str(folders[0]))  # a request still running there
    app.sweep_work_dir(settings)
    assert sorted(p.name for p in settings.work_dir.iterdir()) == ["request-a", "request-d"]


@pytest.mark.parametrize("problem", ["link", "open to others", "not a folder"])
def test_a_work_folder_that_is_not_ours_is_one_error_line_at_launch(problem, tmp_path, capsys):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("text")
    work = tmp_path / "work"
    if problem == "link":
        work.symlink_to(mine)
    elif problem == "open to others":
        work.mkdir(mode=0o755)
        work.chmod(0o755)
    else:
        work.write_text("a file")
    assert app.main(["--work_dir", str(work), "--device", "cpu"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --work_dir {work}")
    assert {"link": "symbolic link", "open to others": "open to other users (mode 755)",
            "not a folder": "not a folder"}[problem] in lines[0]
    assert (mine / "chapter1.tex").read_text() == "text"


@pytest.mark.slow
def test_failed_requests_leave_no_request_folder(settings, clip):
    for change in [{"crop": "box", "box": "1,2"}, {"source": REPO_ROOT / "README.md"}, {"crop": "face"}]:
        assert request(settings, **{"driving": clip, **change})[2].startswith("error: ")
    assert not list(settings.work_dir.glob("request-*"))
    result, _, status = request(settings, driving=clip)
    assert status.startswith("done") and [p.name for p in settings.work_dir.glob("request-*")] == \
        [Path(result).parent.name]


# ----------------------------------------------------------------------------------------------------------
# Pixels, bytes and files as they were sent


def png_header(path, width, height):
    """A PNG that says it is width x height (its header only: what a decompression bomb shows before decoding)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) +
                     chunk(b"IEND", b""))
    return path


def ffmpeg_video(path, width, height, frames):
    """A black H.264 video (made by ffmpeg: small files with large frames)."""
    import imageio_ffmpeg
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                    f"color=black:s={width}x{height}:r=12", "-frames:v", str(frames), "-c:v", "libx264",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def test_the_default_pixel_limits_pass_phone_photos_and_videos():
    assert 5712 * 4284 <= app.MAX_PIXELS < 6000 * 6000  # a 24 MP iPhone photo passes; a 36 MP bomb does not
    assert app.MAX_FRAME_PIXELS == 3840 * 2160  # 4K UHD, what a phone records


def test_images_beyond_the_pixel_limit_are_refused_before_decoding(settings, clip, tmp_path):
    """issue 24.5: a 105 KB 6000x6000 PNG took 26 s and 1.2 GB."""
    bomb = tmp_path / "bomb.png"
    Image.new("L", (6000, 6000)).save(bomb)
    start = time.perf_counter()
    status = request(settings, source=bomb, driving=clip)[2]
    assert time.perf_counter() - start < 5, "refused from the header, before decoding"
    assert_one_line_error(status, "bomb.png is 6000x6000 pixels", "at most 25 megapixels")
    status = request(settings, source=png_header(tmp_path / "huge.png", 20000, 20000), driving=clip)[2]
    assert_one_line_error(status, "huge.png has more pixels than")


@pytest.mark.slow
def test_video_frames_beyond_the_pixel_limit_are_refused_before_decoding(settings, clip, tmp_path):
    big = ffmpeg_video(tmp_path / "big.mp4", 4096, 4096, 2)
    assert big.stat().st_size < 100_000  # a small file
    start = time.perf_counter()
    assert_one_line_error(request(settings, driving=big)[2], "big.mp4 has frames of 4096x4096", "8.2944 megapixels")
    assert time.perf_counter() - start < 10
    # 4K frames pass, but fewer of them: decoded pixels at most --max_frames (20) frames of full HD
    uhd = ffmpeg_video(tmp_path / "uhd.mp4", 3840, 2160, 6)
    assert_one_line_error(request(settings, driving=uhd)[2], "6 frames of 3840x2160", "--max_frames")


class Payload:
    def __init__(self, path=None, url=None):
        self.path, self.url = path, url


def data_url(data, kind="image/png"):
    return f"data:{kind};base64," + base64.b64encode(data).decode()


def test_an_upload_is_checked_and_used_as_the_bytes_that_were_sent(settings, clip, tmp_path):
    """issue 24.6: a 2.4 MB PNG sent as a data: URL passed a 1 MB limit (Gradio re-encoded it first)."""
    noisy = tmp_path / "noisy.png"
    Image.fromarray((np.random.default_rng(0).random((900, 900, 3)) * 255).astype(np.uint8)).save(noisy)
    assert noisy.stat().st_size > 2 * 2 ** 20
    component = app.as_sent(gr.Image(type="filepath", image_mode=None), "source image", 2 ** 20)
    refused = component.preprocess(Payload(url=data_url(noisy.read_bytes())))
    assert isinstance(refused, app.Refused)
    assert_one_line_error(request(settings, source=refused, driving=clip)[2], "source image is 2.", "at most 1 MB")
    component = app.as_sent(gr.Image(type="filepath", image_mode=None), "source image", 5 * 2 ** 20)
    kept = component.preprocess(Payload(url=data_url(noisy.read_bytes())))
    assert Path(kept).read_bytes() == noisy.read_bytes()  # byte for byte, not re-encoded
    assert component.preprocess(Payload(path=str(noisy))) == str(noisy)  # an upload: the file itself


def sixteen_bit_grey(path):
    """The example's source as a 16-bit grey PNG (Gradio used to turn it white)."""
    grey = np.asarray(Image.open(SOURCE).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey).save(path)
    assert Image.open(path).mode.startswith("I;16")
    return path


@pytest.mark.slow
def test_a_16_bit_png_is_animated_as_it_is_with_the_demos_notes(settings, clip, tmp_path):
    """issue 24.8: a 16-bit PNG was animated as a white image, and the grey and alpha notes were lost."""
    path = sixteen_bit_grey(tmp_path / "deep.png")
    component = app.as_sent(gr.Image(type="filepath", image_mode=None), "source image", 2 ** 20)
    assert component.preprocess(Payload(path=str(path))) == str(path)
    result, _, status = request(settings, source=path, driving=clip)
    assert status.startswith("done") and "deep.png is a grey-scale image" in status, status
    first = next(iter(iio.imiter(result))).astype(float) / 255
    assert first.mean() < 0.9  # not white
    rgba = tmp_path / "clear.png"
    Image.open(SOURCE).convert("RGBA").save(rgba)
    assert "clear.png has an alpha channel" in request(settings, source=rgba, driving=clip)[2]


def has_absolute_path(text):
    return re.search(r"(^|[\s('\"])/", text) is not None


@pytest.mark.slow
def test_the_status_shows_file_names_not_server_folders(settings, clip, tmp_path):
    path = sixteen_bit_grey(tmp_path / "deep.png")
    for status in [request(settings, source=path, driving=clip)[2],
                   request(settings, source=REPO_ROOT / "README.md", driving=clip)[2],
                   request(settings, driving=clip, crop="box", box="2,2,40,40")[2]]:
        assert not has_absolute_path(status) and str(tmp_path) not in status and str(REPO_ROOT) not in status, status
    assert app.file_names_only("error: /tmp/gradio/ab12/my photo.png: cannot read image") == \
        "error: my photo.png: cannot read image"
    assert app.file_names_only("see https://github.com/a/b and 1/2") == "see https://github.com/a/b and 1/2"


def test_the_page_shows_the_models_card(settings):
    line = app.model_card(settings, "puppets64")
    assert "puppets" in line and "not for real photographs" in line
    page = app.build_page(settings).get_config_file()
    texts = [c["props"].get("value") for c in page["components"] if c["type"] == "markdown"]
    assert line in texts and not any("Upload a photo" in (t or "") for t in texts)
    change = next(d for d in page["dependencies"] if d["targets"][0][1] == "change")
    assert change["queue"] is False  # the card follows the model at once, even while the queue is busy


@pytest.mark.parametrize("typed", ["abc,def", "1,2,3,4", "", "7"])
def test_a_click_after_any_typed_box_starts_a_new_one(typed):
    """issue 24.11: 'abc,def' typed in the box then a click on the photo gave a ValueError."""
    class Click:
        def __init__(self, x, y):
            self.index = (x, y)

    box, crop = app.box_from_clicks(typed, Click(40, 30))
    assert (box, crop) == ("40,30", "box")
    assert app.box_from_clicks(box, Click(10, 5)) == ("10,5,40,30", "box")


@pytest.mark.parametrize("change, fragments", [
    ({"source": "TEXT"}, ["notes.png", "cannot read image"]),
    ({"source": "CLIP"}, ["clip.mp4 is a video, not an image"]),
])
def test_files_gradio_used_to_refuse_are_one_line(change, fragments, settings, clip, tmp_path):
    """issue 24.11: a text file renamed .png, a video given as the photo: Gradio's bare "Error" before."""
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    source = {"TEXT": text, "CLIP": clip}[change["source"]]
    assert_one_line_error(request(settings, source=source, driving=clip)[2], *fragments)


@pytest.mark.parametrize("host, origin, refused", [
    ("127.0.0.1:7860", None, False), ("localhost:7860", "http://localhost:7860", False), ("[::1]:7860", None, False),
    ("192.168.1.5:7860", "http://192.168.1.5:7860", False),  # an address: rebinding needs a name
    ("evil.example:7860", None, True), ("", None, True), ("localhost:7860", "http://evil.example", True),
    ("localhost:7860", "null", True), ("localhost:7860", "http://localhost:8000", True),
    ("127.0.0.1:7860", "http://localhost:7860", True)])
def test_host_and_origin_rules(host, origin, refused):
    args = app.parse_args([])
    check = app.HostAndOriginCheck(None, names=app.accepted_host_names(args))
    headers = {"host": host, **({"origin": origin} if origin else {})}
    assert bool(check.refusal(headers)) == refused
    names = app.accepted_host_names(app.parse_args(["--host", "0.0.0.0", "--allowed_hosts", "Studio.lan"]))
    assert "studio.lan" in names and socket.gethostname().lower() in names


# ----------------------------------------------------------------------------------------------------------
# A real server, over plain HTTP


def start_server(folder, *flags):
    """app.py in its own process on a free local port, logging to folder/app.log: (process, port)."""
    port = free_port()
    log = open(folder / "app.log", "w")
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "app.py"), "--port", str(port), "--device", "cpu",
                                *flags], cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    log.close()
    deadline = time.time() + 90
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail((folder / "app.log").read_text())
            time.sleep(0.5)


def stop_server(process):
    process.terminate()
    process.wait(timeout=30)


def call(port, method, path, body=None, headers=None):
    """(status, headers, body) of one request to the local server."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def upload(port, path, headers=None):
    """POST a file to Gradio's upload route as a browser does: (status, its path on the server or the body)."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{Path(path).name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + Path(path).read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    status, _, answer = call(port, "POST", "/gradio_api/upload", body,
                             {"Content-Type": f"multipart/form-data; boundary={boundary}", **(headers or {})})
    return status, json.loads(answer)[0] if status == 200 else answer


def file_data(server_path, name):
    return {"path": server_path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def press_animate(port, source, driving, model="mine", crop="none", box="", fails=False):
    """The Animate button through Gradio's queue, as the page calls it: its three outputs (with ``fails``, the
    message of the failure)."""
    config = json.loads(call(port, "GET", "/config")[2])
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "animate")
    session = uuid.uuid4().hex
    join = {"data": [source, driving, model, "avd", crop, box, False, False], "fn_index": fn_index,
            "session_hash": session, "event_data": None, "trigger_id": None}
    status, _, answer = call(port, "POST", "/gradio_api/queue/join", json.dumps(join).encode(),
                             {"Content-Type": "application/json"})
    assert status == 200, answer
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=180)
    try:
        connection.request("GET", f"/gradio_api/queue/data?session_hash={session}")
        response = connection.getresponse()
        for line in response:
            if line.startswith(b"data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    if fails:
                        assert not message.get("success"), message
                        return message["output"].get("error")
                    assert message.get("success"), message
                    return message["output"]["data"]
    finally:
        connection.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the HTTP tests: models folder with a private file and a .env beside the model, 1 MB uploads,
    its own work folder."""
    folder = tmp_path_factory.mktemp("server")
    models = folder / "models"
    models.mkdir()
    shutil.copy(REPO_ROOT / "sup-mat" / "puppets64.pth", models / "mine.pth")
    shutil.copy(REPO_ROOT / "config" / "puppets64.yaml", models / "mine.yaml")
    (models / "private.pth").write_bytes(b"PRIVATE-WEIGHTS")
    (models / ".env").write_text("API_KEY=SECRET-KEY\n")
    process, port = start_server(folder, "--models", str(models), "--max_upload_mb", "1",
                                 "--work_dir", str(folder / "work"))
    clip = write_clip(folder / "clip.mp4", 4)
    try:
        yield {"port": port, "folder": folder, "models": models, "clip": file_data(upload(port, clip)[1], "clip.mp4")}
    finally:
        stop_server(process)


@pytest.mark.slow
def test_only_the_pages_own_files_are_served(server):
    """issue 24.4: /gradio_api/file=<a models folder's file> served sup-mat/private.pth or .env."""
    port, models = server["port"], server["models"]
    for path in [models / "private.pth", models / ".env", models / "mine.pth", models / "mine.yaml",
                 REPO_ROOT / "sup-mat" / "puppets64.pth", REPO_ROOT / "sup-mat" / "puppets64.card.json",
                 REPO_ROOT / "config" / "puppets64.yaml", REPO_ROOT / "sup-mat" / "source.png", REPO_ROOT / "app.py",
                 server["folder"] / "app.log"]:
        status, _, body = call(port, "GET", f"/gradio_api/file={path}")
        assert status in (403, 404) and b"SECRET-KEY" not in body and b"PRIVATE-WEIGHTS" not in body, (path, status)
    config = json.loads(call(port, "GET", "/config")[2])
    samples = next(c for c in config["components"] if c["type"] == "dataset")["props"]["samples"][0]
    for sample in samples:  # the example is served, from Gradio's cache
        status, _, body = call(port, "GET", "/gradio_api/file=" + sample["path"])
        assert status == 200 and len(body) > 1000


@pytest.mark.slow
def test_a_foreign_host_or_origin_is_refused(server):
    """issue 24.7: Host: evil.example and cross-origin uploads were served (DNS rebinding drives the page)."""
    port = server["port"]
    status, _, body = call(port, "GET", "/", headers={"Host": f"evil.example:{port}"})
    assert status == 403 and b"<html" not in body.lower() and b"evil.example" in body
    assert call(port, "GET", "/config", headers={"Host": f"evil.example:{port}"})[0] == 403
    for host in [f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"]:
        assert call(port, "GET", "/", headers={"Host": host})[0] == 200, host
    for origin in ["http://evil.example", f"http://evil.example:{port}", "null", f"http://localhost:{port + 1}"]:
        status, body = upload(port, SOURCE, {"Origin": origin})
        assert status == 403 and b"refused" in body, origin
        status, _, _ = call(port, "POST", "/gradio_api/queue/join", b"{}",
                            {"Origin": origin, "Content-Type": "application/json"})
        assert status == 403, origin
    assert upload(port, SOURCE, {"Origin": f"http://127.0.0.1:{port}"})[0] == 200  # the page itself


@pytest.mark.slow
def test_uploads_are_limited_as_sent(server, tmp_path):
    """issue 24.6: a 2.4 MB PNG as a base64 data: URL passed a 1 MB limit."""
    port = server["port"]
    noisy = tmp_path / "noisy.png"
    Image.fromarray((np.random.default_rng(0).random((900, 900, 3)) * 255).astype(np.uint8)).save(noisy)
    assert noisy.stat().st_size > 2 * 2 ** 20
    source = {"url": data_url(noisy.read_bytes()), "path": None, "meta": {"_type": "gradio.FileData"}}
    result, preview, status = press_animate(port, source, server["clip"])
    assert result is None and status.startswith("error: the source image is 2.") and "at most 1 MB" in status
    assert upload(port, noisy)[0] == 413  # the upload route stops it too


@pytest.mark.slow
def test_uploads_reach_the_pipeline_as_they_were_sent(server, tmp_path):
    """issues 24.8 and 24.11: a 16-bit PNG animated white; a text file renamed .png, a video as the photo and a
    20000x20000 PNG got a bare "Error" and no status."""
    port, clip = server["port"], server["clip"]
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    cases = [(sixteen_bit_grey(tmp_path / "deep.png"), "done: mine, avd mode, crop none;"),
             (text, "error: cannot read image notes.png"),
             (write_clip(tmp_path / "walk.mp4", 2), "error: walk.mp4 is a video"),
             (png_header(tmp_path / "huge.png", 20000, 20000), "error: image huge.png has more pixels")]
    for path, expected in cases:
        status, server_path = upload(port, path)
        assert status == 200
        result, _, line = press_animate(port, file_data(server_path, path.name), clip)
        assert line.startswith(expected) and "\n" not in line and not has_absolute_path(line), line
        if line.startswith("done"):
            assert "deep.png is a grey-scale image" in line, line
            _, _, video = call(port, "GET", (result.get("video") or result)["url"].split(str(port), 1)[-1])
            (tmp_path / "result.mp4").write_bytes(video)
            assert next(iter(iio.imiter(tmp_path / "result.mp4"))).mean() / 255 < 0.9  # not white
    work = server["folder"] / "work"
    assert len(list(work.glob("request-*"))) == 1  # the three failed requests left no folder


@pytest.mark.slow
def test_the_server_reads_no_file_that_was_not_uploaded_to_it(server, tmp_path):
    """The uploads are taken as sent (preprocess replaced): Gradio's own check that an API call's file was uploaded
    must still come first, or the call could name any image of the server's and get it back animated."""
    port, clip = server["port"], server["clip"]
    private = tmp_path / "private.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(private)
    uploads = server["folder"] / "work" / "uploads"
    for path in [private, SOURCE, uploads / ".." / ".." / private.relative_to(private.anchor), "/etc/passwd"]:
        press_animate(port, file_data(str(path), "face.png"), clip, fails=True)
    press_animate(port, clip, file_data(str(private), "walk.mp4"), fails=True)  # refused before any work


@pytest.mark.slow
def test_the_server_fetches_nothing_named_by_a_url(server):
    source = file_data("http://198.51.100.7/face.png", "face.png")  # Gradio would download it (TEST-NET-2)
    error = press_animate(server["port"], source, server["clip"], fails=True)
    assert "upload the file; this page fetches nothing" in error and "\n" not in error


@pytest.mark.slow
def test_the_server_says_its_own_share_flag(server):
    log = (server["folder"] / "app.log").read_text()
    assert "share=True" not in log and "--share" in log and f"127.0.0.1:{server['port']}" in log


# ----------------------------------------------------------------------------------------------------------
# The page in a real browser


def _require_browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        message = f"{' and '.join(missing)} missing: apt-get install -y chromium chromium-driver"
        if os.environ.get("MRAA_REQUIRE_APP") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return require_app_module("selenium.webdriver")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser(tmp_path):
    webdriver = _require_browser()
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                 "--window-size=1280,1500"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def served(tmp_path):
    """app.py in its own process on a free local port, with its own work folder; its URL."""
    process, port = start_server(tmp_path, "--work_dir", str(tmp_path / "work"))
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop_server(process)


PLAY = """
const video = arguments[0], done = arguments[arguments.length - 1];
const report = () => done({duration: video.duration, time: video.currentTime, width: video.videoWidth,
                           error: video.error && video.error.code});
const play = () => { video.muted = true;
                     video.play().then(() => setTimeout(report, 700), e => done({error: String(e)})); };
if (video.readyState >= 1) play(); else { video.addEventListener('loadedmetadata', play); setTimeout(report, 15000); }
"""


@pytest.mark.slow
def test_the_page_animates_an_upload_in_a_real_browser(browser, served, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    clip = write_clip(tmp_path / "clip.mp4", 8)
    browser.set_script_timeout(30)
    browser.get(served)
    wait = WebDriverWait(browser, 60)
    uploads = wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "input[type=file]")) >= 2
                         and b.find_elements(By.CSS_SELECTOR, "input[type=file]"))
    assert "Use via API" not in browser.page_source and "Upload a photo" not in browser.page_source
    assert "not for real photographs" in browser.find_element(By.ID, "card").text  # the model's card, beside it
    uploads[0].send_keys(str(sixteen_bit_grey(tmp_path / "deep.png")))  # Gradio used to make it white
    uploads[1].send_keys(str(clip))
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#source img") and b.find_elements(By.CSS_SELECTOR,
                                                                                             "#driving video"))
    # A box typed wrong, then two clicks on the photo: a new box from the clicks (a ValueError before)
    box = browser.find_element(By.CSS_SELECTOR, "#box textarea, #box input")
    box.send_keys("abc,def")
    wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#crop input[value=box]").is_selected())
    image = browser.find_element(By.CSS_SELECTOR, "#source img")
    for dx, dy in [(-20, -20), (20, 20)]:  # within the 64x64 picture, drawn at its size
        ActionChains(browser).move_to_element_with_offset(image, dx, dy).click().perform()
        time.sleep(1)
    wait.until(lambda b: len(box.get_attribute("value").split(",")) == 4)
    assert all(v.isdigit() for v in box.get_attribute("value").split(",")), box.get_attribute("value")
    browser.find_element(By.CSS_SELECTOR, "#crop input[value=none]").click()
    browser.find_element(By.ID, "animate").click()
    video = WebDriverWait(browser, 120).until(
        lambda b: next((v for v in b.find_elements(By.CSS_SELECTOR, "#result video") if v.get_attribute("src")),
                       False))
    status = browser.find_element(By.CSS_SELECTOR, "#status textarea").get_attribute("value")
    assert status.startswith("done") and "deep.png is a grey-scale image" in status, status
    assert not has_absolute_path(status), status
    played = browser.execute_async_script(PLAY, video)
    assert played["error"] is None, played
    assert played["duration"] == pytest.approx(8 / 12, abs=0.1)  # 8 frames at 12 fps
    assert played["time"] > 0 and played["width"] == 64  # it plays
    if os.environ.get("MRAA_SCREENSHOT"):  # docs/app.png: MRAA_SCREENSHOT=docs/app.png pytest -k real_browser
        browser.save_screenshot(os.environ["MRAA_SCREENSHOT"])


def test_the_screenshot_in_the_readme_is_small():
    screenshot = REPO_ROOT / "docs" / "app.png"
    assert screenshot.exists() and screenshot.stat().st_size < 300 * 1024
    assert iio.improps(screenshot).shape[1] >= 1000  # a whole page, readable
