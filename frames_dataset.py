"""The datasets that training and evaluation draw from (docs/method.md §9); reading the videos is ``media.py``'s.

A dataset root holds videos in any form ``media.py`` reads (frame folders, video files, strips). With a
``frame_shape``, frames are resized to it; with ``frame_shape: null`` (the published configs), frames are used
at their stored size, which the first video sets: a video of another size is a :class:`FrameSizeError` naming
it and both sizes, since frames of different sizes cannot go through the networks in one batch.

Symbols: T frames, H x W frame size, C = 3 channels.
"""
import csv
import math
import os
import warnings
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from augmentation import AllAugmentationTransform
from media import (VideoReadError, check_frame_shape, is_media_name, iter_video_frames, list_frames, read_image,
                   read_video, stored_frame_size, strip_extension)


class SkippedVideoWarning(UserWarning):
    """A training video left out because it is unreadable, empty or shorter than two frames."""


class FrameSizeError(VideoReadError):
    """With ``frame_shape: null``, a video whose stored frames differ in size from the dataset's."""


class DatasetError(ValueError):
    """A dataset file (e.g. the pairs list) that cannot be used; the message names it."""


# ----------------------------------------------------------------------------------------------------------
# Datasets


def identity_of(name):
    """The identity of a video named 'identity#clip...'; without a '#', the name less its file extension."""
    return name.split('#', 1)[0] if '#' in name else strip_extension(name)


def _obvious_defect(path):
    """Why a video visibly cannot give two frames, checked without decoding (None when it may)."""
    if path.is_dir():
        count = len(list_frames(path))
        return None if count >= 2 else f"{count} frame{'' if count == 1 else 's'}"
    return 'empty file' if path.stat().st_size == 0 else None


