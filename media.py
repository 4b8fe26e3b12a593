"""The one place that reads and writes images and videos.

A *video* is any of:

- a folder of frame images, frames in natural name order (``2.png`` before ``10.png``); the preferred
  format for datasets, since training then decodes only the two frames it needs;
- a video file (any of ``VIDEO_EXTENSIONS``), decoded by the ffmpeg of imageio-ffmpeg (GIFs by Pillow);
- one image of frames stacked side by side (a "strip", as in the MGif dataset); its frame width is given by
  ``frame_shape`` (scaled to the strip's height), or, without it, frames are taken to be square.

Every reader returns float32 RGB in [0, 1] with frames as (H, W, 3), whatever the file's colour mode (CMYK,
palette, 16-bit, grey, with or without alpha; an alpha channel is dropped, as the reference does). Frames are
resized to ``frame_shape`` when it is given. A variable-frame-rate video is decoded at its average rate, so
that frames written at the rate ``video_info`` reports last as long as the video.

Writing is atomic: a result goes to a temporary file beside it, renamed over it only once complete, so an
error, Ctrl-C or SIGTERM leaves any earlier result as it was.

Symbols: T frames, H x W frame size, C = 3 channels.
"""
import collections
import contextlib
import functools
import os
import queue
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_EXTENSIONS = ('.mp4', '.mov', '.mkv', '.avi', '.m4v', '.webm', '.gif', '.mpg', '.mpeg', '.flv', '.wmv')
# The video formats written (results, visualisations), with their ffmpeg settings: H.264 unless a GIF.
WRITE_OPTIONS = {'.mp4': {}, '.mov': {}, '.mkv': {}, '.avi': {}, '.m4v': {},
                 '.gif': {'codec': 'gif', 'pix_fmt_out': 'pal8', 'macro_block_size': 1}}
assert set(WRITE_OPTIONS) <= set(VIDEO_EXTENSIONS)


class MediaError(ValueError):
    """An image or video that cannot be read or written: the message names the path and what was wrong."""


class VideoReadError(MediaError):
    """A video (or frame) that cannot be read."""


class TooManyPixelsError(MediaError):
    """An image or video frame larger than a limit, found from its header before anything is decoded."""


# Images and frames beyond this many pixels are refused unless a caller asks for more: 50 megapixels passes a
# 48 MP phone photo and an 8K frame, and stops a decompression bomb (a few KB of PNG that decode to gigabytes).
MAX_PIXELS = 50_000_000


class VideoInfo(NamedTuple):
    """What is known about a video without decoding all of it; ``None`` where the format does not say.

    ``num_frames`` are the frames the readers yield; ``expected_frames`` what the header's duration and rate
    promise (fewer decoded frames mean the file ends early, e.g. a truncated download).
    """
    num_frames: Optional[int]
    fps: Optional[float]
    height: int
    width: int
    duration: Optional[float] = None
    audio: bool = False
    expected_frames: Optional[int] = None


class ImageInfo(NamedTuple):
    """An image's stored size and colour mode (Pillow's name), read from its header."""
    height: int
    width: int
    mode: str
    alpha: bool
    grey: bool


# ----------------------------------------------------------------------------------------------------------
# Single images


def check_frame_shape(frame_shape):
    """Normalise a config's ``frame_shape`` ([H, W] or [H, W, 3], list or tuple) to a tuple (H, W) or None."""
    if frame_shape is None:
        return None
    shape = tuple(int(s) for s in frame_shape)
    if len(shape) not in (2, 3) or min(shape[:2]) < 1 or (len(shape) == 3 and shape[2] != 3):
        raise ValueError(f"frame_shape must be [H, W] or [H, W, 3] with positive H, W; got {list(frame_shape)}")
    return shape[:2]


def to_rgb_float(frame, path):
    """Any decoded array (H, W), (H, W, 1|2|3|4), integer or float, to float32 RGB in [0, 1], (H, W, 3)."""
    frame = np.asarray(frame)
    if frame.dtype == np.bool_:
        frame = frame.astype(np.float32)
    elif np.issubdtype(frame.dtype, np.integer):
        frame = frame.astype(np.float32) / np.iinfo(frame.dtype).max
    else:
        frame = np.clip(frame.astype(np.float32), 0.0, 1.0)
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 2, 3, 4):
        raise VideoReadError(f"{path}: expected an image of shape (H, W) or (H, W, 1-4), found {frame.shape}")
    if frame.shape[2] <= 2:  # grey (+ alpha)
        return np.repeat(frame[:, :, :1], 3, axis=2)  # (H, W, 3)
    return np.ascontiguousarray(frame[:, :, :3])  # (H, W, 3)


