#!/usr/bin/env python
"""Turn raw videos, or a published metadata CSV, into a training-ready dataset.

Output, in the layout FramesDataset prefers (docs/method.md §9)::

    <out>/train/<clip>/0000000.png ...  one folder of PNG frames per clip, every frame size x size RGB
    <out>/test/<clip>/...
    <out>/prepare_report.json           clips and frames written, files and clips skipped and why
    <out>/.prepare/                     resume bookkeeping (unfinished clips, finished sources)
    config/<NAME>.yaml                  a published config with dataset_params.root_dir, frame_shape set

Clip names are ``<source>#<start>#<end>`` (frame numbers in the source video, end exclusive): FramesDataset's
id sampling takes the text before the first '#' as the identity, so all clips of one source video form one
identity, and the train/test split is made per source video so no identity is in both.

Resuming: a clip is written into ``<out>/.prepare/partial/`` and renamed into ``train/`` or ``test/`` only when
complete, so every folder there is a finished clip. Re-running the same command skips finished clips and
redoes unfinished ones.
"""
import argparse
import csv
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from scipy import ndimage
from skimage.transform import resize
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: the project's modules live one folder up
    sys.path.insert(0, str(REPO_ROOT))

from media import VIDEO_EXTENSIONS, MediaError, atomic_file, check_outputs, probe_error, stream_video  # noqa: E402


class PrepareError(RuntimeError):
    """Input or an --out the tool cannot use; main prints it as one error line and exits with 1."""


CSV_COLUMNS = ("video_id", "start", "end", "bbox", "fps", "width", "height")  # plus optional "partition"
SPLITS = ("train", "test")
FRAME_NAME = "{:07d}.png"  # zero-padded so that sorting by name is time order
STATE_DIR = ".prepare"
REPORT_NAME = "prepare_report.json"


@dataclass(frozen=True)
class Options:
    """Everything that decides the pixels and names written; stored in <out>/.prepare to guard resumes."""
    out: str
    size: int
    crop: str = "none"  # none | center | motion | box
    box: tuple = None  # (left, top, right, bottom) in source pixels when crop == "box"
    crop_margin: float = 0.1
    motion_threshold: float = 0.06
    fps: float = None
    clip_length: int = 0  # 0: one clip per source video
    min_frames: int = 2


@dataclass
class CsvClip:
    """One metadata row: frames [start, end) counted at ref_fps, bbox (l, t, r, b) in a ref_size frame."""
    name: str
    split: str
    start: int
    end: int
    ref_fps: float
    bbox: tuple
    ref_size: tuple  # (width, height)

    def contains(self, index, source_fps):
        # Compare times as products so that frame numbers at ref_fps map onto a source of another rate.
        return self.start * source_fps <= index * self.ref_fps < self.end * source_fps

    def ended(self, index, source_fps):
        return index * self.ref_fps >= self.end * source_fps


@dataclass
class Job:
    """One source video and how to cut it: by --clip-length (clips None) or by metadata rows."""
    path: str
    key: str
    split: str = "train"
    clips: list = None


# ----------------------------------------------------------------------------------------------- frames

def keep_for_fps(index, source_fps, target_fps):
    """Whether source frame `index` survives reducing source_fps to target_fps (first frame of each period)."""
    if not target_fps or target_fps >= source_fps:
        return True
    ratio = target_fps / source_fps
    return index == 0 or math.floor(index * ratio + 1e-9) != math.floor((index - 1) * ratio + 1e-9)


def select_frames(frames, source_fps, target_fps):
    """Yield (source index, (H, W, 3) frame) for the frames kept by an optional frame-rate reduction."""
    for index, frame in enumerate(frames):
        if keep_for_fps(index, source_fps, target_fps):
            yield index, frame


def crop_and_resize(frame, box, size):
    """(H, W, 3) uint8 -> (size, size, 3) uint8: crop box (left, top, right, bottom), then resize.

    Anti-aliased like the published preprocessing (skimage resize), so downscaling does not alias.
    """
    left, top, right, bottom = box
    patch = frame[top:bottom, left:right]  # (h, w, 3)
    if patch.shape[:2] != (size, size):
        patch = resize(patch, (size, size), order=1, anti_aliasing=True, preserve_range=True)  # (size, size, 3)
        patch = np.clip(np.rint(patch), 0, 255).astype(np.uint8)
    return patch


def center_box(height, width):
    """The largest centred square (left, top, right, bottom) of a height x width frame."""
    side = min(height, width)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def square_box(bounds, height, width, margin):
    """The square around bounds (l, t, r, b), grown by margin, kept inside the frame (shifted, not cut)."""
    left, top, right, bottom = bounds
    side = int(round(min(max(right - left, bottom - top) * (1 + margin), height, width)))
    x0 = int(round(min(max((left + right - side) / 2, 0), width - side)))
    y0 = int(round(min(max((top + bottom - side) / 2, 0), height - side)))
    return x0, y0, x0 + side, y0 + side


def motion_bounds(moved):
    """(left, top, right, bottom) of the pixels set in a (H, W) bool mask; None when nothing moved.

    An opening first drops isolated pixels (compression noise) unless that would leave nothing.
    """
    cleaned = ndimage.binary_opening(moved, structure=np.ones((3, 3), bool))
    mask = cleaned if cleaned.any() else moved
    if not mask.any():
        return None
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def clip_number(selected_index, clip_length):
    return selected_index // clip_length if clip_length else 0