def list_videos(folder):
    """Names of the videos in a folder: sub-folders and files of a known format, sorted; hidden ones ignored."""
    return [name for name in sorted(os.listdir(folder)) if not name.startswith('.')
            and (os.path.isdir(os.path.join(folder, name)) or is_media_name(name))]


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
    """The videos of a dataset root: training pairs of frames, or whole test videos (docs/method.md §9).

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
        self.frame_shape = check_frame_shape(frame_shape)
        self.is_train, self.id_sampling, self.pairs_list = is_train, id_sampling, pairs_list
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
        names = self._drop_short_folders(names) if is_train else names
        self.clips = {}  # identity -> its clip names, for id sampling
        for name in names:
            self.clips.setdefault(identity_of(name), []).append(name)
        self.videos = sorted(self.clips) if (is_train and id_sampling) else names
        self.frame_size, self.size_source = self.frame_shape, None  # (H, W) of every item, and whose it is
        if self.frame_shape is None or is_train:  # training: fail here, not in a loader worker, when none is usable
            self.frame_size = self._first_readable_size(names)
        self.transform = AllAugmentationTransform(**augmentation_params) if is_train and augmentation_params else None

    def __len__(self):
        return len(self.videos)

    @property
    def num_skipped(self):  # training videos found unusable so far (in this process)
        return len(self._skipped)

    def _drop_short_folders(self, names):
        """Drop, with one warning, the videos seen without decoding to lack two frames (folders, empty files)."""
        defects = {name: _obvious_defect(self.root_dir / name) for name in names}
        kept = [name for name in names if defects[name] is None]
        dropped = [f"{name} ({defect})" for name, defect in defects.items() if defect is not None]
        self._skipped.update({str(self.root_dir / name): defect for name, defect in defects.items() if defect})
        if dropped:
            warnings.warn(f"skipping {len(dropped)} of {len(names)} training videos in {self.root_dir} that cannot "
                          f"give two frames: {', '.join(dropped[:10])}{' ...' if len(dropped) > 10 else ''}",
                          SkippedVideoWarning, stacklevel=3)
        if not kept:
            raise FileNotFoundError(f"no training video in {self.root_dir} has two frames or more")
        return kept

    def _first_readable_size(self, names):
        """(H, W) of the first readable video's stored frames; unreadable training videos before it are skipped."""
        problems = []
        for name in names:
            try:
                size = stored_frame_size(self.root_dir / name)
            except VideoReadError as error:
                problems.append(str(error))
                if self.is_train:
                    self._skip(self.root_dir / name, error)
                continue
            self.size_source = name
            return self.frame_shape or size
        raise VideoReadError(f"none of the {len(names)} {'training' if self.is_train else 'test'} videos in "
                             f"{self.root_dir} is readable: {'; '.join(problems[:3])}")

    def check_size(self, frames, path):
        """Frames (..., H, W, 3) as they are, or FrameSizeError when their size is not the dataset's."""
        if frames.shape[-3:-1] != tuple(self.frame_size):
            (H, W), (h, w) = self.frame_size, frames.shape[-3:-1]
            raise FrameSizeError(f"{path}: frames are {h}x{w}, but those of {self.root_dir / self.size_source} are "
                                 f"{H}x{W}; with dataset_params.frame_shape null every video must have one size "
                                 f"(frames of different sizes cannot share a batch): set frame_shape to resize them")
        return frames

    def stream(self, index):
        """(name, frames) of test video ``index``, frames (H, W, 3) decoded as they are needed."""
        name = self.videos[index]
        path = self.root_dir / name
        return name, (self.check_size(frame, path) for frame in iter_video_frames(path, self.frame_shape))

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
            frames = np.stack([read_image(frame_paths[i], self.frame_shape) for i in indices])  # (2, H, W, 3)
            return self.check_size(frames, path)
        video = self.check_size(read_video(path, self.frame_shape), path)  # (T, H, W, 3)
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
            except FrameSizeError:
                raise
            except VideoReadError as error:
                self._skip(self.root_dir / name, error)
                continue
            if self.transform is not None:
                frames = self.transform(frames)
            source, driving = np.asarray(frames, dtype=np.float32).transpose(0, 3, 1, 2)  # (C, H, W) each
            return {'source': np.ascontiguousarray(source), 'driving': np.ascontiguousarray(driving),
                    'name': name, 'id': identity_of(name)}
        raise VideoReadError(f"none of the {len(self.videos)} training videos in {self.root_dir} is readable; "
                           f"skipped: {list(self._skipped.items())[:5]}")

    def __getitem__(self, idx):
        if self.is_train:
            return self._training_item(idx)
        name = self.videos[idx]
        video = np.stack(list(self.stream(idx)[1]))  # (T, H, W, 3)
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
        driving, source = self.initial_dataset[driving_index], self.initial_dataset[source_index]
        return {**{'driving_' + key: value for key, value in driving.items()},
                **{'source_' + key: value for key, value in source.items()}}


def read_pairs(pairs_list, videos):
    """(driving index, source index) for each row of a pairs CSV whose two names are among ``videos``; rows
    naming unknown videos are dropped with one warning; no 'source'/'driving' column or no usable row: DatasetError."""
    index = {name: i for i, name in enumerate(videos)}
    for i, name in enumerate(videos):  # also accept names without their file extension
        index.setdefault(os.path.splitext(name)[0], i)
    try:
        with open(pairs_list, newline='', encoding='utf-8-sig') as file:  # -sig: a spreadsheet's BOM is not a name
            reader = csv.DictReader(file)
            rows, columns = list(reader), reader.fieldnames or []
    except OSError as error:
        raise DatasetError(f"cannot read pairs list {pairs_list}: {error}") from error
    if not {'source', 'driving'} <= set(columns):
        raise DatasetError(f"pairs list {pairs_list} needs 'source' and 'driving' columns; found {list(columns)}")
    pairs, unknown = [], []
    for row in rows:
        source, driving = (row['source'] or '').strip(), (row['driving'] or '').strip()
        if source in index and driving in index:
            pairs.append((index[driving], index[source]))
        else:
            unknown.append(source if source not in index else driving)
    if unknown:
        warnings.warn(f"{len(unknown)} of {len(rows)} pairs in {pairs_list} name videos that are not in the test "
                      f"set and are left out (e.g. {unknown[:3]})", stacklevel=3)
    if not pairs:
        raise DatasetError(f"no pair in {pairs_list} names two videos of the test set (it names e.g. {unknown[:3]}; "
                           f"the test set's {len(videos)} videos are e.g. {list(videos)[:3]})")
    return pairs