def resize_frame(frame, frame_shape, path=None):
    """One frame (H, W, 3), uint8 or float32 in [0, 1], as float32 RGB at frame_shape (H', W'); a no-op at that size.

    Bilinear, anti-aliased when it shrinks (``F.interpolate(antialias=True)``: a triangle filter as wide as the
    scale), as the authors' demo resizes (scikit-image's ``resize``, whose Gaussian prefilter differs a little:
    46.6 dB apart on the real talk video shrunk from 384 to 256). A uint8 frame is resized before it is converted,
    by PyTorch's uint8 kernel: 2,000 frames/s for 384->256 on one core, against 72 for scikit-image.
    """
    if frame_shape is None or frame.shape[:2] == tuple(frame_shape):
        return frame if frame.dtype == np.float32 else to_rgb_float(frame, path)
    image = torch.from_numpy(frame if frame.flags.writeable else frame.copy()).permute(2, 0, 1)[None]  # (1, 3, H, W)
    if frame.dtype == np.uint8:
        image = image.contiguous(memory_format=torch.channels_last)  # where the uint8 kernel is vectorised
    elif image.dtype != torch.float32:
        image = image.float()
    resized = F.interpolate(image, size=tuple(frame_shape), mode='bilinear', align_corners=False, antialias=True)
    resized = resized[0].permute(1, 2, 0).numpy()  # (H', W', 3)
    return to_rgb_float(resized, path) if resized.dtype == np.uint8 else np.clip(resized, 0.0, 1.0)


_SIXTEEN_BIT = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I')
_GREY = ('1', 'L', 'LA', 'La', 'I', 'F') + _SIXTEEN_BIT


def _has_alpha(image):
    return image.mode in ('RGBA', 'RGBa', 'LA', 'La', 'PA') or (image.mode == 'P' and 'transparency' in image.info)


def _pil_to_array(image, path):
    """A Pillow image of any mode as (H, W, 3) float32 RGB in [0, 1]; Pillow converts CMYK, YCbCr, palettes."""
    if image.mode in _SIXTEEN_BIT:  # 16-bit grey: Pillow's convert('RGB') would clip it to 8 bits
        return to_rgb_float(np.clip(np.asarray(image, dtype=np.float32) / 65535, 0, 1), path)
    if image.mode == 'F':
        return to_rgb_float(np.asarray(image, dtype=np.float32), path)
    if image.mode not in ('RGB', 'L'):
        try:
            image = image.convert('RGBA' if _has_alpha(image) else 'RGB')
        except ValueError as error:
            raise VideoReadError(f"cannot read image {path}: colour mode {image.mode} is not supported "
                                 f"({error}); save it as an RGB PNG or JPEG") from None
    return to_rgb_float(np.asarray(image), path)  # (H, W, 3)


def _open_image(path):
    """A Pillow image opened lazily; VideoReadError naming the path for a folder, a video or a foreign file."""
    path = Path(path)
    if path.is_dir():
        raise VideoReadError(f"{path} is a folder, not an image: give an image file "
                             f"({', '.join(IMAGE_EXTENSIONS)})")
    if not path.exists():
        raise VideoReadError(f"{path} does not exist")
    try:
        return Image.open(path)
    except Image.DecompressionBombError:
        raise TooManyPixelsError(f"image {path} has more pixels than Pillow decodes (over "
                                 f"{2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels): a decompression bomb, "
                                 f"or an image to shrink first") from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        if path.suffix.lower() in VIDEO_EXTENSIONS or _is_video(path):
            raise VideoReadError(f"{path} is a video, not an image: give one picture (e.g. a frame saved as "
                                 f"PNG)") from None
        reason = "the file is corrupt, or not in a format it claims to be" \
            if isinstance(error, UnidentifiedImageError) else str(error)
        raise VideoReadError(f"cannot read image {path}: {reason}") from None


_EXIF_ORIENTATION = 0x0112
_TURNED = (5, 6, 7, 8)  # EXIF orientations that turn the picture by 90 degrees