def motion_boxes(path, opts):
    """First pass of --crop motion: {clip number: square box around all that moved in that clip, or None}.

    Frame differencing between consecutive kept frames of one clip; only one (H, W) mask is held at a time.
    """
    boxes, moved, previous, current = {}, None, None, None
    threshold = opts.motion_threshold * 255
    with stream_video(path) as (fps, frames):
        for j, (_, frame) in enumerate(select_frames(frames, fps, opts.fps)):
            number = clip_number(j, opts.clip_length)
            frame = frame.astype(np.int16)  # (H, W, 3), signed for the difference
            if number != current:
                if moved is not None:
                    boxes[current] = motion_bounds(moved)
                moved, current = np.zeros(frame.shape[:2], bool), number  # (H, W)
            else:
                moved |= np.abs(frame - previous).max(axis=2) > threshold  # (H, W)
            previous = frame
    if moved is not None:
        boxes[current] = motion_bounds(moved)
        height, width = moved.shape
        boxes = {n: b and square_box(b, height, width, opts.crop_margin) for n, b in boxes.items()}
    return boxes


# ----------------------------------------------------------------------------------------------- writing

class ClipWriter:
    """Writes one clip's PNG frames into <out>/.prepare/partial/<tag>, renamed into <out>/<split>/ when done.

    The rename is the completeness marker: a folder under train/ or test/ is always a finished clip.
    """

    def __init__(self, out, split, tag):
        self.out, self.split, self.count = Path(out), split, 0
        self.partial = self.out / STATE_DIR / "partial" / tag
        shutil.rmtree(self.partial, ignore_errors=True)  # left over by an interrupted run
        self.partial.mkdir(parents=True)

    def add(self, frame):
        """Append one (size, size, 3) uint8 frame."""
        iio.imwrite(self.partial / FRAME_NAME.format(self.count), frame)
        self.count += 1

    def finish(self, name):
        final = self.out / self.split / name
        if final.exists():  # only when an earlier run was stopped between rmtree and rename
            shutil.rmtree(final)
        os.replace(self.partial, final)
        return final

    def abort(self):
        shutil.rmtree(self.partial, ignore_errors=True)


def clip_name(key, start, end):
    return f"{key}#{start:06d}#{end:06d}"


def completed_starts(out, split, key):
    """{start frame: clip name} of this source's clips already complete under <out>/<split>/."""
    folder, prefix, found = Path(out) / split, key + "#", {}
    if folder.is_dir():
        for entry in os.scandir(folder):
            parts = entry.name[len(prefix):].split("#")
            if entry.name.startswith(prefix) and len(parts) == 2 and parts[0].isdigit():
                found[int(parts[0])] = entry.name
    return found


class VideoCutter:
    """Cuts the kept frames of one source video into clips of opts.clip_length frames and writes them."""

    def __init__(self, job, opts, result, boxes=None):
        self.job, self.opts, self.result, self.boxes = job, opts, result, boxes or {}
        self.done = completed_starts(opts.out, job.split, job.key)
        self.clip, self.writer, self.box = None, None, None  # clip: [number, start, last index, count]

    def feed(self, selected_index, index, frame):
        """Take source frame `index` ((H, W, 3) uint8), the selected_index-th frame kept."""
        number = clip_number(selected_index, self.opts.clip_length)
        if self.clip is None or self.clip[0] != number:
            self.close()
            self.clip = [number, index, index, 0]
            self.box = self.crop_box(number, frame.shape)
            if index not in self.done:
                self.writer = ClipWriter(self.opts.out, self.job.split, f"{self.job.key}#{index:06d}")
        self.clip[2:] = [index, self.clip[3] + 1]
        if self.writer is not None:
            self.writer.add(crop_and_resize(frame, self.box, self.opts.size))

    def crop_box(self, number, shape):
        height, width = shape[:2]
        if self.opts.crop == "center":
            return center_box(height, width)
        if self.opts.crop == "box":
            left, top, right, bottom = self.opts.box
            if right > width or bottom > height:
                raise ValueError(f"--crop {left},{top},{right},{bottom} does not fit its {width}x{height} frames")
            return self.opts.box
        if self.opts.crop == "motion":
            return self.boxes.get(number) or center_box(height, width)
        return 0, 0, width, height

    def close(self):
        """Finish the clip in progress: rename it into place, or drop it when shorter than --min-frames."""
        clip, writer, self.clip, self.writer = self.clip, self.writer, None, None
        if clip is None:
            return
        number, start, last, count = clip
        name = clip_name(self.job.key, start, last + 1)
        if writer is None:
            self.result["already_complete"].append(self.done[start])
        elif count < self.opts.min_frames:
            writer.abort()
            self.result["skipped_clips"].append(
                {"clip": name, "reason": f"{count} frame(s), fewer than --min-frames {self.opts.min_frames}"})
        else:
            writer.finish(name)
            entry = {"name": name, "split": self.job.split, "frames": count}
            if self.opts.crop == "motion" and self.boxes.get(number) is None:
                entry["note"] = "nothing moved: centre crop"
            self.result["clips"].append(entry)

    def abort(self):
        if self.writer is not None:
            self.writer.abort()
        self.clip = self.writer = None


def write_json(path, data):
    """Write JSON through a temporary file and a rename, so an interrupted run never leaves half a marker."""
    with atomic_file(path) as temporary:
        temporary.write_text(json.dumps(data, indent=1))


