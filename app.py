"""A local web page that animates a photo with the motion of a video (Gradio).

    pip install -r requirements-app.txt
    python app.py                      # then open http://127.0.0.1:7860
    python app.py --port 8000 --models checkpoints/ --device cuda --max_upload_mb 50 --max_frames 600

Safe by default: it listens on 127.0.0.1 only (``--host 0.0.0.0`` to serve a network) and answers only requests
for the host names it was started for, from its own pages (no DNS rebinding, no cross-site upload); it makes no
public share link (unless ``--share``) and sends no analytics. Models are read only from the models folders (a
checkpoint and its config, picked by name on the page, never a typed path), with ``weights_only`` loading; only
the example's two files and results are served, never a models folder. Uploads are limited in size (the bytes
that were sent), pixels and frames before anything is decoded, and the page hands the pipeline the file that was
uploaded, never a re-encoded copy. Every request writes into its own new ``request-*`` folder of a work folder
that is the page's own (made for it, or checked: a folder of ours, not a link, mode 700); only those folders are
ever removed, by age and by total size.
"""
import argparse
import base64
import binascii
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import urlsplit

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # the machine may be offline, and a user's page is private

import gradio as gr  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402

import cropping  # noqa: E402
from checkpoint import CheckpointError  # noqa: E402
from config import ConfigError  # noqa: E402
from errors import one_line, signals_as_interrupts  # noqa: E402
from media import MediaError, check_pixels, video_info  # noqa: E402
from model_cards import card_for, card_path  # noqa: E402
from pipeline import InputError, Request, animate_files  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_MODELS = ("sup-mat", "checkpoints")
CHECKPOINT_EXTENSIONS = (".pth", ".pt", ".pth.tar", ".tar")
EXAMPLE = (REPO_ROOT / "sup-mat" / "source.png", REPO_ROOT / "sup-mat" / "driving.mp4")
MODES = ("avd", "relative", "standard")
CROPS = ("none", "auto", "face", "person", "box")
KEEP_RESULTS_S = 3600  # request folders older than this are removed when a new request starts
REQUEST_PREFIX = "request-"  # the only folders of the work folder that the page ever removes
# Pixel limits, checked from headers before anything is decoded (decoding and resizing cost time in proportion):
# 25 megapixels pass a phone's photo (12 MP; 24 MP on recent iPhones, 5712x4284) and refuse a 6000x6000 bomb;
# video frames up to 4K UHD, what a phone records at most; and a video's decoded pixels at most --max_frames
# frames of full HD, so a 4K video may have a quarter of them.
MAX_PIXELS = 25_000_000
MAX_FRAME_PIXELS = 3840 * 2160
BUDGET_FRAME_PIXELS = 1920 * 1080


class AppError(ValueError):
    """Input the page cannot use; the message is one line a user can act on."""


# ----------------------------------------------------------------------------------------------------------
# Models, limits and requests


def find_models(folders):
    """{name: (config, checkpoint)} for every checkpoint in ``folders`` with a config: ``NAME.yaml`` beside it,
    else ``config/NAME.yaml`` of this repository. Names are what the page offers; paths never come from it."""
    models = {}
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for checkpoint in sorted(folder.iterdir()):
            if not checkpoint.is_file() or not checkpoint.name.lower().endswith(CHECKPOINT_EXTENSIONS):
                continue
            stem = checkpoint.name[:-len(next(e for e in CHECKPOINT_EXTENSIONS if checkpoint.name.lower().endswith(e)))]
            config = next((c for c in (folder / f"{stem}.yaml", REPO_ROOT / "config" / f"{stem}.yaml") if c.is_file()),
                          None)
            if config is not None:
                name = stem if stem not in models else f"{folder.name}/{stem}"
                models[name] = (config.resolve(), checkpoint.resolve())
    return models


def model_card(settings, name):
    """The chosen model's card as one line for the page (what it was trained on, what it animates)."""
    if name not in settings.models:
        return ""
    config, checkpoint = settings.models[name]
    card = card_for(checkpoint, config)
    return f"**{name}**: " + (card.line() if card is not None else "no card says what it was trained on or what it "
                              f"animates (a {card_path(checkpoint).name} beside the checkpoint would)")


