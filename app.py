"""A local web page that animates a photo with the motion of a video (Gradio).

    pip install -r requirements-app.txt
    python app.py                      # then open http://127.0.0.1:7860
    python app.py --port 8000 --models checkpoints/ --device cuda --max_upload_mb 50 --max_frames 600

Safe by default: it listens on 127.0.0.1 only (``--host 0.0.0.0`` to serve a network), makes no public share link
(unless ``--share``) and sends no analytics. Models are read only from the models folders (a checkpoint and its
config, picked by name on the page, never a typed path), with ``weights_only`` loading. Uploads are limited in
size and frame count, and every request writes into its own new folder.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # the machine may be offline, and a user's page is private

import gradio as gr  # noqa: E402

import cropping  # noqa: E402
from checkpoint import CheckpointError  # noqa: E402
from config import ConfigError  # noqa: E402
from errors import one_line  # noqa: E402
from media import MediaError, video_info  # noqa: E402
from pipeline import InputError, Request, animate_files  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_MODELS = ("sup-mat", "checkpoints")
CHECKPOINT_EXTENSIONS = (".pth", ".pt", ".pth.tar", ".tar")
EXAMPLE = (REPO_ROOT / "sup-mat" / "source.png", REPO_ROOT / "sup-mat" / "driving.mp4")
MODES = ("avd", "relative", "standard")
CROPS = ("none", "auto", "face", "person", "box")
KEEP_RESULTS_S = 3600  # result folders older than this are removed when a new request starts


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


@dataclass
class Settings:
    """What the command line fixes for every request."""
    models: dict  # name -> (config, checkpoint)
    device: str = "auto"
    max_upload_mb: float = 100.0
    max_frames: int = 1000
    results: Path = Path(tempfile.gettempdir()) / "mraa-app"


def check_upload(path, what, settings):
    if not path:
        raise AppError(f"no {what}: upload one, or pick the example below")
    size_mb = os.path.getsize(path) / 2 ** 20
    if size_mb > settings.max_upload_mb:
        raise AppError(f"the {what} is {size_mb:.1f} MB; this page takes at most {settings.max_upload_mb:g} MB "
                       f"(--max_upload_mb)")
    return Path(path)


def check_frames(driving, settings):
    try:
        frames = video_info(driving).num_frames
    except MediaError as error:
        raise AppError(str(error)) from None
    if frames > settings.max_frames:
        raise AppError(f"the driving video has {frames} frames; this page takes at most {settings.max_frames} "
                       f"(--max_frames): cut it shorter")


def new_request_folder(settings):
    """A new folder for one request's files (never shared with another request); old ones are swept."""
    settings.results.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in settings.results.iterdir():
        try:
            if old.is_dir() and now - old.stat().st_mtime > KEEP_RESULTS_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:  # removed by another request meanwhile
            pass
    return Path(tempfile.mkdtemp(prefix="request-", dir=settings.results))


def parse_crop_box(text):
    try:
        return cropping.parse_box(text)
    except cropping.CropError:
        raise AppError(f"crop box {text!r}: expected LEFT,TOP,RIGHT,BOTTOM in pixels (or click two corners on "
                       "the image)") from None


def run_request(settings, source, driving, model, mode, crop, box, find_best_frame, audio):
    """One press of the button: (result video, crop preview or None, status line). Never raises for input."""
    try:
        if model not in settings.models:
            raise AppError(f"unknown model {model!r}: pick one of {', '.join(settings.models) or 'none found'}")
        if crop not in CROPS or mode not in MODES:
            raise AppError(f"crop must be one of {', '.join(CROPS)} and mode one of {', '.join(MODES)}")
        source = check_upload(source, "source image", settings)
        driving = check_upload(driving, "driving video", settings)
        check_frames(driving, settings)
        config, checkpoint = settings.models[model]
        folder = new_request_folder(settings)
        notes = []
        request = Request(config=str(config), checkpoint=str(checkpoint), source_image=str(source),
                          driving_video=str(driving), result_video=str(folder / "result.mp4"), mode=mode,
                          device=settings.device, find_best_frame=bool(find_best_frame), audio=bool(audio),
                          crop="none" if crop == "box" else crop,
                          crop_box=parse_crop_box(box) if crop == "box" else None)
        result = animate_files(request, notify=notes.append)
        preview = str(request.crop_preview) if request.crop_preview.exists() else None
        return str(result), preview, "; ".join([f"done: {model}, {mode} mode, crop {crop}"] + notes)
    except (AppError, InputError, cropping.CropError, ConfigError, CheckpointError, MediaError) as error:
        message = one_line(error).replace(cropping.HAND_BOX_HINT, "choose the crop 'box' and click two corners of "
                                                                  "it on the source image")
        return None, None, f"error: {' '.join(message.split())}"
    except Exception as error:  # a bug: the page gets one line, the server's log the traceback
        traceback.print_exc()
        return None, None, f"error: internal error ({type(error).__name__}: {' '.join(str(error).split())})"