def done_marker(opts, job):
    return Path(opts.out) / STATE_DIR / "done" / f"{job.key}.json"


def replay_done(job, opts, result):
    """Fill result from a finished source's marker when all its clips still exist; False if it must be redone."""
    marker = done_marker(opts, job)
    if not marker.is_file():
        return False
    record = json.loads(marker.read_text())
    if not all((Path(opts.out) / job.split / name).is_dir() for name in record["clips"]):
        return False
    result["already_complete"] = record["clips"]
    result["skipped_clips"] = record["skipped_clips"]
    return True


def process_video(job, opts, result):
    """Folder mode: cut, crop, resize and write all clips of one source video into result."""
    if replay_done(job, opts, result):
        return
    boxes = motion_boxes(job.path, opts) if opts.crop == "motion" else None
    cutter = VideoCutter(job, opts, result, boxes)
    try:
        with stream_video(job.path) as (fps, frames):
            if opts.fps and not fps:
                raise ValueError("the file states no frame rate, so --fps cannot be applied")
            for j, (index, frame) in enumerate(select_frames(frames, fps, opts.fps)):
                cutter.feed(j, index, frame)
        cutter.close()
    except Exception:
        cutter.abort()  # clips finished before the error stay (and are in result); the one in progress goes
        raise
    if not (result["clips"] or result["already_complete"] or result["skipped_clips"]):
        raise ValueError("no frame could be decoded")
    write_json(done_marker(opts, job), {"clips": [c["name"] for c in result["clips"]] + result["already_complete"],
                                        "skipped_clips": result["skipped_clips"]})


def clip_box(clip, shape):
    """A metadata bbox scaled from the row's width x height to this source's frame size, clipped to it."""
    height, width = shape[:2]
    ref_width, ref_height = clip.ref_size
    left, top, right, bottom = clip.bbox
    left, right = (int(max(0, min(width, v * width / ref_width))) for v in (left, right))
    top, bottom = (int(max(0, min(height, v * height / ref_height))) for v in (top, bottom))
    if right <= left or bottom <= top:
        raise ValueError(f"bbox {clip.bbox} lies outside the {width}x{height} source frames")
    return left, top, right, bottom


def process_csv_source(job, opts, result):
    """CSV mode: write every row (clip) of one source video into result, in a single decoding pass."""
    todo = [c for c in job.clips if not (Path(opts.out) / c.split / c.name).is_dir()]
    result["already_complete"] = [c.name for c in job.clips if c not in todo]
    writers, decoded = {}, 0  # clip name -> (ClipWriter, crop box)
    try:
        with stream_video(job.path) as (fps, frames):
            fps = fps or job.clips[0].ref_fps  # the container states no rate: trust the metadata's
            for index, frame in enumerate(frames if todo else ()):
                decoded = index + 1
                todo = feed_csv_frame(todo, writers, index, frame, fps, opts, result)
                if not todo:
                    break  # past the last row's end: no need to decode the rest of a long source
    except Exception:
        for writer, _ in writers.values():  # finished clips stay; unfinished ones are redone next run
            writer.abort()
        raise
    reported = {c["name"] for c in result["clips"]} | {c["clip"] for c in result["skipped_clips"]}
    for clip in job.clips:
        if clip.name in writers:  # the source ended inside this clip
            finish_csv_clip(clip, writers.pop(clip.name)[0], opts, result, short=True)
        elif clip.name not in reported and clip.name not in result["already_complete"]:
            result["skipped_clips"].append({"clip": clip.name, "reason": f"the source has {decoded} frames, none "
                                            f"in the row's frames {clip.start}-{clip.end} at {clip.ref_fps} fps"})


def feed_csv_frame(todo, writers, index, frame, fps, opts, result):
    """Give source frame `index` ((H, W, 3) uint8) to the rows it falls in; returns the rows not yet ended."""
    for clip in todo:
        if clip.contains(index, fps) and keep_for_fps(index, fps, opts.fps):
            if clip.name not in writers:
                try:
                    box = clip_box(clip, frame.shape)
                except ValueError as error:  # one bad row must not cost the source's other rows
                    result["skipped_clips"].append({"clip": clip.name, "reason": str(error)})
                    continue
                writers[clip.name] = ClipWriter(opts.out, clip.split, clip.name), box
            writer, box = writers[clip.name]
            writer.add(crop_and_resize(frame, box, opts.size))
        elif clip.name in writers and clip.ended(index, fps):
            finish_csv_clip(clip, writers.pop(clip.name)[0], opts, result)
    skipped = {c["clip"] for c in result["skipped_clips"]}
    return [c for c in todo if not c.ended(index, fps) and c.name not in skipped]


def finish_csv_clip(clip, writer, opts, result, short=False):
    if writer.count < opts.min_frames:
        writer.abort()
        result["skipped_clips"].append(
            {"clip": clip.name, "reason": f"{writer.count} frame(s), fewer than --min-frames {opts.min_frames}"})
        return
    writer.finish(clip.name)
    entry = {"name": clip.name, "split": clip.split, "frames": writer.count}
    if short:
        entry["note"] = f"the source ends before the row's end frame {clip.end}"
    result["clips"].append(entry)