@dataclass
class Settings:
    """What the command line fixes for every request."""
    models: dict  # name -> (config, checkpoint)
    device: str = "auto"
    max_upload_mb: float = 100.0
    max_frames: int = 1000
    work_dir: Path = None  # the page's own folder (see open_work_dir); None: a new one in the system's temp folder
    max_pixels: int = MAX_PIXELS
    max_frame_pixels: int = MAX_FRAME_PIXELS
    max_work_gb: float = 10.0
    busy: set = field(default_factory=set)  # request folders in use: never swept
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        self.work_dir = open_work_dir(self.work_dir)


def open_work_dir(folder=None):
    """The page's work folder: a new private one (``mkdtemp``), or ``folder`` made private (mode 700) when it does
    not exist, or checked to be ours when it does: a real folder (not a link), of our uid, closed to others, and
    writable. Raises AppError with one line otherwise."""
    if folder is None:
        return Path(tempfile.mkdtemp(prefix="mraa-app-"))
    folder = Path(folder).absolute()
    try:
        if not os.path.lexists(folder):
            folder.parent.mkdir(parents=True, exist_ok=True)
            folder.mkdir(mode=0o700)
        info = folder.lstat()
        if os.path.islink(folder):
            raise AppError(f"--work_dir {folder} is a symbolic link: give a real folder (the page removes its old "
                           "requests there and never follows a link)")
        if not folder.is_dir():
            raise AppError(f"--work_dir {folder} is not a folder")
        if info.st_uid != os.getuid():
            raise AppError(f"--work_dir {folder} belongs to another user (uid {info.st_uid}): give a folder of yours")
        if info.st_mode & 0o077:
            raise AppError(f"--work_dir {folder} is open to other users (mode {info.st_mode & 0o777:o}): "
                           f"chmod 700 it, or give a new folder")
        probe, name = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(probe)
        os.remove(name)
    except OSError as error:
        raise AppError(f"--work_dir {folder} cannot be used: {error.strerror or error}") from None
    return folder


def folder_bytes(folder):
    """Bytes of the files under ``folder``; links are counted as links, never followed."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def sweep_work_dir(settings, now=None):
    """Remove the page's own finished request folders that are older than an hour, then the oldest ones while
    the rest hold more than --max_work_gb. Nothing else of the work folder is touched and no link is followed."""
    now = time.time() if now is None else now
    folders = []
    with os.scandir(settings.work_dir) as entries:
        for entry in entries:
            try:
                if entry.name.startswith(REQUEST_PREFIX) and entry.is_dir(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    if info.st_uid == os.getuid():
                        folders.append((info.st_mtime, entry.path, folder_bytes(entry.path)))
            except OSError:  # removed by another request meanwhile
                pass
    total = sum(size for _, _, size in folders)  # those in use count too
    for mtime, path, size in sorted(folders):
        if path in settings.busy:
            continue
        if now - mtime > KEEP_RESULTS_S or total > settings.max_work_gb * 1e9:
            shutil.rmtree(path, ignore_errors=True)  # never follows links inside
            total -= size


def new_request_folder(settings):
    """A new folder for one request's files (never shared with another request); old ones are swept first."""
    with settings.lock:
        sweep_work_dir(settings)
        folder = tempfile.mkdtemp(prefix=REQUEST_PREFIX, dir=settings.work_dir)
        settings.busy.add(folder)
    return Path(folder)


def release_request_folder(settings, folder, keep):
    with settings.lock:
        settings.busy.discard(str(folder))
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


class Refused(str):
    """An upload refused before it was stored; its value is the one line that says why."""


def check_upload(path, what, settings):
    """The uploaded file's path, after checking the size of the bytes that were sent."""
    if isinstance(path, Refused):
        raise AppError(str(path))
    if not path:
        raise AppError(f"no {what}: upload one, or pick the bundled example under the uploads")
    if not os.path.isfile(path):
        raise AppError(f"the {what} {Path(path).name} was not received: upload it again")
    size_mb = os.path.getsize(path) / 2 ** 20
    if size_mb > settings.max_upload_mb:
        raise AppError(too_big(what, size_mb, settings.max_upload_mb))
    return Path(path)


def too_big(what, size_mb, limit_mb):
    return f"the {what} is {size_mb:.1f} MB; this page takes at most {limit_mb:g} MB (--max_upload_mb)"