# ----------------------------------------------------------------------------------------------------------
# The page


def box_from_clicks(box, event: gr.SelectData):
    """Clicking the source image twice gives the crop box: the first click one corner, the second the other."""
    x, y = (int(v) for v in event.index)
    parts = [p for p in (box or "").split(",") if p.strip()]
    if len(parts) == 2:  # one corner given: this click completes the box
        x0, y0 = int(parts[0]), int(parts[1])
        return f"{min(x0, x)},{min(y0, y)},{max(x0, x)},{max(y0, y)}", "box"
    return f"{x},{y}", "box"


def build_page(settings):
    """The Gradio page, its button bound to ``run_request``."""
    names = list(settings.models)
    with gr.Blocks(title="MRAA: animate a photo", analytics_enabled=False, delete_cache=(3600, KEEP_RESULTS_S)) \
            as page:
        gr.Markdown("## Motion Representations for Articulated Animation\nUpload a photo and a video whose motion "
                    "it should copy, or use the example below; then press **Animate**.")
        with gr.Row():
            source = gr.Image(type="filepath", label="Source image (click two corners to set a crop box)",
                              sources=["upload"], height=300, elem_id="source")
            driving = gr.Video(label="Driving video", sources=["upload"], height=300, elem_id="driving")
        gr.Examples([[str(EXAMPLE[0]), str(EXAMPLE[1])]], inputs=[source, driving], label="Bundled example")
        with gr.Row():
            model = gr.Dropdown(names, value=names[0] if names else None, label="Model", elem_id="model")
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
        source.select(box_from_clicks, inputs=[box], outputs=[box, crop])

        def animate(source, driving, model, mode, crop, box, best, audio, progress=gr.Progress(track_tqdm=True)):
            progress(0, desc="starting")
            return run_request(settings, source, driving, model, mode, crop, box, best, audio)

        button.click(animate, inputs=[source, driving, model, mode, crop, box, best, audio],
                     outputs=[result, preview, status])
    return page


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="A local web page that animates a photo with a video's motion.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also make a public Gradio share link (off by default)")
    parser.add_argument("--models", nargs="+", default=[str(REPO_ROOT / d) for d in DEFAULT_MODELS],
                        help="folders of checkpoints with their configs (default: sup-mat/ and checkpoints/)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--max_upload_mb", type=float, default=100.0, help="largest upload in MB (default 100)")
    parser.add_argument("--max_frames", type=int, default=1000, help="longest driving video in frames (default 1000)")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_frames < 1:
        parser.error("--max_upload_mb and --max_frames must be positive")
    return args


def launch_options(args):
    """Keyword arguments of ``Blocks.launch``: the address, no share link unless asked, the upload limit, and a
    footer without Gradio's "Use via API" link (the page is for people; the demo and pipeline are the API)."""
    return {"server_name": args.host, "server_port": args.port, "share": args.share,
            "max_file_size": f"{args.max_upload_mb:g}mb", "show_error": False, "ssr_mode": False,
            "mcp_server": False, "allowed_paths": [str(EXAMPLE[0].parent)], "footer_links": ["gradio", "settings"]}


def main(argv=None):
    args = parse_args(argv)
    try:
        from device import pick_device
        pick_device(args.device)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    models = find_models(args.models)
    if not models:
        print(f"error: no model found in {', '.join(args.models)}: put a checkpoint there with its config "
              "(NAME.pth beside NAME.yaml, or NAME.yaml in config/)", file=sys.stderr)
        return 1
    settings = Settings(models, args.device, args.max_upload_mb, args.max_frames)
    build_page(settings).queue().launch(**launch_options(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
