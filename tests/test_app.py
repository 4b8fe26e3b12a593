"""app.py: each safety property of the web page, its requests on the bundled model, and the page itself driven in
a real headless browser (Debian's chromium through chromium-driver)."""
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, require_app_module
from media import VideoWriter

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


require_app_module("gradio")
require_app_module("cv2")
import app  # noqa: E402

SOURCE, DRIVING = app.EXAMPLE


@pytest.fixture
def settings(tmp_path):
    return app.Settings(app.find_models([REPO_ROOT / "sup-mat"]), device="cpu", max_upload_mb=5, max_frames=20,
                        results=tmp_path / "results")


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


@pytest.mark.parametrize("argv, fragment", [(["--models", "EMPTY"], "no model found in EMPTY"),
                                             (["--device", "tpu"], "unknown device 'tpu'")])
def test_a_bad_command_line_is_one_error_line(argv, fragment, tmp_path, capsys):
    argv = [arg.replace("EMPTY", str(tmp_path)) for arg in argv]
    assert app.main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment.replace("EMPTY", str(tmp_path)) in lines[0]


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
    assert app.launch_options(app.parse_args(["--max_upload_mb", "5"]))["max_file_size"] == "5mb"


def test_frame_limit(settings, tmp_path):
    long_clip = write_clip(tmp_path / "long.mp4", 21)
    assert_one_line_error(request(settings, driving=long_clip)[2], "21 frames", "at most 20", "--max_frames")


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


@pytest.mark.parametrize("change, fragments", [
    ({"source": None}, ["no source image"]),
    ({"source": REPO_ROOT / "README.md"}, ["README.md"]),
    ({"driving": REPO_ROOT / "README.md"}, ["README.md"]),
    ({"crop": "box", "box": "1,2"}, ["crop box '1,2'", "LEFT,TOP,RIGHT,BOTTOM"]),
    ({"crop": "face"}, ["no face found", "choose the crop 'box'"]),
    ({"mode": "sideways"}, ["mode one of"]),
])
def test_bad_input_is_one_line_on_the_page(change, fragments, settings, clip):
    result, preview, status = request(settings, **{"driving": clip, **change})
    assert result is None and preview is None
    assert_one_line_error(status, *fragments)


def test_a_bug_is_one_line_on_the_page_and_a_traceback_in_the_log(settings, clip, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(app, "animate_files", broken)
    assert_one_line_error(request(settings, driving=clip)[2], "internal error", "KeyError")
    assert "Traceback" in capsys.readouterr().err


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
    """app.py in its own process on a free local port; its URL."""
    port = free_port()
    log = open(tmp_path / "app.log", "w")
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "app.py"), "--port", str(port), "--device", "cpu"],
                               cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.time() < deadline, (tmp_path / "app.log").read_text()
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


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
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    clip = write_clip(tmp_path / "clip.mp4", 8)
    browser.set_script_timeout(30)
    browser.get(served)
    wait = WebDriverWait(browser, 60)
    uploads = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "input[type=file]") or False)
    assert "Use via API" not in browser.page_source
    uploads[0].send_keys(str(SOURCE))
    uploads[1].send_keys(str(clip))
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#source img") and b.find_elements(By.CSS_SELECTOR,
                                                                                             "#driving video"))
    browser.find_element(By.ID, "animate").click()
    video = WebDriverWait(browser, 120).until(
        lambda b: next((v for v in b.find_elements(By.CSS_SELECTOR, "#result video") if v.get_attribute("src")),
                       False))
    status = browser.find_element(By.CSS_SELECTOR, "#status textarea").get_attribute("value")
    assert status.startswith("done"), status
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