def check_video(driving, settings):
    """Frame size, then frame count and the decoded pixels, each before decoding the video."""
    height, width = check_pixels(driving, settings.max_frame_pixels, video=True)
    frames = video_info(driving).num_frames
    if frames > settings.max_frames:
        raise AppError(f"the driving video has {frames} frames; this page takes at most {settings.max_frames} "
                       f"(--max_frames): cut it shorter")
    budget = settings.max_frames * BUDGET_FRAME_PIXELS
    if frames * height * width > budget:
        raise AppError(f"the driving video has {frames} frames of {width}x{height} ({frames * height * width / 1e9:.1f}"
                       f" gigapixels); this page takes at most {budget / 1e9:.1f} (--max_frames frames of 1920x1080): "
                       f"cut it shorter or shrink it")


def parse_crop_box(text):
    try:
        if len(text) > 60:  # four numbers of pixels; the status line echoes what was typed
            raise cropping.CropError(text)
        return cropping.parse_box(text)
    except cropping.CropError:
        shown = text if len(text) <= 60 else text[:40] + "..."
        raise AppError(f"crop box {shown!r}: expected LEFT,TOP,RIGHT,BOTTOM in pixels (or click two corners on "
                       "the image)") from None


# Absolute paths' folders (the server's: Gradio's cache, the request folder): a status shows file names only.
_FOLDERS = re.compile(r"(?<![\w.~:/-])/(?:[^\s/'\",;()]+/)+(?=[^\s/'\",;()])")


def file_names_only(text):
    return _FOLDERS.sub("", text)


def run_request(settings, source, driving, model, mode, crop, box, find_best_frame, audio):
    """One press of the button: (result video, crop preview or None, status line). Never raises for input."""
    folder, done = None, False
    try:
        if model not in settings.models:
            raise AppError(f"unknown model {model!r}: pick one of {', '.join(settings.models) or 'none found'}")
        if crop not in CROPS or mode not in MODES:
            raise AppError(f"crop must be one of {', '.join(CROPS)} and mode one of {', '.join(MODES)}")
        source = check_upload(source, "source image", settings)  # sizes first: what was sent
        driving = check_upload(driving, "driving video", settings)
        crop_box = parse_crop_box(box) if crop == "box" else None
        check_pixels(source, settings.max_pixels)  # then headers, before anything is decoded
        check_video(driving, settings)
        config, checkpoint = settings.models[model]
        folder = new_request_folder(settings)
        notes = []
        request = Request(config=str(config), checkpoint=str(checkpoint), source_image=str(source),
                          driving_video=str(driving), result_video=str(folder / "result.mp4"), mode=mode,
                          device=settings.device, find_best_frame=bool(find_best_frame), audio=bool(audio),
                          crop="none" if crop == "box" else crop, crop_box=crop_box)
        result = animate_files(request, notify=notes.append)
        preview = str(request.crop_preview) if request.crop_preview.exists() else None
        done = True
        return str(result), preview, file_names_only("; ".join([f"done: {model}, {mode} mode, crop {crop}"] + notes))
    except (AppError, InputError, cropping.CropError, ConfigError, CheckpointError, MediaError) as error:
        message = one_line(error).replace(cropping.HAND_BOX_HINT, "choose the crop 'box' and click two corners of "
                                                                  "it on the source image")
        message = message.replace("--crop ", "crop box ")  # the pipeline names the demo's flag
        return None, None, file_names_only(f"error: {' '.join(message.split())}")
    except Exception as error:  # a bug: the page gets one line, the server's log the traceback
        traceback.print_exc()
        return None, None, file_names_only(f"error: internal error ({type(error).__name__}: "
                                           f"{' '.join(str(error).split())})")
    finally:
        if folder is not None:
            release_request_folder(settings, folder, keep=done)


# ----------------------------------------------------------------------------------------------------------
# Uploads as they were sent


