"""AKD and MKR (the paper's keypoint metrics, Sec. 4) between ground-truth and generated videos, with the detectors
of ``landmarks.py``; ``tools/eval_metrics.py`` and ``run.py --mode reconstruction --metrics`` run it.

- AKD (average keypoint distance): the mean distance in pixels between a keypoint found in a ground-truth frame
  and the same keypoint found in the generated frame, over the (frame, keypoint) pairs found in both;
- MKR (missing keypoint rate): of the keypoints found in the ground truth, the fraction not found in the generated
  frame (a frame where no face or body is found at all misses all of them).

A frame whose ground truth holds no face or body has nothing to compare: it is counted (``frames_without_detection``)
and left out of both numbers, never averaged in as zeros; a video with no keypoint pair has AKD null. Per video,
and for all videos together (``akd`` and ``mkr`` pooled over all pairs and all ground-truth keypoints, so every
frame weighs alike). Frames are compared as decoded, in memory, never written again in between, and the formats
they were read from are recorded (``frame_format``): a lossy ground truth (mp4) against lossless predictions (PNG)
gives other numbers than two PNGs.

The numbers compare runs of this tool with each other; they are not those of the paper's detectors (face-alignment
for faces, OpenPose for bodies), so they are not comparable with the paper's tables.
"""
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

import landmarks
from media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, atomic_file, iter_video_frames, list_frames, strip_extension

LOSSLESS = ('.png', '.bmp', '.tif', '.tiff')
NOTE = ("keypoints from MediaPipe's models (mediapipe 0.10.14's wheel, run by LiteRT); these numbers compare runs of "
        "this tool, not the paper's detectors (face-alignment, OpenPose)")


class MetricsError(ValueError):
    """Input the keypoint metrics cannot compare (a missing video, frame counts or sizes that differ); the message
    names the files."""


def frame_format(path):
    """How a video's frames were stored, e.g. 'png frames (lossless)', 'mp4 video (lossy)', 'png strip (lossless)'."""
    path = Path(path)
    if path.is_dir():
        names = list_frames(path)
        extension = Path(names[0]).suffix.lower() if names else ''
        kind = 'frames'
    else:
        extension = path.suffix.lower()
        kind = 'video' if extension in VIDEO_EXTENSIONS else 'strip'
    quality = 'lossless' if extension in LOSSLESS else 'lossy'
    return f"{extension.lstrip('.') or 'no'} {kind} ({quality})"


def paired_frames(truth, generated, truth_name, generated_name):
    """Yield (truth frame, generated frame) from two frame iterables in step; MetricsError when one ends first or a
    pair differs in size (keypoint distances in pixels need one frame size)."""
    truth, generated = iter(truth), iter(generated)
    count = 0
    while True:
        a, b = next(truth, None), next(generated, None)
        if a is None and b is None:
            return
        if a is None or b is None:
            longer = generated if a is None else truth
            extra = 1 + sum(1 for _ in longer)
            counts = (count, count + extra) if a is None else (count + extra, count)
            raise MetricsError(f"{truth_name} has {counts[0]} frames, {generated_name} has {counts[1]}: the "
                               f"ground truth and the generated video must have the same frames")
        if a.shape != b.shape:
            raise MetricsError(f"frame {count}: {truth_name} is {a.shape[1]}x{a.shape[0]}, {generated_name} is "
                               f"{b.shape[1]}x{b.shape[0]}; compare frames of one size")
        count += 1
        yield a, b