def run_job(job, opts):
    """Process one source in a worker; an error skips that source (reported), never the whole run."""
    result = {"source": job.path, "key": job.key, "clips": [], "already_complete": [], "skipped_clips": [],
              "error": None}
    try:
        (process_csv_source if job.clips is not None else process_video)(job, opts, result)
    except Exception as error:  # a corrupt or unreadable video must not stop the others
        first_line = (str(error).strip().splitlines() or [""])[0]
        result["error"] = f"{type(error).__name__}: {first_line}"
    return result


def run_jobs(jobs, opts, workers):
    """Yield each job's result as it completes, in worker processes when workers > 1."""
    if workers <= 1 or len(jobs) <= 1:
        for job in tqdm(jobs, desc="videos", unit="video", disable=None):
            yield run_job(job, opts)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_job, job, opts) for job in jobs]
        for future in tqdm(as_completed(futures), total=len(futures), desc="videos", unit="video", disable=None):
            yield future.result()


# ----------------------------------------------------------------------------------------------- inputs

def assign_splits(keys, test_fraction, seed):
    """{key: "train" | "test"}: the round(fraction * n) keys of smallest seeded hash go to test.

    Ranking by a hash of the name (not shuffling a list) makes a source's split independent of file order
    and of --workers. With 0 < fraction < 1 and two or more sources, each split gets at least one.
    """
    keys = sorted(set(keys))
    n_test = round(test_fraction * len(keys))
    if 0 < test_fraction < 1 and len(keys) >= 2:
        n_test = min(max(n_test, 1), len(keys) - 1)
    ranked = sorted(keys, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    test = set(ranked[:n_test])
    return {k: "test" if k in test else "train" for k in keys}


def source_key(relative_path):
    """A clip-name-safe source name: '#' (the identity separator), '/' and spaces become '_'."""
    return re.sub(r"[^\w.-]+", "_", relative_path.with_suffix("").as_posix())


def video_jobs(folder, test_fraction, seed, workers=1):
    """(jobs, skipped files) for every readable video under folder (recursively), split per source video.

    Unreadable files are found (by probing) before the split, so none of them takes a test slot.
    """
    folder, found, skipped = Path(folder), {}, []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            skipped.append({"file": str(path), "reason": f"extension {path.suffix or '(none)'} is not a video "
                                                         f"extension ({' '.join(VIDEO_EXTENSIONS)})"})
            continue
        key = source_key(path.relative_to(folder))
        if key in found:
            skipped.append({"file": str(path), "reason": f"same source name {key!r} as {found[key]}"})
            continue
        found[key] = path
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # ffmpeg runs in subprocesses: threads do
        problems = dict(zip(found, pool.map(probe_error, found.values())))
    skipped += [{"file": str(found.pop(key)), "reason": why} for key, why in problems.items() if why]
    splits = assign_splits(found, test_fraction, seed)
    return [Job(str(path), key, splits[key]) for key, path in sorted(found.items())], skipped


def parse_row(row):
    """A CsvClip from one metadata row (split None when there is no partition column); ValueError if bad."""
    video_id = row["video_id"].strip()
    if not video_id or "/" in video_id or "\\" in video_id or video_id.startswith("."):
        raise ValueError(f"video_id {video_id!r} is not a usable clip name")
    start, end = int(row["start"]), int(row["end"])
    if end <= start:
        raise ValueError(f"end {end} is not after start {start}")
    bbox = tuple(int(float(v)) for v in row["bbox"].split("-"))
    if len(bbox) != 4 or bbox[2] <= bbox[0] or bbox[3] <= bbox[1]:
        raise ValueError(f"bbox {row['bbox']!r} is not left-top-right-bottom with right > left, bottom > top")
    fps, width, height = float(row["fps"]), int(row["width"]), int(row["height"])
    if fps <= 0 or width <= 0 or height <= 0:
        raise ValueError(f"fps {fps}, width {width}, height {height} must be positive")
    split = (row.get("partition") or "").strip() or None
    if split not in (None,) + SPLITS:
        raise ValueError(f"partition {split!r} is neither train nor test")
    # Published ids already read <youtube id>#<start>#<end>; keep them verbatim (test pair lists name them).
    name = video_id if "#" in video_id else clip_name(video_id, start, end)
    return CsvClip(name, split, start, end, fps, bbox, (width, height))


def read_metadata(csv_path):
    """({source id: [CsvClip]}, skipped rows) from a metadata CSV; a missing column is an error."""
    clips, names, skipped = {}, set(), []
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise PrepareError(f"{csv_path}: missing column(s) {', '.join(missing)}; expected "
                               f"{','.join(CSV_COLUMNS)},partition, found {','.join(reader.fieldnames or [])}")
        for line, row in enumerate(reader, start=2):
            try:
                clip = parse_row(row)
                if clip.name in names:
                    raise ValueError(f"clip {clip.name} already defined by an earlier row")
            except (ValueError, TypeError, AttributeError) as error:
                skipped.append({"file": f"{csv_path}:{line}", "reason": str(error)})
                continue
            names.add(clip.name)
            clips.setdefault(row["video_id"].strip().split("#")[0], []).append(clip)
    return clips, skipped


def index_sources(sources):
    """{name without extension: path} of the videos in sources, preferring .mp4 when a name has several."""
    found = {}
    if Path(sources).is_dir():
        videos = [p for p in Path(sources).iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()]
        for path in sorted(videos, key=lambda p: (p.suffix.lower() != ".mp4", p.name), reverse=True):
            found[path.stem] = path  # reversed order: the preferred file is written last and wins
    return found


def yt_dlp_command():
    """The yt-dlp command line prefix, or None when it is not installed (it is optional)."""
    if shutil.which("yt-dlp"):
        return ["yt-dlp"]
    return [sys.executable, "-m", "yt_dlp"] if importlib.util.find_spec("yt_dlp") else None


def fetch_sources(source_ids, sources):
    """Download missing sources with yt-dlp as <sources>/<id>.<ext>. Returns {id: why it failed}."""
    command = yt_dlp_command()
    if command is None:
        return {i: f"no file {i}.<video extension> in {sources}, and --fetch needs yt-dlp, which is not installed "
                   f"(pip install yt-dlp)" for i in source_ids}
    failed = {}
    for source_id in tqdm(sorted(source_ids), desc="fetching", unit="video", disable=None):
        url = f"https://www.youtube.com/watch?v={source_id}"
        args = ["-f", "bv*[ext=mp4]/b[ext=mp4]/bv*/b", "-o", str(Path(sources) / f"{source_id}.%(ext)s"), url]
        done = subprocess.run(command + args, capture_output=True, text=True)
        if done.returncode != 0 or source_id not in index_sources(sources):
            lines = (done.stderr or done.stdout or "no output").strip().splitlines()
            failed[source_id] = f"yt-dlp failed: {lines[-1] if lines else 'no output'}"
    return failed


def csv_jobs(csv_path, sources, test_fraction, seed, fetch):
    """(jobs, skipped rows, missing sources) for a metadata CSV with local source videos."""
    clips, skipped = read_metadata(csv_path)
    available = index_sources(sources)
    missing = {s: f"no file {s}.<video extension> in {sources}" for s in clips if s not in available}
    if fetch and missing:
        Path(sources).mkdir(parents=True, exist_ok=True)
        missing = fetch_sources(missing, sources)
        available = index_sources(sources)
    splits = assign_splits(clips, test_fraction, seed)  # only for rows without a partition
    jobs = []
    for source_id, rows in sorted(clips.items()):
        if source_id in missing:
            continue
        for clip in rows:
            clip.split = clip.split or splits[source_id]
        jobs.append(Job(str(available[source_id]), source_id, clips=rows))
    missing = [{"source": s, "clips": len(clips[s]), "reason": r} for s, r in sorted(missing.items())]
    return jobs, skipped, missing


# ----------------------------------------------------------------------------------------------- config stub

def yaml_scalar(text):
    return text if re.fullmatch(r"[\w./-]+", text) else json.dumps(text)  # JSON strings are valid YAML


def _is_content(line):
    return bool(line.strip()) and not line.lstrip().startswith("#")


def _indent(line):
    return len(line) - len(line.lstrip(" "))


def _find_key(lines, path):
    """(line index, end of its block) of a nested key such as ("dataset_params", "root_dir"); None if absent."""
    start, end, depth = -1, len(lines), -1  # the whole file is the block of a virtual root
    for key in path:
        children = [k for k in range(start + 1, end) if _is_content(lines[k]) and _indent(lines[k]) > depth]
        if not children:
            return None
        depth = min(_indent(lines[k]) for k in children)
        found = [k for k in children if _indent(lines[k]) == depth and re.match(rf"\s*{key}\s*:", lines[k])]
        if not found:
            return None
        start = found[0]
        end = next((k for k in children if k > start and _indent(lines[k]) <= depth), end)
    return start, end


def _set_value(lines, path, value):
    """Replace the value of the key at path with `value` (flow YAML), keeping its comment; False if absent.

    A block value (e.g. "- 256" lines below the key) is folded into the one line.
    """
    found = _find_key(lines, path)
    if found is None:
        return False
    k, end = found
    match = re.match(r"(\s*[^\s:]+\s*:)[ \t]*([^#\n]*?)([ \t]*#[^\n]*)?\n?$", lines[k])
    if not match.group(2):  # block value: deeper lines, or "- item" lines at the key's own indent
        while end < len(lines) and re.match(rf"{' ' * _indent(lines[k])}- ", lines[end]):
            end += 1
        del lines[k + 1:end]
    lines[k] = f"{match.group(1)} {value}{match.group(3) or ''}\n"
    return True


def make_config_stub(base_text, root_dir, size, base_name):
    """base_text (a published YAML config) with the dataset's values set, comments and layout kept.

    Sets dataset_params.root_dir and frame_shape; also pairs_list to null (the base's list names the base's
    videos) and an augmentation crop size that equalled the base's frame size (or any, with frame_shape null:
    the base's frames are stored at the size they are cropped back to) to the new size.
    """
    import yaml
    base = (yaml.safe_load(base_text) or {}).get("dataset_params")
    if not isinstance(base, dict):
        raise ValueError(f"{base_name} has no top-level dataset_params section")
    lines = base_text.splitlines(keepends=True)
    changes = {("dataset_params", "root_dir"): (yaml_scalar(root_dir), root_dir),
               ("dataset_params", "frame_shape"): (f"[{size}, {size}, 3]", [size, size, 3])}
    if base.get("pairs_list") is not None:
        changes[("dataset_params", "pairs_list")] = ("null", None)
    crop = ((base.get("augmentation_params") or {}).get("crop_param") or {}).get("size")
    frame_shape = base.get("frame_shape")  # null: the base's frames are stored at its size, the crop's
    if crop is not None and (frame_shape is None or list(crop) == list(frame_shape[:2])):
        changes[("dataset_params", "augmentation_params", "crop_param", "size")] = (f"[{size}, {size}]", [size, size])
    for path, (text, _) in changes.items():
        if not _set_value(lines, path, text):  # only root_dir/frame_shape can be absent: add under the header
            header, end = _find_key(lines, path[:1])
            indent = next((_indent(line) for line in lines[header + 1:end] if _is_content(line)), 2)
            lines.insert(header + 1, f"{' ' * indent}{path[-1]}: {text}\n")
    names = ", ".join(".".join(path[1:]) for path in changes)
    text = (f"# Written by tools/prepare_dataset.py from {base_name}.\n# Changed in dataset_params: {names}.\n"
            f"# Everything else is the base's: check id_sampling and the training schedule suit this data.\n"
            + "".join(lines))
    _check_stub(yaml.safe_load(text), changes, base_name)
    return text


def _check_stub(config, changes, base_name):
    """The edited text must parse and hold the new values (a YAML construct the editor missed would not)."""
    for path, (_, expected) in changes.items():
        value = config
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value != expected:
            raise ValueError(f"editing {base_name} did not give {'.'.join(path)} = {expected!r}; found {value!r}")


def write_config_stub(base, target, root_dir, size, overwrite):
    """Write the stub; returns (path or None, note). Never fatal: the dataset is written either way."""
    base, target = Path(base), Path(target)
    if not base.is_file():
        return None, f"not written: base config {base} not found (pass --base-config, or --no-config)"
    try:
        text = make_config_stub(base.read_text(), root_dir, size, str(base))
    except Exception as error:  # a malformed base config must not lose the prepared dataset's report
        return None, f"not written: {error}"
    try:
        if target.exists() and target.read_text() != text and not overwrite:
            return str(target), "kept the existing file (it differs; pass --overwrite-config to replace it)"
        with atomic_file(target) as temporary:
            temporary.write_text(text)
    except OSError as error:
        return None, f"not written: {target}: {error.strerror or error}"
    problem = stub_problem(text, target)
    return str(target), f"written from {base}" + (f", but {problem}" if problem else "")


def stub_problem(text, target):
    """Why the stub's config cannot be used (a frame size the networks cannot take, ...), or None."""
    if str(REPO_ROOT) not in sys.path:  # run as a script: the project's modules live one folder up
        sys.path.insert(0, str(REPO_ROOT))
    import yaml
    from config import ConfigError, validate_config
    try:
        validate_config(yaml.safe_load(text), str(target))
    except ConfigError as error:
        return " ".join(line.strip() for line in str(error).splitlines())
    return None


# ----------------------------------------------------------------------------------------------- main

def check_resume_options(out, fingerprint):
    """Refuse to resume into <out> prepared with other options: clips would silently mix two settings."""
    path = Path(out) / STATE_DIR / "options.json"
    if path.is_file():
        before = json.loads(path.read_text())
        changed = {k: (before.get(k), v) for k, v in fingerprint.items() if before.get(k) != v}
        if changed:
            what = ", ".join(f"{k} was {old!r}, now {new!r}" for k, (old, new) in sorted(changed.items()))
            raise PrepareError(f"{out} was prepared with other options ({what}): use another --out, or delete "
                               f"{out} to start over")


def collect(results, started):
    """Merge per-source results into the report's lists and counts."""
    written, complete, skipped_clips, errors = [], 0, [], []
    for result in sorted(results, key=lambda r: r["key"]):
        written += [dict(c, source=result["source"]) for c in result["clips"]]
        complete += len(result["already_complete"])
        skipped_clips += [dict(c, source=result["source"]) for c in result["skipped_clips"]]
        if result["error"]:
            errors.append({"file": result["source"], "reason": result["error"]})
        elif not (result["clips"] or result["already_complete"]):
            errors.append({"file": result["source"], "reason": "no clip long enough (see skipped_clips)"})
    return {"clips_written": len(written), "frames_written": sum(c["frames"] for c in written),
            "clips_already_complete": complete, "seconds": round(time.time() - started, 2),
            "written": written, "skipped_clips": skipped_clips, "errors": errors}


def print_summary(report, report_path, file=None):
    """A few human-readable lines: counts, then what was skipped and why (first 20 of each list)."""
    totals = report["clips_in_dataset"]
    lines = [f"Wrote {report['clips_written']} clips ({report['frames_written']} frames) in {report['seconds']} s; "
             f"{report['clips_already_complete']} were already complete. {report['out']} now holds "
             f"{totals['train']} train and {totals['test']} test clips."]
    for title, items in (("Skipped files", report["skipped_files"]), ("Skipped clips", report["skipped_clips"]),
                         ("Missing sources", report["missing_sources"])):
        if items:
            lines.append(f"{title} ({len(items)}):")
            lines += [f"  {i.get('file') or i.get('clip') or i.get('source')}: {i['reason']}" for i in items[:20]]
            lines += [f"  ... {len(items) - 20} more in {report_path}"] if len(items) > 20 else []
    lines.append(f"Config stub: {report['config']['path']} ({report['config']['note']})")
    lines.append(f"Report: {report_path}")
    print("\n".join(lines), file=file or sys.stdout)


def parse_crop(text):
    """'none' | 'center' | 'motion' | 'L,T,R,B' -> (mode, box or None)."""
    if text in ("none", "center", "motion"):
        return text, None
    try:
        box = tuple(int(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or box[0] < 0 or box[1] < 0 or box[2] <= box[0] or box[3] <= box[1]:
        raise argparse.ArgumentTypeError(f"expected none, center, motion or LEFT,TOP,RIGHT,BOTTOM pixels with "
                                         f"right > left and bottom > top; found {text!r}")
    return "box", box


EPILOG = """\
examples:
  # your own videos: 256x256, square crop around the moving content, 64-frame clips, 20% test
  python tools/prepare_dataset.py --videos ~/my_videos --out data/mine --size 256 --crop motion \\
      --clip-length 64 --fps 15 --base-config config/taichi256.yaml --workers 4

  # the published TED metadata with YouTube videos already downloaded into data/ted-sources/<id>.mp4
  python tools/prepare_dataset.py --csv data/ted384.csv --sources data/ted-sources --out data/ted384 \\
      --size 384 --base-config config/ted384.yaml

Re-run the same command after an interruption: finished clips are kept, unfinished ones redone.
"""


def build_parser():
    parser = argparse.ArgumentParser(
        description="Prepare a dataset in the layout FramesDataset prefers: <out>/{train,test}/<clip>/NNNNNNN.png, "
                    "clips named <source>#<start>#<end> so id sampling groups the clips of one source video.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--videos", metavar="DIR", help="folder of your videos (searched recursively)")
    source.add_argument("--csv", metavar="FILE", help="metadata CSV: video_id,start,end,bbox,fps,width,height"
                        "[,partition]; start/end: frame numbers at fps; bbox: left-top-right-bottom in width x height")
    add("--sources", metavar="DIR", help="with --csv: folder of the source videos, named <youtube id>.mp4")
    add("--fetch", action="store_true",
        help="with --csv: download missing sources with yt-dlp first (optional: pip install yt-dlp)")
    add("--out", metavar="DIR", required=True, help="dataset folder to write, e.g. data/mine")
    add("--size", type=int, metavar="SIZE", default=256, help="output frames are SIZE x SIZE (default 256)")
    add("--crop", type=parse_crop, default=("none", None), metavar="MODE",
        help="--videos only. none: whole frame (squashed if not square; default); center: largest centred square; "
             "motion: square around everything that moves in the clip (frame differencing; decodes each video "
             "twice); L,T,R,B: this box in source pixels")
    add("--crop-margin", type=float, metavar="M", default=0.1, help="motion crop: grow the box by this fraction")
    add("--motion-threshold", type=float, metavar="T", default=0.06,
        help="motion crop: a pixel moves when a channel changes by more than T (0-1; default 0.06)")
    add("--fps", type=float, metavar="FPS", help="reduce the frame rate to at most FPS (keeps the first frame of "
        "each 1/FPS period)")
    add("--clip-length", type=int, metavar="N", default=0,
        help="--videos only: cut every video into clips of N kept frames; 0: one clip per video (default)")
    add("--min-frames", type=int, metavar="N",
        help="drop clips shorter than N frames (default: half of --clip-length, at least 2)")
    add("--test-fraction", type=float, metavar="F", default=0.2,
        help="share of source videos put in test/ (--videos, or CSV rows without a partition; default 0.2)")
    add("--seed", type=int, metavar="SEED", default=0, help="seed of the train/test split (default 0)")
    add("--workers", type=int, metavar="N", default=max(1, (os.cpu_count() or 2) // 2),
        help="worker processes, one source video each (default: half the CPU cores)")
    add("--base-config", metavar="YAML", default=str(REPO_ROOT / "config" / "vox256.yaml"),
        help="published config the stub is copied from (default config/vox256.yaml)")
    add("--config-out", metavar="YAML", help="where to write the stub (default config/<name of --out>.yaml)")
    add("--no-config", action="store_true", help="do not write a config stub")
    add("--overwrite-config", action="store_true", help="replace an existing stub that differs")
    add("--json", action="store_true", help="print the whole report as JSON on stdout (the summary goes to stderr)")
    return parser


def check_out(out):
    """Refuse an --out that is not a folder, or cannot become one, before any video is read."""
    out = Path(out)
    existing = next(path for path in [out, *out.absolute().parents] if path.exists())
    if not existing.is_dir():
        where = "is a file" if existing == out else f"is under {existing}, a file"
        raise PrepareError(f"--out {out}: {where}; expected a folder (made when missing)")
    if not os.access(existing, os.W_OK):
        raise PrepareError(f"--out {out}: {existing} is not writable")


def parse_args(argv):
    """Parsed arguments; argparse reports a malformed value, PrepareError an unusable one."""
    args = build_parser().parse_args(argv)
    folder = args.videos or args.sources
    if args.csv and not args.sources:
        raise PrepareError("--csv needs --sources DIR, the folder holding the source videos (<youtube id>.mp4)")
    if args.csv and not Path(args.csv).is_file():
        raise PrepareError(f"--csv {args.csv}: no such file")
    if args.csv and (args.crop[0] != "none" or args.clip_length):
        raise PrepareError("--crop and --clip-length apply to --videos; with --csv each row gives its box and frames")
    if args.videos and not Path(folder).is_dir():
        raise PrepareError(f"--videos {folder}: no such folder")
    if args.csv and not args.fetch and not Path(folder).is_dir():
        raise PrepareError(f"--sources {folder}: no such folder (pass --fetch to download the sources into it)")
    for flag, value, ok, expected in (("--size", args.size, args.size >= 8, "8 or more"),
                                      ("--clip-length", args.clip_length, args.clip_length >= 0, "0 or more"),
                                      ("--test-fraction", args.test_fraction, 0 <= args.test_fraction <= 1, "0 to 1"),
                                      ("--fps", args.fps, args.fps is None or args.fps > 0, "above 0"),
                                      ("--workers", args.workers, args.workers >= 1, "1 or more")):
        if not ok:
            raise PrepareError(f"{flag} must be {expected}; found {value}")
    check_out(args.out)
    check_apart(args)
    if args.min_frames is None:
        args.min_frames = max(2, args.clip_length // 2)
    return args


def config_target(args):
    """Where the config stub goes: --config-out, else config/<name of --out>.yaml."""
    return Path(args.config_out or REPO_ROOT / "config" / f"{Path(args.out).resolve().name}.yaml")


def check_apart(args):
    """Refuse outputs that would overwrite an input (the stub over --base-config, the report over --csv) or an
    --out inside the --videos folder it reads (its clips would be read as videos when the command is run again)."""
    out = Path(args.out).resolve()
    if args.videos and out.is_relative_to(Path(args.videos).resolve()):  # --csv names its sources: no such risk
        raise PrepareError(f"--out {args.out} is inside --videos {args.videos}: the clips written there would be "
                           f"read as videos when the command runs again; give a folder outside it")
    outputs = {"report": out / REPORT_NAME, "config stub": None if args.no_config else config_target(args)}
    try:
        check_outputs(outputs, {"--base-config": args.base_config, "--csv": args.csv})
    except MediaError as error:
        raise PrepareError(f"{error} (the stub's path is --config-out, else config/<name of --out>.yaml)") from None


def dataset_root_value(out):
    """root_dir for the config: relative to the repository when inside it (configs are run from there)."""
    out = Path(out).resolve()
    return out.relative_to(REPO_ROOT).as_posix() if out.is_relative_to(REPO_ROOT) else out.as_posix()


def main(argv=None):
    try:
        return prepare(argv)
    except PrepareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def prepare(argv=None):
    """Parse the arguments and prepare the dataset; returns the exit code."""
    args = parse_args(argv)
    started = time.time()
    opts = Options(out=args.out, size=args.size, crop=args.crop[0], box=args.crop[1], crop_margin=args.crop_margin,
                   motion_threshold=args.motion_threshold, fps=args.fps, clip_length=args.clip_length,
                   min_frames=args.min_frames)
    fingerprint = dict(asdict(opts), mode="csv" if args.csv else "videos", seed=args.seed,
                       test_fraction=args.test_fraction, box=list(opts.box) if opts.box else None)
    del fingerprint["out"]
    check_resume_options(args.out, fingerprint)
    if args.videos:
        (jobs, skipped), missing = video_jobs(args.videos, args.test_fraction, args.seed, args.workers), []
    else:
        jobs, skipped, missing = csv_jobs(args.csv, args.sources, args.test_fraction, args.seed, args.fetch)
    if args.videos and not jobs:  # (a CSV's missing sources still go to the report, for --fetch)
        raise PrepareError(nothing_to_prepare(args.videos, skipped))
    write_json(Path(args.out) / STATE_DIR / "options.json", fingerprint)
    for split in SPLITS:
        (Path(args.out) / split).mkdir(parents=True, exist_ok=True)
    try:
        report = collect(run_jobs(jobs, opts, args.workers), started)
    except KeyboardInterrupt:
        print(f"\nInterrupted: re-run the same command to resume; finished clips in {args.out} are kept.")
        return 130
    shutil.rmtree(Path(args.out) / STATE_DIR / "partial", ignore_errors=True)  # all jobs ended: only stale ones
    report = finish_report(args, fingerprint, report, skipped, missing)
    if report["clips_in_dataset"]["train"] + report["clips_in_dataset"]["test"]:
        return 0
    print(f"error: no clip was written to {args.out}; the reasons are in {Path(args.out) / REPORT_NAME}",
          file=sys.stderr)
    return 1


def nothing_to_prepare(videos, skipped):
    """The one line for a --videos folder that holds no usable video: what was looked at and the first reason."""
    if not skipped:
        return f"--videos {videos}: no video found; expected {' '.join(VIDEO_EXTENSIONS)} files"
    return (f"--videos {videos}: none of its {len(skipped)} files is a usable video "
            f"(first: {skipped[0]['file']}: {skipped[0]['reason']})")


def finish_report(args, fingerprint, report, skipped, missing):
    """Add inputs, totals and the config stub to the report; write, print and return it."""
    out = Path(args.out)
    report["skipped_files"] = skipped + report.pop("errors")
    report["missing_sources"] = missing
    report["clips_in_dataset"] = {s: sum(1 for p in (out / s).iterdir() if p.is_dir()) for s in SPLITS}
    config = {"path": None, "note": "not written (--no-config)"}
    if not args.no_config:
        path, note = write_config_stub(args.base_config, config_target(args), dataset_root_value(out), args.size,
                                       args.overwrite_config)
        config = {"path": path, "note": note}
    report = {"out": str(out), "options": fingerprint, **report, "config": config}
    report_path = out / REPORT_NAME
    write_json(report_path, report)
    if args.json:
        print(json.dumps(report, indent=1))
    print_summary(report, report_path, file=sys.stderr if args.json else sys.stdout)
    return report


if __name__ == "__main__":
    sys.exit(main())