def uploaded_file(payload, what, max_bytes, cache_dir):
    """The path of the file that was sent (Gradio keeps an upload's bytes as they came), never a decoded and
    re-encoded copy; a ``data:`` URL is written out byte for byte, or refused by its size before it is decoded."""
    if payload is None:
        return None
    url = payload.url or ""
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        size = len(data) * 3 // 4 if header.endswith(";base64") else len(data)
        if size > max_bytes:
            return Refused(too_big(what, size / 2 ** 20, max_bytes / 2 ** 20))
        try:
            content = base64.b64decode(data, validate=True) if header.endswith(";base64") else data.encode()
        except (binascii.Error, ValueError):
            return Refused(f"the {what} was sent as a data: URL that is not valid base64")
        kind = header[5:].split(";")[0].split("/")[-1]
        folder = Path(tempfile.mkdtemp(prefix="data-url-", dir=cache_dir))
        path = folder / f"{what.split()[-1]}.{re.sub(r'[^a-z0-9]', '', kind.lower())[:8] or 'bin'}"
        path.write_bytes(content)
        return str(path)
    return payload.path or None


async def move_to_cache_fetching_nothing(component, url_or_file_path):
    """Gradio downloads a file whose "path" in an API call is a URL; the page takes uploads only, so it never makes
    a request outside (a component's ``async_move_resource_to_block_cache``)."""
    if url_or_file_path is not None and re.match(r"(?i)^[a-z][a-z0-9+.-]*://", str(url_or_file_path)):
        raise gr.Error(f"{str(url_or_file_path)[:80]}: upload the file; this page fetches nothing from the network",
                       print_exception=False)
    return await gr.blocks.Block.async_move_resource_to_block_cache(component, url_or_file_path)


def as_sent(component, what, max_bytes):
    """Make a gr.Image or gr.Video pass on the uploaded file itself: a 16-bit, grey or transparent PNG reaches the
    pipeline as it was (with the demo's notes), a file that is not an image gets the pipeline's one line, not
    Gradio's bare "Error", a video is not converted before the page's checks, and nothing is fetched. Set on the
    instance: a subclass of a Gradio component makes Gradio write a .pyi file beside this module."""
    component.preprocess = lambda payload: uploaded_file(payload, what, max_bytes, component.GRADIO_CACHE)
    component.async_move_resource_to_block_cache = lambda path: move_to_cache_fetching_nothing(component, path)
    return component


# ----------------------------------------------------------------------------------------------------------
# The page


def box_from_clicks(box, event: gr.SelectData):
    """Clicking the source image twice gives the crop box: the first click one corner, the second the other. A
    click after a whole box, or after text that is not one corner, starts a new box."""
    x, y = (int(v) for v in event.index)
    try:
        x0, y0 = (int(p) for p in (box or "").split(","))
    except ValueError:  # empty, a whole box, or not numbers: this click is the first corner
        return f"{x},{y}", "box"
    return f"{min(x0, x)},{min(y0, y)},{max(x0, x)},{max(y0, y)}", "box"


def build_page(settings):
    """The Gradio page, its button bound to ``run_request``."""
    names = list(settings.models)
    max_bytes = int(settings.max_upload_mb * 2 ** 20)
    with gr.Blocks(title="MRAA: animate a photo", analytics_enabled=False, delete_cache=(3600, KEEP_RESULTS_S)) \
            as page:
        gr.Markdown("## Motion Representations for Articulated Animation\nUpload an image of what the chosen model "
                    "animates (its card is beside its name) and a video whose motion it should copy, or use the "
                    "bundled example under them; then press **Animate**.")
        with gr.Row():
            source = gr.Image(type="filepath", image_mode=None, sources=["upload"], height=300, elem_id="source",
                              label="Source image (click two corners to set a crop box)")
            source = as_sent(source, "source image", max_bytes)
            driving = as_sent(gr.Video(label="Driving video", sources=["upload"], height=300, elem_id="driving"),
                              "driving video", max_bytes)
        # Examples are copied into Gradio's cache as the page is built: the models folder itself is never served.
        gr.Examples([[str(EXAMPLE[0]), str(EXAMPLE[1])]], inputs=[source, driving], label="Bundled example")
        with gr.Row():
            with gr.Column():
                model = gr.Dropdown(names, value=names[0] if names else None, label="Model", elem_id="model")
                card = gr.Markdown(model_card(settings, names[0]) if names else "", elem_id="card")
            mode = gr.Radio(list(MODES), value="avd", label="Mode", elem_id="mode")
            crop = gr.Radio(list(CROPS), value="none", label="Crop", elem_id="crop")
            box = gr.Textbox(label="Crop box (LEFT,TOP,RIGHT,BOTTOM)", elem_id="box")
        with gr.Row():
            best = gr.Checkbox(label="Find the best starting frame", elem_id="best")
            audio = gr.Checkbox(label="Keep the driving video's sound", elem_id="audio")
        button = gr.Button("Animate", variant="primary", elem_id="animate")
        status = gr.Textbox(label="Status", interactive=False, elem_id="status")
        with gr.Row():
            result = gr.Video(label="Result", interactive=False, buttons=["download"], height=300, elem_id="result")
            preview = gr.Image(label="Crop (green: the box used)", interactive=False, height=300, elem_id="preview")
        # Not queued: a click or a model's card does not wait for another user's animation.
        source.select(box_from_clicks, inputs=[box], outputs=[box, crop], queue=False)
        box.input(None, outputs=[crop], js="() => 'box'")  # a typed box is the crop to use
        model.change(lambda name: model_card(settings, name), inputs=[model], outputs=[card], queue=False)

        def animate(source, driving, model, mode, crop, box, best, audio, progress=gr.Progress(track_tqdm=True)):
            progress(0, desc="starting")
            return run_request(settings, source, driving, model, mode, crop, box, best, audio)

        button.click(animate, inputs=[source, driving, model, mode, crop, box, best, audio],
                     outputs=[result, preview, status])
    return page