class Tally:
    """Running sums of one comparison: distances of the pairs found in both, keypoints found in the ground truth
    and missed in the generated frame, and the frames where no face or body was found."""

    def __init__(self):
        self.distance_sum, self.pairs, self.truth_keypoints, self.missing = 0.0, 0, 0, 0
        self.frames, self.truth_not_found, self.generated_not_found = 0, 0, 0

    def add(self, truth, generated):
        """One frame's keypoints (``landmarks.Keypoints`` or None when nothing was found)."""
        self.frames += 1
        self.generated_not_found += generated is None
        if truth is None:
            self.truth_not_found += 1
            return
        found = truth.visible.copy()  # (J,) keypoints the generated frame should have too
        self.truth_keypoints += int(found.sum())
        if generated is None:
            self.missing += int(found.sum())
            return
        both = found & generated.visible  # (J,)
        self.missing += int((found & ~generated.visible).sum())
        self.pairs += int(both.sum())
        self.distance_sum += float(np.linalg.norm(truth.points[both] - generated.points[both], axis=1).sum())

    def merge(self, other):
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)

    def summary(self):
        """AKD (pixels) and MKR (a fraction), null where nothing was there to measure, and the counts."""
        return {"akd": self.distance_sum / self.pairs if self.pairs else None,
                "mkr": self.missing / self.truth_keypoints if self.truth_keypoints else None,
                "num_frames": self.frames, "keypoint_pairs": self.pairs, "truth_keypoints": self.truth_keypoints,
                "frames_without_detection": {"ground_truth": self.truth_not_found,
                                             "generated": self.generated_not_found}}


def compare_video(landmarker, truth_frames, generated_frames, truth_name="ground truth", generated_name="generated"):
    """Tally the keypoints of two videos' frames (iterables of (H, W, 3) in [0, 1] or uint8), frame by frame."""
    tally = Tally()
    for truth, generated in paired_frames(truth_frames, generated_frames, truth_name, generated_name):
        tally.add(landmarker(truth), landmarker(generated))
    return tally


def evaluate_pairs(pairs, target, threads=1, frame_shape=None, progress=True):
    """AKD and MKR of named video pairs.

    Args: pairs, {name: (ground-truth video, generated video)}, each a path media.iter_video_frames reads (a
    folder of frames, a video file, a strip) or an iterable of frames; ``frame_shape`` (H, W) to cut strips and
    resize frames (None: as stored, strips of square frames). Returns the dict ``metrics.json`` holds.
    """
    landmarker = landmarks.make_landmarker(target, threads)
    total, videos, formats = Tally(), {}, {"ground_truth": set(), "generated": set()}
    for name, (truth, generated) in tqdm(sorted(pairs.items()), desc=f"{target} keypoints", unit="video",
                                         disable=None if progress else True):  # None: shown on a terminal
        streams = []
        for side, source in (("ground_truth", truth), ("generated", generated)):
            if isinstance(source, (str, os.PathLike)):
                formats[side].add(frame_format(source))
                source = iter_video_frames(source, frame_shape)
            else:
                formats[side].add("frames in memory")
            streams.append(source)
        tally = compare_video(landmarker, *streams, _label(truth, "ground truth"), _label(generated, "generated"))
        videos[name] = tally.summary()
        total.merge(tally)
    return {"target": target, "keypoints": list(landmarker.keypoint_names),
            "detector": f"mediapipe {landmarks.MEDIAPIPE_VERSION}: "
                        + ", ".join(Path(landmarks.MODEL_FILES[f"{target}_{part}"]).name
                                    for part in ("detector", "landmarks")),
            "frame_format": {side: ", ".join(sorted(kinds)) for side, kinds in formats.items()},
            "num_videos": len(videos), **total.summary(), "videos": videos, "note": NOTE}


def _label(source, default):
    return str(source) if isinstance(source, (str, os.PathLike)) else default


# ----------------------------------------------------------------------------------------------------------
# What to compare: two videos, two sets of videos, or a reconstruction folder


def videos_in(path):
    """{name: path} of the videos in a folder that holds videos (sub-folders of frames, video files, strips), or
    None when ``path`` is one video itself (a video file, a strip, or a folder that holds frame images)."""
    path = Path(path)
    if not path.exists():
        raise MetricsError(f"{path} does not exist")
    if not path.is_dir() or list_frames(path):
        return None
    found = {}
    for entry in sorted(path.iterdir()):
        if entry.name.startswith('.'):
            continue
        if entry.is_dir() or entry.suffix.lower() in VIDEO_EXTENSIONS:
            found[strip_extension(entry.name)] = entry
    if not found:
        raise MetricsError(f"{path} holds neither frames ({'/'.join(IMAGE_EXTENSIONS)}) nor videos")
    return found