def image_info(path) -> ImageInfo:
    """Size (as displayed, after the EXIF orientation) and colour mode of an image file, from its header."""
    with _open_image(path) as image:
        height, width = image.height, image.width
        try:
            turned = image.getexif().get(_EXIF_ORIENTATION) in _TURNED  # a PNG's EXIF may follow its pixels
        except (OSError, ValueError, SyntaxError) as error:  # truncated or damaged data
            raise VideoReadError(f"cannot read image {path}: {error}") from None
        if turned:
            height, width = width, height
        return ImageInfo(height, width, image.mode, _has_alpha(image), image.mode in _GREY)


def read_image(path, frame_shape=None):
    """One image file as float32 RGB in [0, 1], (H, W, 3), resized to frame_shape when given.

    A multi-frame file (APNG, TIFF stack) gives its first frame. A phone photo is turned upright as its EXIF
    orientation says, as every image viewer shows it.
    """
    frame_shape = check_frame_shape(frame_shape)
    with _open_image(path) as image:
        try:
            image.load()
            frame = _pil_to_array(ImageOps.exif_transpose(image), path)  # (H, W, 3)
        except (OSError, ValueError, SyntaxError) as error:  # truncated or damaged pixel data
            raise VideoReadError(f"cannot read image {path}: {error}") from None
    return resize_frame(frame, frame_shape)


def write_image(path, image):
    """Write a uint8 image (H, W, 3) atomically (PNG, JPEG, ... by the extension)."""
    path = Path(path)
    with atomic_file(path) as temporary:
        iio.imwrite(temporary, np.asarray(image), extension=path.suffix)
    return path


# ----------------------------------------------------------------------------------------------------------
# Reading videos


def natural_key(name):
    """Sort key under which 'frame2.png' comes before 'frame10.png'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r'(\d+)', name)]


def list_frames(folder):
    """The frame images of a frame folder, as full paths in natural name order (hidden files ignored)."""
    names = [name for name in os.listdir(folder)
             if not name.startswith('.') and name.lower().endswith(IMAGE_EXTENSIONS)]
    return [os.path.join(folder, name) for name in sorted(names, key=natural_key)]


def is_media_name(name):
    """Whether a file name has one of the image or video extensions the readers know."""
    return name.lower().endswith(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)


def strip_extension(name):
    """A video's name without its media extension ('id#clip.mp4' -> 'id#clip'); folders keep their name."""
    stem, extension = os.path.splitext(name)
    return stem if extension.lower() in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS else name


def _video_kind(path):
    """'folder', 'video' (a file decoded frame by frame) or 'strip' (one image of stacked frames)."""
    if os.path.isdir(path):
        return 'folder'
    if not os.path.exists(path):
        raise VideoReadError(f"{path} does not exist")
    extension = os.path.splitext(path)[1].lower()
    if extension in VIDEO_EXTENSIONS:
        return 'video'
    if extension in IMAGE_EXTENSIONS:
        return 'strip'
    raise VideoReadError(f"{path}: unsupported video format '{extension}'; expected a folder of frames, "
                         f"a video file ({', '.join(VIDEO_EXTENSIONS)}) or a strip image "
                         f"({', '.join(IMAGE_EXTENSIONS)})")