# ----------------------------------------------------------------------------------------------------------
# Host and origin checks


def host_name(netloc):
    """'Example.org:7860' -> 'example.org'; '[::1]:80' -> '::1'; None when it is not a host[:port]."""
    try:
        return urlsplit(f"//{netloc}").hostname
    except ValueError:
        return None


def is_ip(name):
    try:
        ip_address(name)
        return True
    except ValueError:
        return False


def same_site(origin, host):
    """Whether an Origin header names the scheme-default or given port of the host a request was sent to."""
    try:
        theirs, ours = urlsplit(origin), urlsplit(f"//{host}")
        default = {"http": 80, "https": 443}.get(theirs.scheme)
        return bool(default and theirs.hostname) and \
            (theirs.hostname, theirs.port or default) == (ours.hostname, ours.port or default)
    except ValueError:  # a port that is not a number
        return False


class HostAndOriginCheck:
    """ASGI middleware: answer only requests addressed to a host name the server was started for (an address, or
    one of ``names``), and sent by its own pages (an ``Origin`` header, when there is one, of the same host and
    port). A DNS-rebinding site reaches the server under its own name, and a cross-site upload carries its
    site's origin: both get 403. Addresses are always accepted, as rebinding needs a name."""

    def __init__(self, app, names=(), suffixes=()):
        self.app, self.names, self.suffixes = app, {n.lower() for n in names}, tuple(suffixes)

    def refusal(self, headers):
        host = headers.get("host", "")
        name = host_name(host)
        if not name or not (is_ip(name) or name in self.names or name.endswith(self.suffixes)):
            return f"this server does not answer for host {host!r}"
        origin = headers.get("origin")
        if origin is not None and not same_site(origin, host):
            return f"requests from {origin} are refused: use the page itself"
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            refusal = self.refusal(headers)
            if refusal:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                else:
                    await PlainTextResponse(refusal, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def accepted_host_names(args):
    """Host names the page answers for: localhost, --host, --allowed_hosts, and the machine's names when it
    listens on every address."""
    names = {"localhost", args.host, *args.allowed_hosts}
    if args.host in WILDCARD_HOSTS:
        names |= {socket.gethostname(), socket.getfqdn()}
    return sorted(n.lower() for n in names if n)


# ----------------------------------------------------------------------------------------------------------
# The command line


class UsageError(Exception):
    """A bad command line: one ``error:`` line, exit 1."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def number(kind, low, high, what):
    """An argparse type: a finite ``kind`` within [low, high]."""
    def parse(text):
        try:
            value = kind(float(text)) if kind is int and re.fullmatch(r"\d+(\.0*)?|\d+e\d+", text.strip()) \
                else kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


def parse_args(argv=None):
    parser = Parser(description="A local web page that animates a photo with a video's motion.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--allowed_hosts", nargs="+", default=[], metavar="NAME",
                        help="other host names the page is reached by (addresses, localhost and --host always are)")
    parser.add_argument("--port", type=number(int, 1, 65535, "a port from 1 to 65535"), default=7860,
                        help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also make a public Gradio share link (off by default)")
    parser.add_argument("--models", nargs="+", default=[str(REPO_ROOT / d) for d in DEFAULT_MODELS],
                        help="folders of checkpoints with their configs (default: sup-mat/ and checkpoints/)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--max_upload_mb", type=number(float, 1e-3, 1e5, "megabytes from 0.001 to 100000"),
                        default=100.0, help="largest upload in MB, as sent (default 100)")
    parser.add_argument("--max_frames", type=number(int, 1, 10 ** 6, "a whole number of frames from 1 to 1000000"),
                        default=1000, help="longest driving video in frames (default 1000); with frames larger "
                                           "than 1920x1080, fewer in proportion")
    parser.add_argument("--max_pixels", type=number(int, 1, 10 ** 9, "a whole number of pixels from 1 to 1e9"),
                        default=MAX_PIXELS, help=f"largest source image in pixels (default {MAX_PIXELS:.0e}: "
                                                 "a phone's 12 or 24 MP photo passes)")
    parser.add_argument("--max_frame_pixels", type=number(int, 1, 10 ** 9, "a whole number of pixels from 1 to 1e9"),
                        default=MAX_FRAME_PIXELS, help="largest driving-video frame in pixels (default 3840x2160)")
    parser.add_argument("--work_dir", default=None,
                        help="the page's folder for results (default: a new private one in the system's temp folder,"
                             " removed at exit); an existing one must be yours and mode 700")
    parser.add_argument("--max_work_gb", type=number(float, 1e-3, 1e6, "gigabytes from 0.001 to 1000000"),
                        default=10.0, help="results kept in the work folder at most, oldest removed first "
                                           "(default 10; each is also removed after an hour)")
    return parser.parse_args(argv)


def launch_options(args, settings=None):
    """Keyword arguments of ``Blocks.launch``: the address, no share link unless asked, the upload limit in bytes,
    only the work folder served (the results; the example is served from Gradio's cache), host and origin
    checks, Gradio's own lines silenced (we print ours), no monitoring page, no static-file workers outside the
    checks, and a footer without Gradio's "Use via API" link (the page is for people; the demo is the API)."""
    suffixes = (".gradio.live",) if args.share else ()
    check = Middleware(HostAndOriginCheck, names=accepted_host_names(args), suffixes=suffixes)
    return {"server_name": args.host, "server_port": args.port, "share": args.share,
            "max_file_size": int(args.max_upload_mb * 2 ** 20), "show_error": False, "ssr_mode": False,
            "mcp_server": False, "allowed_paths": [str(settings.work_dir)] if settings else [],
            "footer_links": ["gradio", "settings"], "quiet": True, "enable_monitoring": False, "num_workers": 0,
            "app_kwargs": {"middleware": [check]}}


def main(argv=None):
    try:
        args = parse_args(argv)
        from device import pick_device
        pick_device(args.device)
        models = find_models(args.models)
        if not models:
            raise AppError(f"no model found in {', '.join(args.models)}: put a checkpoint there with its config "
                           "(NAME.pth beside NAME.yaml, or NAME.yaml in config/)")
        settings = Settings(models, args.device, args.max_upload_mb, args.max_frames, args.work_dir,
                            args.max_pixels, args.max_frame_pixels, args.max_work_gb)
    except (UsageError, ValueError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    uploads = settings.work_dir / "uploads"  # Gradio's cache: uploads in our private folder, not a shared one
    uploads.mkdir(mode=0o700, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(uploads)
    try:
        page = build_page(settings).queue()
        shown = "localhost" if args.host in WILDCARD_HOSTS else args.host
        print(f"Running on http://{shown}:{args.port} (work folder {settings.work_dir}; "
              f"{'a public link follows' if args.share else 'no public link: --share makes one'})", flush=True)
        with signals_as_interrupts():  # SIGTERM too ends Gradio's loop, so the folder below is removed
            page.launch(**launch_options(args, settings))
    except KeyboardInterrupt:
        pass
    except OSError as error:  # Gradio's "Cannot find empty port": the port is taken, or the host is not ours
        reason = str(error).split(". ")[0]
        print(f"error: cannot serve the page on {args.host}:{args.port}: {reason}: give another --port, or a "
              "--host of this machine", file=sys.stderr)
        return 1
    finally:
        if args.work_dir is None:  # ours alone: made by mkdtemp for this run
            shutil.rmtree(settings.work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