def pairs_of(truth, generated):
    """{name: (truth video, generated video)} of two videos, or of the videos of two folders matched by name."""
    truth_videos, generated_videos = videos_in(truth), videos_in(generated)
    if truth_videos is None and generated_videos is None:
        return {strip_extension(Path(generated).name): (Path(truth), Path(generated))}
    if truth_videos is None or generated_videos is None:
        one, many = (truth, generated) if truth_videos is None else (generated, truth)
        raise MetricsError(f"{one} is one video but {many} is a folder of videos: give two videos or two folders "
                           f"of videos")
    missing = sorted(set(generated_videos) - set(truth_videos))
    if missing:
        raise MetricsError(f"{generated} has {missing[0]}, which {truth} lacks: generated videos are matched to the "
                           f"ground truth by name")
    if not generated_videos:
        raise MetricsError(f"{generated} holds no video")
    return {name: (truth_videos[name], path) for name, path in generated_videos.items()}


def reconstruction_pairs(folder, config):
    """{name: (test video, predicted strip)} of a ``run.py --mode reconstruction`` folder: its ``png/<video>.png``
    strips, with the ground truth read from the config's test videos (``dataset_params``), matched by name."""
    from frames_dataset import FramesDataset
    strips = Path(folder) / "png"
    if not strips.is_dir():
        raise MetricsError(f"{folder} has no png/ folder: give the reconstruction folder run.py --mode "
                           f"reconstruction wrote (<log_dir>/reconstruction)")
    predicted = {strip_extension(p.name): p for p in sorted(strips.iterdir()) if p.suffix.lower() == ".png"}
    if not predicted:
        raise MetricsError(f"{strips} holds no predicted strip (<video>.png)")
    params = dict(config["dataset_params"])
    try:
        dataset = FramesDataset(is_train=False, **params)
    except FileNotFoundError as error:
        raise MetricsError(f"the ground truth: {error}") from None
    test_videos = {strip_extension(name): dataset.root_dir / name for name in dataset.videos}
    missing = sorted(set(predicted) - set(test_videos))
    if missing:
        raise MetricsError(f"{strips / (missing[0] + '.png')} has no test video of that name in {dataset.root_dir}")
    return {name: (test_videos[name], strip) for name, strip in predicted.items()}


def write_metrics(path, metrics):
    """``metrics`` as JSON to ``path``, atomically (a previous file is replaced whole or not at all)."""
    import json
    with atomic_file(path) as temporary:
        temporary.write_text(json.dumps(metrics, indent=2) + "\n")
    return Path(path)


def evaluate_reconstruction(folder, config, target, out=None, threads=1, progress=True):
    """AKD and MKR of a reconstruction folder against the config's test videos, written to ``out`` (default
    ``<folder>/metrics-<target>.json``, beside the L1 metrics.json); returns the metrics."""
    frame_shape = config["dataset_params"].get("frame_shape")
    metrics = evaluate_pairs(reconstruction_pairs(folder, config), target, threads,
                             frame_shape=tuple(frame_shape[:2]) if frame_shape else None, progress=progress)
    write_metrics(out or Path(folder) / f"metrics-{target}.json", metrics)
    return metrics


def summary_line(metrics):
    """One line for the console: AKD, MKR and the frames where nothing was found."""
    akd, mkr, missing = metrics["akd"], metrics["mkr"], metrics["frames_without_detection"]
    return (f"{metrics['target']} keypoints of {metrics['num_videos']} videos ({metrics['num_frames']} frames): "
            f"AKD {'n/a' if akd is None else f'{akd:.3f} px'}, MKR {'n/a' if mkr is None else f'{mkr:.4f}'}; "
            f"no {metrics['target']} found in {missing['ground_truth']} ground-truth and {missing['generated']} "
            f"generated frames (left out)")

