"""Reading videos, and the datasets that training and evaluation draw from (METHOD.md §9).

A *video* is any of:

- a folder of frame images (png, jpg, ...), frames in natural name order (``2.png`` before ``10.png``);
  the preferred format, since training then decodes only the two frames it needs;
- a video file (.mp4, .gif, .mov, .avi, .webm, .mkv), decoded through imageio and its ffmpeg plug-in;
- one image of frames stacked side by side (a "strip", as in the MGif dataset); its frame width is given by
  ``frame_shape`` (scaled to the strip's height), or, without it, frames are taken to be square.

Every reader returns float32 RGB in [0, 1] with frames as (H, W, 3): grayscale is repeated to three
channels and an alpha channel is dropped. Frames are resized to ``frame_shape`` when it is given.

Symbols: T frames, H x W frame size, C = 3 channels.
"""
import csv
import math
import os
import re
import warnings
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

import imageio.v3 as iio
import numpy as np
from skimage.transform import resize
from torch.utils.data import Dataset

from augmentation import AllAugmentationTransform

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_EXTENSIONS = ('.mp4', '.gif', '.mov', '.avi', '.webm', '.mkv', '.m4v')


class VideoReadError(ValueError):
    """A video (or frame) that cannot be read: the message names the path and what was wrong."""


class SkippedVideoWarning(UserWarning):
    """A training video left out because it is unreadable, empty or shorter than two frames."""


class VideoInfo(NamedTuple):
    """What is known about a video without decoding all of it; ``None`` where the format does not say."""
    num_frames: Optional[int]
    fps: Optional[float]
    height: int
    width: int


# ----------------------------------------------------------------------------------------------------------
# Single frames


def _check_frame_shape(frame_shape):
    """Normalise a config's ``frame_shape`` ([H, W] or [H, W, 3], list or tuple) to a tuple (H, W) or None."""
    if frame_shape is None:
        return None
    shape = tuple(int(s) for s in frame_shape)
    if len(shape) not in (2, 3) or min(shape[:2]) < 1 or (len(shape) == 3 and shape[2] != 3):
        raise ValueError(f"frame_shape must be [H, W] or [H, W, 3] with positive H, W; got {list(frame_shape)}")
    return shape[:2]


def _to_rgb_float(frame, path):
    """Any decoded image (H, W), (H, W, 1|2|3|4), integer or float, to float32 RGB in [0, 1], (H, W, 3)."""
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
    # One channel (+ alpha) is gray; an alpha channel is dropped, as the reference does.
    if frame.shape[2] <= 2:
        return np.repeat(frame[:, :, :1], 3, axis=2)  # (H, W, 3)
    return np.ascontiguousarray(frame[:, :, :3])  # (H, W, 3)


def _resize(frame, frame_shape):
    """Resize one (H, W, 3) frame to frame_shape (H', W'), bilinear with anti-aliasing; a no-op at that size."""
    if frame_shape is None or frame.shape[:2] == tuple(frame_shape):
        return frame
    return resize(frame, frame_shape, order=1, anti_aliasing=True).astype(np.float32)  # (H', W', 3)


def read_image(path, frame_shape=None):
    """One image file as float32 RGB in [0, 1], (H, W, 3), resized to frame_shape when given."""
    frame_shape = _check_frame_shape(frame_shape)
    try:
        frame = iio.imread(path, plugin='pillow')
    except Exception as error:  # imageio raises many types for a missing, truncated or foreign file
        raise VideoReadError(f"cannot read image {path}: {_brief(error)}") from error
    if frame.ndim == 4:  # a multi-frame file (APNG, TIFF stack): its first frame is the image
        frame = frame[0]
    return _resize(_to_rgb_float(frame, path), frame_shape)


# ----------------------------------------------------------------------------------------------------------
# Videos