def _split_strip(strip, frame_shape, path):
    """Cut an (H, N*w, 3) strip into N frames (N, H, w, 3); w from frame_shape's aspect, else square frames."""
    height, width = strip.shape[:2]
    frame_width = height if frame_shape is None else height * frame_shape[1] / frame_shape[0]
    if frame_width != int(frame_width) or width % int(frame_width) != 0:
        expected = f"frames of shape {list(frame_shape)}" if frame_shape else "square frames (no frame_shape given)"
        raise VideoReadError(f"{path}: a {height}x{width} image cannot be cut into {expected} stacked side by "
                             f"side; pass the frame_shape the strip was made with")
    frame_width = int(frame_width)
    return strip.reshape(height, width // frame_width, frame_width, 3).transpose(1, 0, 2, 3)  # (N, H, w, 3)


def _brief(error):
    """An imageio/ffmpeg error in one line: its message and the last line of any ffmpeg log it carries."""
    text = str(error)
    if 'can not handle the given uri' in text:  # imageio's words for bytes the plug-in does not recognise
        return "the file is corrupt, or not in a format it claims to be"
    if '=== stderr ===' in text:
        message, log = text.split('=== stderr ===', 1)
        lines = [line.strip() for line in log.splitlines() if line.strip()]
        text = message.strip() + (f" (ffmpeg: {lines[-1]})" if lines else '')
    return text


def _is_gif(path):
    return str(path).lower().endswith('.gif')


def _ffmpeg_header(path):
    """What ``ffmpeg -i`` says of a media file: {'duration', 'fps', 'tbr', 'audio', 'video', 'log'}."""
    result = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-hide_banner', '-i', str(path)],
                            capture_output=True, text=True, errors='replace')
    text = result.stderr
    header = {'audio': re.search(r'Stream #\S+.*: Audio:', text) is not None, 'duration': None, 'fps': None,
              'tbr': None, 'log': text}
    video = re.search(r'Stream #\S+.*: Video:(.*)', text)
    header['video'] = video is not None
    duration = re.search(r'Duration: (\d+):(\d+):(\d+(?:\.\d+)?)', text)
    if duration:
        hours, minutes, seconds = duration.groups()
        header['duration'] = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    for key in ('fps', 'tbr'):
        match = re.search(rf'([\d.]+)(k?) {key}\b', video.group(1)) if video else None
        if match:
            header[key] = float(match.group(1)) * (1000 if match.group(2) else 1)
    return header


def _is_video(path):
    """Whether ffmpeg reads a file as a video (an mp4, say, even when named .png), not as a still image."""
    header = _ffmpeg_header(path)
    container = re.search(r'Input #0, ([^,]+)', header['log'])
    return header['video'] and container is not None and not re.search(r'image2|_pipe', container.group(1))


def _decode_rate(header):
    """The constant rate to decode a video at: None (ffmpeg's own) unless the frame rate varies.

    ffmpeg states a variable rate's average as 'fps' and its finest time step as 'tbr', and decodes at the finest
    step, repeating frames: written at the average, they would stretch the video. Decoding at the average keeps
    its duration. (A constant rate is stated twice alike, '29.97 fps, 29.97 tbr'.)
    """
    fps, tbr = header['fps'], header['tbr']
    if fps and tbr and abs(fps - tbr) > 1e-3 * tbr:
        return fps
    return None


def _output_params(header):
    """ffmpeg output options of the decoder: a variable rate resampled to its average, for the stated duration
    (resampling alone would hold the last frame for a whole extra period of the slowest part)."""
    rate = _decode_rate(header)
    if not rate:
        return []
    return ['-r', f'{rate:g}'] + (['-t', f"{header['duration']:.3f}"] if header['duration'] else [])


def _decode_file(path, frame_shape=None):
    """Frames of a video file, (H, W, 3) float RGB, at frame_shape when given; decoder errors name the path."""
    try:
        if _is_gif(path):
            for index, frame in enumerate(iio.imiter(path, plugin='pillow')):
                yield to_rgb_float(frame, f"{path} frame {index}")
            return
        reader = imageio_ffmpeg.read_frames(str(path), output_params=_output_params(_ffmpeg_header(path)))
        meta = reader.__next__()
        width, height = meta['size']
        try:
            for index, data in enumerate(reader):
                frame = np.frombuffer(data, np.uint8).reshape(height, width, 3)  # (H, W, 3)
                yield resize_frame(frame, frame_shape, f"{path} frame {index}")  # resized while still uint8
        finally:
            reader.close()
    except VideoReadError:
        raise
    except Exception as error:  # ffmpeg and pillow raise OSError, ValueError, RuntimeError, ... on bad input
        raise VideoReadError(f"cannot decode video {path}: {_brief(error)}") from error


def iter_video_frames(path, frame_shape=None) -> Iterator[np.ndarray]:
    """Yield the frames of a video one at a time, each float32 RGB in [0, 1], (H, W, 3).

    Memory stays at one frame (plus the decoder's buffer) whatever the video's length. Raises VideoReadError,
    naming the path, for a missing, unreadable or frameless video, or frames of different sizes with no
    frame_shape to resize them to.
    """
    frame_shape = check_frame_shape(frame_shape)
    path = os.fspath(path)
    kind = _video_kind(path)
    count, first_size = 0, None
    if kind == 'folder':
        frames = (read_image(frame_path) for frame_path in list_frames(path))
    elif kind == 'strip':
        frames = iter(_split_strip(read_image(path), frame_shape, path))
    else:
        frames = _decode_file(path, frame_shape)
    for frame in frames:
        frame = resize_frame(frame, frame_shape)
        if first_size is None:
            first_size = frame.shape
        elif frame.shape != first_size:
            raise VideoReadError(f"{path}: frame {count} is {frame.shape[:2]}, the first frame is "
                                 f"{first_size[:2]}; pass frame_shape to resize them all")
        count += 1
        yield frame
    if count == 0:
        raise VideoReadError(f"{path} contains no frames")


def read_video(path, frame_shape=None):
    """A whole video as float32 RGB in [0, 1], (T, H, W, 3); see the module docstring for the formats.

    ``frame_shape`` ([H, W] or [H, W, 3]) resizes every frame and sets a strip's frame width.
    """
    return np.stack(list(iter_video_frames(path, frame_shape)))  # (T, H, W, 3)


def _count_frames(path, header):
    """Frames the decoder yields, counted by an ffmpeg pass that decodes without converting them."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), '-hide_banner', '-i', str(path), '-map', '0:v:0',
               *_output_params(header), '-f', 'null', '-']
    result = subprocess.run(command, capture_output=True, text=True, errors='replace')
    counts = re.findall(r'frame=\s*(\d+)', result.stderr)
    if result.returncode != 0 or not counts:
        last = (result.stderr.strip().splitlines() or ['unknown error'])[-1]
        raise VideoReadError(f"cannot decode video {path}: {last}")
    return int(counts[-1])


def _folder_frames(path):
    """The frame files of a video stored as a folder; VideoReadError when it holds none."""
    frames = list_frames(path)
    if not frames:
        raise VideoReadError(f"{path} contains no frames (no {'/'.join(IMAGE_EXTENSIONS)} files)")
    return frames


def video_info(path, frame_shape=None) -> VideoInfo:
    """Probe a video: frame count, fps, height, width, duration and sound, decoding as little as it can.

    ``fps`` and ``duration`` are None for frame folders and strips. A video file's frames are counted by an
    ffmpeg pass (fast, but proportional to the length). height and width are those of the stored frames.
    """
    path = os.fspath(path)
    kind = _video_kind(path)
    if kind == 'folder':
        frames = _folder_frames(path)
        info = image_info(frames[0])
        return VideoInfo(len(frames), None, info.height, info.width)
    if kind == 'strip':
        frames = _split_strip(read_image(path), check_frame_shape(frame_shape), path)  # (N, H, w, 3)
        return VideoInfo(len(frames), None, frames.shape[1], frames.shape[2])
    if os.path.getsize(path) == 0:
        raise VideoReadError(f"{path} is an empty file")
    if _is_gif(path):
        return _gif_info(path)
    header = _ffmpeg_header(path)
    if not header['video']:
        if header['audio']:
            raise VideoReadError(f"{path} contains no frames: it has a sound track and no video stream")
        lines = [line.strip() for line in header['log'].splitlines() if line.strip()]
        raise VideoReadError(f"cannot read the header of video {path}: {lines[-1] if lines else 'unknown error'}")
    fps = _decode_rate(header) or header['fps'] or header['tbr']
    num_frames = _count_frames(path, header)
    if num_frames == 0:
        raise VideoReadError(f"{path} contains no frames")
    width, height = _decode_size(path)
    expected = round(header['duration'] * fps) if header['duration'] and fps else None
    return VideoInfo(num_frames, fps, height, width, header['duration'], header['audio'], expected)


def stored_frame_size(path):
    """(H, W) of a video's stored frames, from one header: a folder's first frame, a file's video stream, a
    strip's height (square frames)."""
    path = os.fspath(path)
    kind = _video_kind(path)
    if kind == 'folder':
        info = image_info(_folder_frames(path)[0])
        return info.height, info.width
    if kind == 'strip':
        info = image_info(path)
        return info.height, info.height
    if os.path.getsize(path) == 0:
        raise VideoReadError(f"{path} is an empty file")
    try:
        if _is_gif(path):
            return tuple(int(n) for n in iio.improps(path, plugin='pillow').shape[-3:-1])
        width, height = _decode_size(path)
    except Exception as error:
        raise VideoReadError(f"cannot decode video {path}: {_brief(error)}") from error
    return height, width