def _natural_key(name):
    """Sort key under which 'frame2.png' comes before 'frame10.png'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r'(\d+)', name)]


def list_frames(folder):
    """The frame images of a frame folder, as full paths in natural name order (hidden files ignored)."""
    names = [name for name in os.listdir(folder)
             if not name.startswith('.') and name.lower().endswith(IMAGE_EXTENSIONS)]
    return [os.path.join(folder, name) for name in sorted(names, key=_natural_key)]


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


def _plugin(path):
    """The imageio plug-in for a video file: named, so that a bad file fails there, not in a chain of guesses."""
    return 'pillow' if path.lower().endswith('.gif') else 'FFMPEG'


def _split_strip(strip, frame_shape, path):
    """Cut an (H, N*w, 3) strip into N frames (N, H, w, 3); w from frame_shape's aspect, else square frames."""
    height, width = strip.shape[:2]
    if frame_shape is None:
        frame_width = height
    else:
        frame_width = height * frame_shape[1] / frame_shape[0]
    if frame_width != int(frame_width) or width % int(frame_width) != 0:
        expected = f"frames of shape {list(frame_shape)}" if frame_shape else "square frames (no frame_shape given)"
        raise VideoReadError(f"{path}: a {height}x{width} image cannot be cut into {expected} stacked side by "
                             f"side; pass the frame_shape the strip was made with")
    frame_width = int(frame_width)
    return strip.reshape(height, width // frame_width, frame_width, 3).transpose(1, 0, 2, 3)  # (N, H, w, 3)


def iter_video_frames(path, frame_shape=None) -> Iterator[np.ndarray]:
    """Yield the frames of a video one at a time, each float32 RGB in [0, 1], (H, W, 3).

    Memory stays at one frame (plus the decoder's buffer) whatever the video's length, so the demo and the
    evaluation can stream long videos. Raises VideoReadError, naming the path, for a missing, unreadable or
    frameless video, or frames of different sizes with no frame_shape to resize them to.
    """
    frame_shape = _check_frame_shape(frame_shape)
    path = os.fspath(path)
    kind = _video_kind(path)
    count, first_size = 0, None
    if kind == 'folder':
        frames = (read_image(frame_path) for frame_path in list_frames(path))
    elif kind == 'strip':
        frames = iter(_split_strip(read_image(path), frame_shape, path))
    else:
        frames = _decode(path)
    for frame in frames:
        frame = _resize(frame, frame_shape)
        if first_size is None:
            first_size = frame.shape
        elif frame.shape != first_size:
            raise VideoReadError(f"{path}: frame {count} is {frame.shape[:2]}, the first frame is "
                                 f"{first_size[:2]}; pass frame_shape to resize them all")
        count += 1
        yield frame
    if count == 0:
        raise VideoReadError(f"{path} contains no frames")


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


def _decode(path):
    """Frames of a video file through imageio, converted to float RGB; decoder errors name the path."""
    try:
        for index, frame in enumerate(iio.imiter(path, plugin=_plugin(path))):
            yield _to_rgb_float(frame, f"{path} frame {index}")
    except VideoReadError:
        raise
    except Exception as error:  # ffmpeg and pillow raise OSError, ValueError, RuntimeError, ... on bad input
        raise VideoReadError(f"cannot decode video {path}: {_brief(error)}") from error


def read_video(path, frame_shape=None):
    """A whole video as float32 RGB in [0, 1], (T, H, W, 3); see the module docstring for the formats.

    ``frame_shape`` ([H, W] or [H, W, 3]) resizes every frame and sets a strip's frame width. There is no
    size limit (unlike imageio's ``mimread``); use ``iter_video_frames`` for videos too long for memory.
    """
    return np.stack(list(iter_video_frames(path, frame_shape)))  # (T, H, W, 3)


def video_info(path, frame_shape=None) -> VideoInfo:
    """Frame count, fps, height and width of a video, decoding as little as the format allows.

    ``fps`` is None for frame folders and strips; a video file whose container does not store its frame
    count is counted by ffmpeg (a decode without conversion: fast, but proportional to the length).
    height and width are those of the stored frames (before any resize to frame_shape).
    """
    path = os.fspath(path)
    kind = _video_kind(path)
    if kind == 'folder':
        frames = list_frames(path)
        if not frames:
            raise VideoReadError(f"{path} contains no frames (no {'/'.join(IMAGE_EXTENSIONS)} files)")
        height, width = read_image(frames[0]).shape[:2]
        return VideoInfo(len(frames), None, height, width)
    if kind == 'strip':
        frames = _split_strip(read_image(path), _check_frame_shape(frame_shape), path)  # (N, H, w, 3)
        return VideoInfo(len(frames), None, frames.shape[1], frames.shape[2])
    try:
        properties = iio.improps(path, plugin=_plugin(path))
        metadata = iio.immeta(path, plugin=_plugin(path))
    except Exception as error:
        raise VideoReadError(f"cannot read the header of video {path}: {_brief(error)}") from error
    height, width = properties.shape[1:3]
    num_frames = properties.n_images
    if path.lower().endswith('.gif'):
        duration_ms = metadata.get('duration') or 0  # per frame
        fps = 1000.0 / duration_ms if duration_ms > 0 else None
    else:
        fps = metadata.get('fps')
        if num_frames is None or not math.isfinite(num_frames):
            num_frames = _count_frames(path)
    return VideoInfo(int(num_frames), fps, int(height), int(width))


def _count_frames(path):
    """Exact frame count of a video file by an ffmpeg pass (its container does not store the count)."""
    import imageio_ffmpeg
    try:
        return imageio_ffmpeg.count_frames_and_secs(path)[0]
    except Exception as error:
        raise VideoReadError(f"cannot count the frames of video {path}: {_brief(error)}") from error


# ----------------------------------------------------------------------------------------------------------
# Datasets


def identity_of(name):
    """The identity of a video named 'identity#clip...'; without a '#', the name less its file extension."""
    if '#' in name:
        return name.split('#', 1)[0]
    stem, extension = os.path.splitext(name)
    return stem if extension.lower() in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS else name


def _obvious_defect(path):
    """Why a video visibly cannot give two frames, checked without decoding (None when it may)."""
    if path.is_dir():
        count = len(list_frames(path))
        return None if count >= 2 else f"{count} frame{'' if count == 1 else 's'}"
    return 'empty file' if path.stat().st_size == 0 else None


def list_videos(folder):
    """Names of the videos in a folder: sub-folders and files of a known format, sorted; hidden ones ignored."""
    names = []
    for name in sorted(os.listdir(folder)):
        full = os.path.join(folder, name)
        if name.startswith('.'):
            continue
        if os.path.isdir(full) or name.lower().endswith(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS):
            names.append(name)
    return names


def split_train_test(names, random_seed, by_identity=False):
    """Seeded 80/20 split of video names (20% rounded up, at least one video kept for training).

    With ``by_identity`` identities, not videos, are split, so no identity is in both halves.
    """
    keys = sorted({identity_of(name) for name in names}) if by_identity else sorted(names)
    order = np.random.RandomState(random_seed).permutation(len(keys))
    num_test = math.ceil(0.2 * len(keys)) if len(keys) > 1 else 0
    test_keys = {keys[i] for i in order[:num_test]}
    key = identity_of if by_identity else (lambda name: name)
    train = [name for name in names if key(name) not in test_keys]
    test = [name for name in names if key(name) in test_keys]
    return train, test


class FramesDataset(Dataset):
    """The videos of a dataset root: training pairs of frames, or whole test videos (METHOD.md §9).

    The root holds ``train/`` and ``test/``, or else videos directly, split 80/20 by ``random_seed``. With
    ``id_sampling`` (names ``identity#clip``), a training epoch visits each identity once and takes one of
    its clips at random. Items are dicts of numpy arrays:

    - training: ``source`` and ``driving`` (C, H, W) float32 in [0, 1], two frames drawn with replacement
      and sorted (``source`` the earlier), augmented alike; plus ``name`` (the clip) and ``id``;
    - test: ``video`` (C, T, H, W) float32 in [0, 1], plus ``name`` and ``id``.

    Random draws (clip, frames, augmentation) use numpy's global RNG, which torch's DataLoader re-seeds in
    every worker. A training video that turns out unreadable, empty or shorter than two frames is skipped
    with a warning that names it and counts the skips, and another video is served in its place; in test
    mode such a video raises VideoReadError naming it, for the evaluation to report and exclude.
    """

    def __init__(self, root_dir, frame_shape=(256, 256, 3), id_sampling=False, is_train=True,
                 random_seed=0, pairs_list=None, augmentation_params=None):
        root = Path(root_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder")
        self.frame_shape = _check_frame_shape(frame_shape)
        self.is_train = is_train
        self.id_sampling = id_sampling
        self.pairs_list = pairs_list
        if (root / 'train').is_dir():
            self.root_dir = root / ('train' if is_train else 'test')
            if not self.root_dir.is_dir():
                raise FileNotFoundError(f"{root} has a train/ folder but no test/ folder to evaluate on")
            names = list_videos(self.root_dir)
        else:
            self.root_dir = root
            train, test = split_train_test(list_videos(root), random_seed, by_identity=id_sampling)
            names = train if is_train else test
        if not names:
            found = sorted(os.listdir(self.root_dir))[:5]
            raise FileNotFoundError(f"no video in {self.root_dir} (a video is a folder of frames, a video file "
                                    f"or a strip image; found {found or 'nothing'})")
        self._skipped = {}  # path -> reason, for training videos found unusable
        if is_train:
            names = self._drop_short_folders(names)
        self.clips = {}  # identity -> its clip names, for id sampling
        for name in names:
            self.clips.setdefault(identity_of(name), []).append(name)
        self.videos = sorted(self.clips) if (is_train and id_sampling) else names
        self.transform = None
        if is_train and augmentation_params:
            self.transform = AllAugmentationTransform(**augmentation_params)

    def __len__(self):
        return len(self.videos)

    @property
    def num_skipped(self):
        """How many training videos have been found unusable so far (in this process)."""
        return len(self._skipped)

    def _drop_short_folders(self, names):
        """Drop, with one warning, the videos seen without decoding to lack two frames (folders, empty files)."""
        kept, dropped = [], []
        for name in names:
            defect = _obvious_defect(self.root_dir / name)
            if defect is None:
                kept.append(name)
            else:
                dropped.append(f"{name} ({defect})")
                self._skipped[str(self.root_dir / name)] = defect
        if dropped:
            warnings.warn(f"skipping {len(dropped)} of {len(names)} training videos in {self.root_dir} that cannot "
                          f"give two frames: {', '.join(dropped[:10])}{' ...' if len(dropped) > 10 else ''}",
                          SkippedVideoWarning, stacklevel=3)
        if not kept:
            raise FileNotFoundError(f"no training video in {self.root_dir} has two frames or more")
        return kept

    def _skip(self, path, error):
        self._skipped[str(path)] = str(error)
        warnings.warn(f"skipping unreadable training video {path}: {error} "
                      f"({len(self._skipped)} video(s) skipped so far)", SkippedVideoWarning, stacklevel=3)

    def _training_frames(self, path):
        """Two frames (2, H, W, 3), drawn with replacement and sorted; only those two decoded from a folder."""
        if path.is_dir():
            frame_paths = list_frames(path)
            if len(frame_paths) < 2:
                raise VideoReadError(f"{path} has {len(frame_paths)} frame(s); training needs two")
            indices = np.sort(np.random.choice(len(frame_paths), size=2, replace=True))
            return np.stack([read_image(frame_paths[i], self.frame_shape) for i in indices])  # (2, H, W, 3)
        video = read_video(path, self.frame_shape)  # (T, H, W, 3)
        if len(video) < 2:
            raise VideoReadError(f"{path} has {len(video)} frame; training needs two")
        return video[np.sort(np.random.choice(len(video), size=2, replace=True))]  # (2, H, W, 3)

    def _training_item(self, idx):
        """Serve video idx, or if it is unreadable the next readable one (with a warning per bad video)."""
        for attempt in range(len(self.videos)):
            key = self.videos[(idx + attempt) % len(self.videos)]
            names = self.clips[key] if self.id_sampling else [key]
            names = [name for name in names if str(self.root_dir / name) not in self._skipped]
            if not names:
                continue
            name = names[np.random.choice(len(names))]
            try:
                frames = self._training_frames(self.root_dir / name)  # (2, H, W, 3)
            except VideoReadError as error:
                self._skip(self.root_dir / name, error)
                continue
            if self.transform is not None:
                frames = self.transform(frames)
            source, driving = np.asarray(frames, dtype=np.float32).transpose(0, 3, 1, 2)  # (C, H, W) each
            return {'source': np.ascontiguousarray(source), 'driving': np.ascontiguousarray(driving),
                    'name': name, 'id': identity_of(name)}
        raise RuntimeError(f"none of the {len(self.videos)} training videos in {self.root_dir} is readable; "
                           f"skipped: {list(self._skipped.items())[:5]}")

    def __getitem__(self, idx):
        if self.is_train:
            return self._training_item(idx)
        name = self.videos[idx]
        video = read_video(self.root_dir / name, self.frame_shape)  # (T, H, W, 3)
        return {'video': np.ascontiguousarray(video.transpose(3, 0, 1, 2)),  # (C, T, H, W)
                'name': name, 'id': identity_of(name)}


class DatasetRepeater(Dataset):
    """Makes one epoch pass over a dataset ``num_repeats`` times: len is num_repeats * len(dataset)."""

    def __init__(self, dataset, num_repeats=100):
        self.dataset = dataset
        self.num_repeats = num_repeats

    def __len__(self):
        return self.num_repeats * len(self.dataset)

    def __getitem__(self, idx):
        return self.dataset[idx % len(self.dataset)]


class PairedDataset(Dataset):
    """Pairs of test videos for animation: items hold ``source_<key>`` and ``driving_<key>`` of both videos.

    Pairs come from the dataset's ``pairs_list`` CSV (columns ``source`` and ``driving``, video names as in
    the test folder, with or without a file extension; the first ``number_of_pairs`` rows that name known
    videos), or else are drawn without replacement by ``seed`` among the (driving, source) index pairs of the
    first ``number_of_pairs`` videos, as the reference does. The global RNG is left untouched.
    """

    def __init__(self, initial_dataset, number_of_pairs, seed=0):
        self.initial_dataset = initial_dataset
        pairs_list = getattr(initial_dataset, 'pairs_list', None)
        if pairs_list is None:
            num_videos = min(number_of_pairs, len(initial_dataset))
            grid = np.mgrid[:num_videos, :num_videos].reshape(2, -1).T  # (num_videos**2, 2): (driving, source)
            number_of_pairs = min(len(grid), number_of_pairs)
            chosen = np.random.RandomState(seed).choice(len(grid), number_of_pairs, replace=False)
            self.pairs = [tuple(int(i) for i in pair) for pair in grid[chosen]]
        else:
            self.pairs = read_pairs(pairs_list, initial_dataset.videos)[:number_of_pairs]

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, idx):
        driving_index, source_index = self.pairs[idx]
        driving = self.initial_dataset[driving_index]
        source = self.initial_dataset[source_index]
        return {**{'driving_' + key: value for key, value in driving.items()},
                **{'source_' + key: value for key, value in source.items()}}


def read_pairs(pairs_list, videos):
    """(driving index, source index) for each row of a pairs CSV whose two names are among ``videos``.

    Rows naming unknown videos are dropped with one warning; a CSV without the two columns, or with no
    usable row, is an error naming the file.
    """
    index = {name: i for i, name in enumerate(videos)}
    for i, name in enumerate(videos):  # also accept names without their file extension
        index.setdefault(os.path.splitext(name)[0], i)
    try:
        with open(pairs_list, newline='', encoding='utf-8-sig') as file:  # -sig: a spreadsheet's BOM is not a name
            reader = csv.DictReader(file)
            rows, columns = list(reader), reader.fieldnames or []
    except OSError as error:
        raise FileNotFoundError(f"cannot read pairs list {pairs_list}: {error}") from error
    if not {'source', 'driving'} <= set(columns):
        raise ValueError(f"pairs list {pairs_list} needs 'source' and 'driving' columns; found {list(columns)}")
    pairs, unknown = [], []
    for row in rows:
        source, driving = row['source'].strip(), row['driving'].strip()
        if source in index and driving in index:
            pairs.append((index[driving], index[source]))
        else:
            unknown.append(source if source not in index else driving)
    if unknown:
        warnings.warn(f"{len(unknown)} of {len(rows)} pairs in {pairs_list} name videos that are not in the test "
                      f"set and are left out (e.g. {unknown[:3]})", stacklevel=3)
    if not pairs:
        raise ValueError(f"no pair in {pairs_list} names two videos of the test set ({len(videos)} videos)")
    return pairs