def check_pixels(path, max_pixels=MAX_PIXELS, video=False):
    """Refuse an image (or, with ``video``, a video's frames) of more than ``max_pixels`` pixels, reading only its
    header; returns its (H, W). The error names the file, its size and the limit."""
    height, width = stored_frame_size(path) if video else image_info(path)[:2]
    if height * width > max_pixels:
        what = f"video {path} has frames of" if video else f"image {path} is"
        raise TooManyPixelsError(f"{what} {width}x{height} pixels ({height * width / 1e6:.1f} megapixels); at "
                                 f"most {max_pixels / 1e6:g} megapixels are taken: shrink it first")
    return height, width


def _decode_size(path):
    """(W, H) of the frames the decoder yields (after any rotation the file asks for). A request asks it of the same
    file up to three times (pixel limit, size note, probe), each an ffmpeg process (about 0.18 s): the answer is
    kept for the file as it is now (its size and modification time in the key)."""
    stat = os.stat(path)
    return _decoded_size_of(os.fspath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _decoded_size_of(path, size, mtime_ns):
    del size, mtime_ns  # the file's identity: a file written again is probed again
    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        return reader.__next__()['size']
    finally:
        reader.close()


def _gif_info(path):
    try:
        properties = iio.improps(path, plugin='pillow')
        metadata = iio.immeta(path, plugin='pillow')
    except Exception as error:
        raise VideoReadError(f"cannot read the header of video {path}: {_brief(error)}") from error
    frame_ms = metadata.get('duration') or 0  # per frame
    fps = 1000.0 / frame_ms if frame_ms > 0 else None
    num_frames = int(properties.n_images) if properties.is_batch else 1
    height, width = properties.shape[-3:-1]
    duration = num_frames / fps if fps else None
    return VideoInfo(num_frames, fps, int(height), int(width), duration, False, num_frames)


def ends_early(info: VideoInfo):
    """Whether a video file yields clearly fewer frames than its header's duration and rate promise."""
    return info.expected_frames is not None and info.num_frames < 0.95 * info.expected_frames - 1


@contextlib.contextmanager
def stream_video(path):
    """A video file's (fps, frames), frames iterating uint8 RGB (H, W, 3): for tools that work in uint8.

    fps is 0.0 when the file states none; a variable rate is decoded at its average, as everywhere.
    """
    if _is_gif(path):
        with iio.imopen(path, 'r', plugin='pillow') as video:
            frame_ms = video.metadata(index=0).get('duration') or 0
            yield (1000.0 / frame_ms if frame_ms else 0.0), video.iter(mode='RGB')
        return
    header = _ffmpeg_header(path)
    reader = imageio_ffmpeg.read_frames(str(path), output_params=_output_params(header))
    try:
        width, height = reader.__next__()['size']
        frames = (np.frombuffer(data, np.uint8).reshape(height, width, 3) for data in reader)  # (H, W, 3) each
        yield float(_decode_rate(header) or header['fps'] or header['tbr'] or 0.0), frames
    finally:
        reader.close()


def probe_error(path):
    """None when ffmpeg can read a video file's header, else why not (one line)."""
    try:
        if _is_gif(path):
            iio.immeta(path, plugin='pillow', index=0)
            return None
    except Exception as error:  # any unreadable file is reported, whatever the exception
        return f"unreadable as a video ({type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]})"
    header = _ffmpeg_header(path)
    if header['video']:
        return None
    lines = [line.strip() for line in header['log'].splitlines() if line.strip()]
    return f"unreadable as a video ({lines[-1] if lines else 'no video stream'})"


# ----------------------------------------------------------------------------------------------------------
# Writing: atomic files and folders


def temporary_name(path):
    """A hidden name beside ``path`` that says whose process made it: .<name>.<pid>.<random>.part<suffix>."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part{path.suffix}")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temporaries(path):
    """Remove the temporary files and folders beside ``path`` that a killed process left (its pid is gone)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.[0-9a-f]+\.part")
    for entry in path.parent.iterdir():
        match = pattern.match(entry.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def check_writable(path):
    """Raise MediaError unless a file can be written at ``path`` (makes its folder); writes nothing there."""
    path = Path(path)
    if path.is_dir():
        raise MediaError(f"{path} is a folder: give the result a file name, e.g. {path / ('result' + '.mp4')}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix='.part', dir=path.parent)
        os.close(fd)
        os.remove(probe)
    except OSError as error:
        raise MediaError(f"{path}: cannot write in {path.parent}: {error.strerror or error}") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise MediaError(f"{path}: the file exists and is read-only")


def same_file(a, b):
    """Whether two paths name one file: through links, relative parts or hard links."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_not_an_input(result, inputs):
    """Refuse a result path that names one of ``inputs`` ({what: path}), by whatever path."""
    for what, path in inputs.items():
        if path is not None and same_file(result, path):
            raise MediaError(f"{result} is also the {what} ({path}): write the result to another file, or the "
                             f"{what} would be lost")


def check_outputs(outputs, inputs):
    """Refuse outputs ({what: path}; None skipped) that name an input ({what: path}) or one another, by whatever
    path: a tool that writes several files checks them all before any work, so none overwrites what it reads or
    what it has just written."""
    outputs = [(what, path) for what, path in outputs.items() if path is not None]
    for i, (what, path) in enumerate(outputs):
        check_not_an_input(path, inputs)
        for other, other_path in outputs[i + 1:]:
            if same_file(path, other_path):
                raise MediaError(f"{path} is given as both the {what} and the {other}: give each its own file, or "
                                 f"one would overwrite the other")


@contextlib.contextmanager
def atomic_file(path):
    """Yields a temporary path beside ``path``; renamed over it when the block ends normally, else removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(path)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


@contextlib.contextmanager
def staged_folder(folder, replace=False, inputs=None):
    """Yields a temporary folder beside ``folder``: when the block ends normally its files are moved into
    ``folder`` (replacing those of the same name, ``last`` ones after the rest), else it is removed, so an
    interrupted run leaves the earlier outputs as they were.

    With ``replace``, the staged folder takes the place of ``folder`` whole: nothing of an earlier run stays beside
    the new outputs (an evaluation's folder lists exactly what its summary counts). Then none of ``inputs``
    ({what: path}) may lie in ``folder``: MediaError before any work."""
    folder = Path(folder)
    for what, path in (inputs or {}).items() if replace else ():
        if path is not None and Path(path).resolve().is_relative_to(folder.resolve()):
            raise MediaError(f"{folder} holds the {what} ({path}), and a new run replaces that folder whole: "
                             f"move the {what} out of it, or write the outputs elsewhere (--log_dir)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(folder)
    staging = temporary_name(folder)
    staging.mkdir()
    try:
        yield staging
        if replace:
            _replace_folder(staging, folder)
            return
        files = sorted(p for p in staging.rglob('*') if p.is_file())
        for source in sorted(files, key=lambda p: p.suffix == '.json'):  # the summary last: it vouches for the rest
            target = folder / source.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace_folder(new, folder):
    """Put folder ``new`` in the place of ``folder``: the old one is renamed aside, then removed."""
    aside = temporary_name(folder) if folder.exists() else None
    if aside is not None:
        os.replace(folder, aside)
    try:
        os.replace(new, folder)
    except OSError:
        if aside is not None:  # put the earlier outputs back rather than leave none
            os.replace(aside, folder)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True) if aside.is_dir() else aside.unlink(missing_ok=True)


class VideoWriter:
    """Writes uint8 frames (H, W, 3) to a video file as they come, with imageio-ffmpeg's ffmpeg; atomically.

    Frames go to a temporary file beside ``path``, renamed over it by ``close()``; leaving the ``with`` block
    by an exception (Ctrl-C included) removes it, so an earlier file at ``path`` stays as it was. With
    ``audio_from``, the first sound track of that file is copied in (as AAC; silently absent if it has
    none). Memory does not grow with the video. H.264 frames need even sizes: an odd size is scaled up by one
    pixel.
    """

    def __init__(self, path, fps, audio_from=None):
        self.path, self.fps, self.audio_from = Path(path), float(fps), audio_from
        suffix = self.path.suffix.lower()
        if suffix not in WRITE_OPTIONS:
            raise MediaError(f"{self.path}: cannot write a '{suffix}' video: use one of {', '.join(WRITE_OPTIONS)}")
        if audio_from is not None and suffix == '.gif':
            raise MediaError(f"{self.path}: a GIF has no sound: write an .mp4, .mov or .mkv to keep the sound")
        self.options = {'macro_block_size': 2, **WRITE_OPTIONS[suffix]}
        self.num_frames, self._ffmpeg, self._temporary = 0, None, None

    def write(self, frames):
        """Append frames: uint8 (H, W, 3) or (B, H, W, 3)."""
        frames = np.asarray(frames)
        frames = frames[None] if frames.ndim == 3 else frames  # (B, H, W, 3)
        if self._ffmpeg is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            clean_stale_temporaries(self.path)
            self._temporary = temporary_name(self.path)
            _, H, W, _ = frames.shape
            self._ffmpeg = imageio_ffmpeg.write_frames(str(self._temporary), (W, H), fps=self.fps,
                                                       ffmpeg_log_level='error', **self.options)
            self._ffmpeg.send(None)  # start the ffmpeg process
        for frame in frames:
            self._ffmpeg.send(np.ascontiguousarray(frame, dtype=np.uint8))
        self.num_frames += len(frames)

    def close(self):
        """Finish the video and put it at ``path`` (nothing is written when no frame was)."""
        if self._ffmpeg is None:
            return
        try:
            self._ffmpeg.close()
            self._ffmpeg = None
            if self.audio_from is not None and _ffmpeg_header(self.audio_from)['audio']:
                with atomic_file(self.path) as muxed:
                    _copy_sound(self._temporary, self.audio_from, muxed)
            else:
                os.replace(self._temporary, self.path)
        finally:
            self.abort()

    def abort(self):
        """Stop writing and remove the temporary file; ``path`` is left as it was."""
        if self._ffmpeg is not None:
            with contextlib.suppress(Exception):
                self._ffmpeg.close()
            self._ffmpeg = None
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc_info):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def has_audio(path):
    """Whether a media file has a sound track."""
    return _ffmpeg_header(path)['audio']


def _copy_sound(video_path, sound_path, out_path):
    """``out_path``: the frames of ``video_path`` (copied, not re-encoded) and the first sound track of
    ``sound_path`` (as AAC)."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), '-y', '-v', 'error', '-i', str(video_path), '-i', str(sound_path),
               '-map', '0:v:0', '-map', '1:a:0', '-c:v', 'copy', '-c:a', 'aac', str(out_path)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ['unknown error'])[-1]
        raise MediaError(f"{out_path}: could not add the sound of {sound_path}: ffmpeg: {last}")


# ----------------------------------------------------------------------------------------------------------
# Streaming beside the model: decoding ahead, encoding behind


class _Raised:
    """An exception of the producing thread, handed to the consumer to raise."""

    def __init__(self, error):
        self.error = error


_DONE = object()


@contextlib.contextmanager
def prefetched(iterable, depth=2):
    """Iterate ``iterable`` in a thread of its own, up to ``depth`` items ahead of the consumer.

    Yields an iterator over the same items in the same order; an exception of the iterable is raised where the
    consumer reaches it. Leaving the block (finished, broken off, or by an exception such as Ctrl-C) stops the
    thread, which closes the iterable itself (a generator belongs to the thread that runs it).
    """
    items, stop = queue.Queue(maxsize=depth), threading.Event()

    def put(item):  # blocks while the queue is full, until the consumer takes it or leaves
        while not stop.is_set():
            try:
                items.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        iterator = iter(iterable)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as error:  # noqa: B036 (handed to the consumer, which raises it)
            put(_Raised(error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def consume():
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item

    thread = threading.Thread(target=produce, name="mraa-prefetch", daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        thread.join()


class BackgroundWriter:
    """``writer.write`` in a thread of its own, at most ``depth`` batches queued (so memory stays bounded).

    An error of a write is raised by a later ``write`` or by ``finish``. Use as a context manager inside the
    writer's own ``with`` block: leaving it waits for the write in progress, so the writer is never closed or
    aborted under a running write.
    """

    def __init__(self, writer, depth=2):
        self.writer, self.depth = writer, depth
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mraa-encode")
        self.pending = collections.deque()

    def write(self, frames):
        while len(self.pending) >= self.depth:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(self.writer.write, frames))

    def finish(self):
        """Wait for every queued write; raises the first error of one."""
        while self.pending:
            self.pending.popleft().result()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc_info):
        try:
            if exc_type is None:
                self.finish()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
