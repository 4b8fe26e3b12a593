"""Cropping a user's photo and video the way the training data were cropped: a square around the face
(talking-head models) or around the whole figure (body models), one fixed box per camera shot of a video.

The detectors are OpenCV's classic ones, which ship inside the ``opencv-python-headless`` wheel and so work
offline once installed: Haar cascades for frontal and profile faces, and the HOG people detector. OpenCV 5
moves them out of the main package, hence the pin ``opencv-python-headless<5`` in requirements-app.txt.

Boxes are ``(left, top, right, bottom)`` in source pixels, right and bottom exclusive. Frames are (H, W, 3)
uint8 RGB here; the file readers return float32 in [0, 1] and are converted at the boundary.

    from cropping import crop_inputs
    cropped = crop_inputs("me.png", "talk.mp4", "auto", folder, size=256, preview="result.crop.png")
    cropped.source, cropped.driving  # paths of the cropped image and video, ready for demo.py
"""
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

try:
    import cv2
except ImportError:  # installed by requirements-app.txt; require_opencv() says so where it is needed
    cv2 = None

from media import (IMAGE_EXTENSIONS, MAX_PIXELS, VIDEO_EXTENSIONS, WRITE_OPTIONS, MediaError, VideoWriter,
                   atomic_file, check_pixels, check_writable, has_audio, iter_video_frames, read_image, same_file,
                   video_info, write_image)

VIDEO_FORMATS = tuple(WRITE_OPTIONS)  # the video formats a crop can be written in

TARGETS = ("auto", "face", "person")
FACE_MARGIN = 0.5  # the face box grows by half its side on each side: forehead, hair and chin in, as in VoxCeleb
PERSON_MARGIN = 0.05  # a little room around the figure
FACE_OF_FRAME = 0.25  # auto: a face at least this fraction of the frame's short side is a talking head
MIN_FACE_NEIGHBOURS = 5  # Haar detections supporting a face candidate: real faces had 5-45 ...
STRONG_FACE = 12  # ... and false ones (clothes, hands) 4-13; a face this well supported anchors a video's track
MIN_PERSON_WEIGHT = 0.5  # HOG SVM score of a whole figure accepted without a face
MEDIAN_WINDOW = 9  # frames over which the per-frame boxes are median-filtered into the track outliers are met by
OUTLIER_DISTANCE = 1.0  # a detection whose centre is this many track sides off the track is a false one ...
OUTLIER_SCALE = 2.0  # ... and so is one this many times larger or smaller than the track
CUT_SIDE = 32  # shots are found on grey thumbnails this small: noise and small motions average out
CUT_WINDOW = 15  # a frame difference is compared with the median of those this many frames either side ...
CUT_RATIO = 6.0  # ... and is a cut when this many times larger (a continuous talk: at most 2x) ...
CUT_MIN = 10.0  # ... and at least this many grey levels (of 255), so a near-still video's flicker is no cut
FLASH_FRAMES = 2  # a jump whose content comes back within this many frames is a flash, not a cut
SIZES = (16, 4096)  # the side of a crop, in pixels: 4096 is 48 MB a frame, beyond any model here
MAX_DETECTIONS = 120  # frames of a video looked at (evenly spaced); the others take their neighbours' box
DETECT_SIDE = 480  # frames are scaled down to this short side for the detectors


class CropError(ValueError):
    """Input the cropper cannot use, or nothing found; the message names the file and what to do."""


def require_opencv():
    if cv2 is None:
        raise CropError("cropping needs OpenCV: pip install -r requirements-app.txt")


class Box(NamedTuple):
    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self):
        return self.right - self.left

    @property
    def height(self):
        return self.bottom - self.top

    @property
    def side(self):
        return max(self.width, self.height)

    @property
    def centre(self):
        return (self.left + self.right) / 2, (self.top + self.bottom) / 2

    def rounded(self):
        return Box(*(int(round(v)) for v in self))

    def contains(self, other):
        return (self.left <= other.left and self.top <= other.top and self.right >= other.right
                and self.bottom >= other.bottom)


def union(boxes):
    return Box(min(b.left for b in boxes), min(b.top for b in boxes), max(b.right for b in boxes),
               max(b.bottom for b in boxes))


def parse_box(text):
    """'LEFT,TOP,RIGHT,BOTTOM' (pixels) -> Box; raises CropError saying what was expected."""
    try:
        box = Box(*(int(v) for v in str(text).split(",")))
    except (TypeError, ValueError):
        raise CropError(f"--box {text!r}: expected LEFT,TOP,RIGHT,BOTTOM, four integers in pixels") from None
    if box.right <= box.left or box.bottom <= box.top or box.left < 0 or box.top < 0:
        raise CropError(f"--box {text!r}: expected 0 <= LEFT < RIGHT and 0 <= TOP < BOTTOM")
    return box


# ----------------------------------------------------------------------------------------------------------
# Detection


class Detector:
    """OpenCV's face cascades and HOG people detector, loaded once (about 50 ms)."""

    def __init__(self):
        require_opencv()
        folder = Path(cv2.data.haarcascades)
        self.frontal = cv2.CascadeClassifier(str(folder / "haarcascade_frontalface_default.xml"))
        self.profile = cv2.CascadeClassifier(str(folder / "haarcascade_profileface.xml"))
        if self.frontal.empty() or self.profile.empty():
            raise CropError(f"OpenCV's face cascades are missing in {folder}: reinstall opencv-python-headless<5")
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def _grey(self, frame):
        """(H, W, 3) uint8 -> equalised grey at most DETECT_SIDE on its short side, and the scale back."""
        scale = max(1.0, min(frame.shape[:2]) / DETECT_SIDE)
        small = frame if scale == 1 else cv2.resize(
            frame, (round(frame.shape[1] / scale), round(frame.shape[0] / scale)), interpolation=cv2.INTER_AREA)
        return cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)), scale

    def faces(self, frame):
        """Candidate faces of a frame: [(Box, support)], support being the number of Haar detections merged
        into it. Frontal faces; profiles (both ways) only when no frontal face is found."""
        grey, scale = self._grey(frame)
        min_side = max(20, min(grey.shape) // 16)
        width = grey.shape[1]
        for cascade, mirrored in ((self.frontal, False), (self.profile, False), (self.profile, True)):
            image = grey[:, ::-1].copy() if mirrored else grey
            found, support = cascade.detectMultiScale2(image, scaleFactor=1.1, minNeighbors=3,
                                                       minSize=(min_side, min_side))
            candidates = []
            for (x, y, w, h), n in zip(found, support):
                left = width - x - w if mirrored else x
                if n >= MIN_FACE_NEIGHBOURS:
                    candidates.append((Box(left * scale, y * scale, (left + w) * scale, (y + h) * scale), int(n)))
            if candidates:
                return candidates
        return []

    def person(self, frame):
        """The highest-scoring whole figure of HOG, as a Box, or None."""
        grey, scale = self._grey(frame)
        window_width, window_height = self.hog.winSize
        if grey.shape[0] < window_height or grey.shape[1] < window_width:
            return None  # smaller than one detection window (OpenCV 4.14 crashes on such an image)
        found, weights = self.hog.detectMultiScale(grey, winStride=(8, 8), padding=(8, 8), scale=1.05)
        if len(found) == 0 or float(np.max(weights)) < MIN_PERSON_WEIGHT:
            return None
        x, y, w, h = found[int(np.argmax(weights))]
        return Box(x * scale, y * scale, (x + w) * scale, (y + h) * scale)


def figure_from_face(face, frame_shape):
    """The figure a face belongs to, by body proportions: about 3.5 face widths across (shoulders and arms) and
    7.5 face heights from the hair down; clipped to the frame (H, W)."""
    H, W = frame_shape
    cx, _ = face.centre
    return Box(max(0.0, cx - 1.75 * face.width), max(0.0, face.top - 0.6 * face.height),
               min(float(W), cx + 1.75 * face.width), min(float(H), face.top + 7.5 * face.height))


@dataclass
class Found:
    """What one frame shows: candidate faces [(Box, support)] and HOG's figure (or None)."""
    faces: list
    body: Optional[Box]

    @property
    def face(self):
        """The best-supported face, or None."""
        return max(self.faces, key=lambda candidate: candidate[1])[0] if self.faces else None


def look(frame, target, detector):
    """Detections in one (H, W, 3) uint8 frame for ``target`` ('face' or 'person')."""
    return Found(detector.faces(frame), detector.person(frame) if target == "person" else None)


def figure_of(face, body, frame_shape):
    """The figure: estimated from the face, grown to HOG's figure when the face sits in that figure's top third
    (it is then the same person); HOG's figure alone when there is no face."""
    if face is None:
        return body
    figure = figure_from_face(face, frame_shape)
    if body is not None and body.left <= face.centre[0] <= body.right \
            and body.top <= face.centre[1] <= body.top + body.height / 3:
        figure = union([figure, body])
    return figure


def track_faces(found):
    """One face per frame (None where none or not looked), consistent over time.

    Faces supported by at least STRONG_FACE detections anchor the track; in every frame the candidate nearest
    the anchor nearest in time is kept when it is within one face side of it and of a similar size, so a
    passing false detection (a hand, a pattern on clothes) does not pull the box. With no anchor, each frame's
    best-supported face is kept.
    """
    best = [f.face if f else None for f in found]
    anchors = [t for t, f in enumerate(found) if f and f.faces and max(n for _, n in f.faces) >= STRONG_FACE]
    if not anchors:
        return best
    track = []
    for t, f in enumerate(found):
        anchor = best[min(anchors, key=lambda a: abs(a - t))]
        near = [box for box, _ in (f.faces if f else [])
                if math.dist(box.centre, anchor.centre) < anchor.side and 0.5 < box.side / anchor.side < 2]
        track.append(min(near, key=lambda box: math.dist(box.centre, anchor.centre)) if near else None)
    return track


def resolve_target(target, faces, frame_shape):
    """'auto' -> 'face' when the (median) face is at least FACE_OF_FRAME of the short side, else 'person'."""
    if target != "auto":
        return target
    if not faces:
        return "person"
    return "face" if np.median([f.side for f in faces]) >= FACE_OF_FRAME * min(frame_shape) else "person"


# ----------------------------------------------------------------------------------------------------------
# Boxes over time


def fill_gaps(boxes):
    """Per-frame boxes with None -> each None takes its nearest detected neighbour's box (earlier on a tie)."""
    known = [t for t, b in enumerate(boxes) if b is not None]
    if not known:
        return list(boxes)
    nearest = np.searchsorted(known, np.arange(len(boxes)))  # index of the first known frame at or after t
    filled = []
    for t, i in enumerate(nearest):
        before, after = known[max(i - 1, 0)], known[min(i, len(known) - 1)]
        filled.append(boxes[before if abs(t - before) <= abs(after - t) else after])
    return filled


def median_filter(boxes, window=MEDIAN_WINDOW):
    """Each coordinate median-filtered over ``window`` frames: one-frame misdetections do not count."""
    array = np.array(boxes, dtype=np.float64)  # (T, 4)
    half = window // 2
    return [Box(*np.median(array[max(0, t - half):t + half + 1], axis=0)) for t in range(len(array))]


def grown(box, amount):
    """``box`` grown by ``amount`` pixels on each side."""
    return Box(box.left - amount, box.top - amount, box.right + amount, box.bottom + amount)


def square_around(box, frame_shape, margin, keep_top=False, unit=None):
    """The square holding ``box`` grown by ``margin`` times ``unit`` (an object's side; by default the box's) on
    each side, centred on it and moved inside the frame (H, W).

    A square larger than the frame's short side shrinks to it; it then keeps the grown box's top (``keep_top``,
    for a figure: the head matters more than the feet) or its centre.
    """
    wide = grown(box, margin * (box.side if unit is None else unit))
    side = min(wide.side, *frame_shape)
    cx, cy = wide.centre
    top = wide.top if keep_top and side < wide.height else cy - side / 2
    return pixel_square(cx - side / 2, top, side, frame_shape)


def pixel_square(left, top, side, frame_shape):
    """The square of ``side`` at (left, top), shrunk to the frame (H, W) and moved inside it, in whole pixels
    (rounding the side once keeps it square)."""
    H, W = frame_shape
    side = int(min(round(side), H, W))
    left, top = int(min(max(round(left), 0), W - side)), int(min(max(round(top), 0), H - side))
    return Box(left, top, left + side, top + side)


# ----------------------------------------------------------------------------------------------------------
# Shots: where the camera cuts, from the frames themselves


def thumbnail(frame):
    """(H, W, 3) uint8 -> (CUT_SIDE, CUT_SIDE) uint8 grey: what shots are told apart by."""
    grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)  # (H, W)
    return cv2.resize(grey, (CUT_SIDE, CUT_SIDE), interpolation=cv2.INTER_AREA)  # (CUT_SIDE, CUT_SIDE)


def frame_differences(thumbnails):
    """Mean absolute grey difference (of 255) of each thumbnail (T, s, s) from the one before: (T - 1,)."""
    array = np.asarray(thumbnails, dtype=np.float32)  # (T, s, s)
    return np.abs(array[1:] - array[:-1]).mean(axis=(1, 2))  # (T - 1,)


def _difference(thumbnails, a, b):
    return float(np.abs(thumbnails[a].astype(np.float32) - thumbnails[b]).mean())


def find_cuts(thumbnails):
    """The frames that start a new camera shot, from grey thumbnails (T, s, s), in order.

    A cut is a jump in content: frame t differs from frame t - 1 by at least CUT_MIN grey levels and CUT_RATIO
    times the median difference around it (the video's own motion: a pan is fast everywhere, a cut happens
    once). A jump is no cut when the content comes back within FLASH_FRAMES frames (a flash, a dropped frame),
    nor when it follows the last cut that closely (a frame of a fade through white).
    """
    differences = frame_differences(thumbnails)  # (T - 1,): differences[t - 1] is frame t against frame t - 1
    T, cuts = len(thumbnails), []
    for t in range(1, T):
        low, high = max(0, t - 1 - CUT_WINDOW), min(T - 1, t + CUT_WINDOW)
        around = np.delete(differences[low:high], t - 1 - low)  # (up to 2 CUT_WINDOW,)
        threshold = max(CUT_MIN, CUT_RATIO * float(np.median(around)) if len(around) else 0.0)
        if differences[t - 1] < threshold or (cuts and t - cuts[-1] < FLASH_FRAMES) or t < FLASH_FRAMES:
            continue
        straddling = [(a, b) for a in range(max(0, t - FLASH_FRAMES), t) for b in range(t, min(T, t + FLASH_FRAMES))
                      if (a, b) != (t - 1, t)]
        if all(_difference(thumbnails, a, b) >= threshold for a, b in straddling):
            cuts.append(t)
    return cuts


def shot_ranges(cuts, num_frames):
    """[(start, end), ...] (end inclusive) of the shots that ``cuts`` (frames that start one) divide into."""
    starts = [0] + [t for t in cuts if 0 < t < num_frames]
    return [(start, end - 1) for start, end in zip(starts, starts[1:] + [num_frames])]


# ----------------------------------------------------------------------------------------------------------
# One box per shot


@dataclass
class Scene:
    """One fixed crop for frames ``start`` to ``end`` (inclusive): a camera shot."""
    start: int
    end: int
    box: Box  # the square crop, rounded to pixels
    object: Box  # the face or figure it was built around: the union of the shot's detections
    face: Optional[Box] = None  # the median face of the shot, the scale reference of --like

    def as_json(self):
        entry = {"frames": [self.start, self.end], "box": [int(v) for v in self.box],
                 "object": [round(float(v), 1) for v in self.object]}
        if self.face is not None:
            entry["face"] = [round(float(v), 1) for v in self.face]
        return entry


def median_box(boxes):
    return Box(*np.median(np.array(boxes, dtype=np.float64), axis=0))


def reject_outliers(boxes, track):
    """``boxes`` (None where none) with None for each box far from ``track`` (a box per frame): a centre more
    than OUTLIER_DISTANCE of the track's side away, or a side OUTLIER_SCALE times larger or smaller."""
    kept = []
    for box, reference in zip(boxes, track):
        near = box is not None and math.dist(box.centre, reference.centre) <= OUTLIER_DISTANCE * reference.side \
            and 1 / OUTLIER_SCALE <= box.side / reference.side <= OUTLIER_SCALE
        kept.append(box if near else None)
    return kept


def plan_scenes(found, target, frame_shape, like=None, cuts=()):
    """One Scene per camera shot (``cuts``: the frames that start one), from per-frame detections (``Found``, or
    None where not looked); [] when nothing is found.

    The box of a shot holds its object in every frame: the union of the shot's detections (a false one, far
    from the median-filtered track, left out), grown by the target's margin. ``like``: a source's report
    (dict); the box then gives the face (else the object) the share of the crop and the place it has in the
    cropped source, grown where the object moves further than that box holds.
    """
    tracked = track_faces(found)
    if target == "face":
        detections = tracked
    else:
        detections = [figure_of(face, f.body, frame_shape) if f else None for face, f in zip(tracked, found)]
    if all(b is None for b in detections):
        return []
    filled = fill_gaps(detections)
    return [plan_shot(slice(start, end + 1), detections, filled, tracked, target, frame_shape, like)
            for start, end in shot_ranges(cuts, len(found))]


def plan_shot(frames, detections, filled, tracked, target, frame_shape, like):
    """The Scene of the shot ``frames`` (a slice); see plan_scenes."""
    own = detections[frames]
    if any(b is not None for b in own):
        track = median_filter(fill_gaps(own))
        kept = [b for b in reject_outliers(own, track) if b is not None] or track
    else:  # nothing found in this shot: its neighbours' boxes
        kept = median_filter(filled[frames])
    obj = union(kept)
    unit = float(np.median([b.side for b in kept]))  # the object's side, which the margin is measured in
    faces = kept if target == "face" else [b for b in tracked[frames] if b is not None]
    face = median_box(faces) if faces else None
    margin = FACE_MARGIN if target == "face" else PERSON_MARGIN
    if like is not None:
        box = like_box(like, median_box(kept), face, frame_shape, hold=grown(obj, margin * unit))
    else:
        box = square_around(obj, frame_shape, margin, keep_top=target != "face", unit=unit)
    return Scene(frames.start, frames.stop - 1, box, obj, face)


def like_box(report, obj, face, frame_shape, hold=None):
    """The square in which ``face`` (or else ``obj``) has the size and place that the report's face (object)
    has in its crop, grown and moved to hold ``hold`` (the shot's object with its margin) where it can (the top
    first), then moved inside the frame (H, W) and shrunk to it."""
    source = report["scenes"][0]
    use_face = face is not None and "face" in source
    reference, mine = (Box(*source["face"]), face) if use_face else (Box(*source["object"]), obj)
    crop = Box(*source["box"])
    hold = hold or mine
    dx, dy = ((a - b) / crop.side for a, b in zip(reference.centre, crop.centre))  # object's offset in the crop
    H, W = frame_shape
    side = min(max(mine.side * crop.side / reference.side, hold.side), H, W)
    cx, cy = mine.centre
    left = min(max(cx - dx * side - side / 2, hold.right - side), hold.left)
    top = min(max(cy - dy * side - side / 2, hold.bottom - side), hold.top)
    return pixel_square(left, top, side, frame_shape)


# ----------------------------------------------------------------------------------------------------------
# Cropping, preview and files


def to_uint8(frame):
    """float [0, 1] (H, W, 3) -> uint8."""
    return np.round(np.clip(frame, 0, 1) * 255).astype(np.uint8)


def crop_frame(frame, box, size):
    """The ``box`` of an (H, W, 3) uint8 frame, resized to (size, size, 3) uint8."""
    left, top, right, bottom = box
    patch = frame[top:bottom, left:right]  # (h, w, 3)
    interpolation = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(patch), (size, size), interpolation=interpolation)  # (size, size, 3)


def draw_preview(frames, scenes):
    """The first frame of each scene with its crop box in green, side by side; uint8. Nothing else is drawn:
    the pages and help that show it explain one colour."""
    panels = []
    for frame, scene in zip(frames, scenes):
        panel = np.ascontiguousarray(frame.copy())
        thickness = max(2, min(frame.shape[:2]) // 150)
        cv2.rectangle(panel, (scene.box.left, scene.box.top), (scene.box.right - 1, scene.box.bottom - 1),
                      (0, 255, 0), thickness)
        panels.append(panel)
    return np.concatenate(panels, axis=1)  # (H, n W, 3)


def write_json(path, data):
    with atomic_file(path) as temp:
        temp.write_text(json.dumps(data, indent=2) + "\n")


def read_report(path):
    """A crop report written by this module, for --like: checked field by field; raises CropError naming the
    file and what was expected."""
    try:
        report = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CropError(f"{path}: crop report not found") from None
    except (OSError, ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise CropError(f"{path}: not a crop report (expected the JSON that --report writes)") from None
    scenes = report.get("scenes") if isinstance(report, dict) else None
    if not isinstance(scenes, list) or not scenes or not isinstance(scenes[0], dict):
        raise CropError(f"{path}: not a crop report (expected the JSON that --report writes, with a list of "
                        "scenes, each with its box and object)")
    if report.get("target") not in ("face", "person", "box"):
        raise CropError(f"{path}: target is {_brief(report.get('target'))}: expected face, person or box")
    for key in ("box", "object", "face"):
        if key != "face" or "face" in scenes[0]:
            _check_report_box(path, f"scenes[0].{key}", scenes[0].get(key))
    if report["target"] == "box":
        raise CropError(f"{path} was made with --box (a box drawn by hand): it holds no detected face or person "
                        "for --like to match; crop the source with --target face or --target person, or crop "
                        "this video with --box as well")
    return report


def _brief(value, limit=40):
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_report_box(path, key, value):
    """A box of a report: four finite numbers with 0 <= LEFT < RIGHT and 0 <= TOP < BOTTOM."""
    numbers = isinstance(value, list) and len(value) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e15 for v in value)  # NaN fails
    if not numbers:
        raise CropError(f"{path}: {key} is {_brief(value)}: expected four numbers [LEFT, TOP, RIGHT, BOTTOM]")
    left, top, right, bottom = value
    if not (0 <= left < right and 0 <= top < bottom):
        raise CropError(f"{path}: {key} is {_brief(value)}: expected 0 <= LEFT < RIGHT and 0 <= TOP < BOTTOM")


def check_files(path, outputs, inputs=None):
    """Before any work: the input exists, and every output ({flag: path or None}) is writable, names neither
    the input nor another input ({flag: path}, e.g. --like) nor another output. Returns the input's Path."""
    path = Path(path)
    if not path.is_file():
        raise CropError(f"{path}: input not found")
    readers = {"input": path, **(inputs or {})}
    written = {}
    for flag, out in outputs.items():
        if out is None:
            continue
        for what, other in readers.items():
            if other is not None and same_file(out, other):
                lost = "the input" if what == "input" else f"the {what} file"
                raise CropError(f"{flag} {out} is {lost} itself ({other}): write it to another file, or {lost} "
                                "would be lost")
        for other_flag, other in written.items():
            if same_file(out, other):
                raise CropError(f"{flag} {out} is also {other_flag} {other}: give each output its own file")
        _check_writable(flag, out)
        written[flag] = out
    return path


def _check_writable(flag, out):
    if Path(out).is_dir():
        raise CropError(f"{flag} {out} is a folder: give a file name")
    if flag == "--preview" and not str(out).lower().endswith(IMAGE_EXTENSIONS):
        raise CropError(f"{flag} {out}: the preview is an image: use one of {', '.join(IMAGE_EXTENSIONS)}")
    try:
        check_writable(out)
    except MediaError as error:
        raise CropError(f"{flag} {error}") from None


def check_size(size):
    low, high = SIZES
    if not isinstance(size, int) or not low <= size <= high:
        raise CropError(f"--size {size}: expected {low} to {high} pixels (the side of the square crop)")


def is_video(path):
    return str(path).lower().endswith(VIDEO_EXTENSIONS)


HAND_BOX_HINT = "give the crop by hand with tools/crop.py --box LEFT,TOP,RIGHT,BOTTOM (pixels)"


def _nothing_found(path, target):
    what = {"face": "no face", "person": "no person", "auto": "no face or person"}[target]
    return CropError(f"{path}: {what} found; {HAND_BOX_HINT}")


def _report(path, target, size, frame_shape, scenes, num_frames=None):
    report = {"input": str(path), "target": target, "size": size, "frame_size": [frame_shape[1], frame_shape[0]],
              "box": list(scenes[0].box), "scenes": [s.as_json() for s in scenes]}
    if num_frames is not None:
        report["frames"] = [0, num_frames - 1]
    return report


def check_request(path, out, size, preview, report, max_pixels, video):
    """Everything checked before any work: paths, size, the input's pixels (from its header)."""
    path = check_files(path, {"--out": out, "--report": report, "--preview": preview})
    check_size(size)
    check_pixels(path, max_pixels, video=video)
    return path


def crop_image_file(path, out, target="auto", size=256, box=None, like=None, preview=None, report=None,
                    detector=None, max_pixels=MAX_PIXELS):
    """Crop an image file into ``out`` (size x size); returns the report (dict). See the module docstring."""
    path = check_request(path, out, size, preview, report, max_pixels, video=False)
    target = check_target(target, like)
    image = read_image(path)  # (H, W, 3) float
    frame = to_uint8(image)
    found = [None] if box is not None else detect_frames([image], target, detector or Detector(), 1)[0]
    target, scenes = plan(found, target, frame.shape[:2], box, like, path, 1)
    write_image(out, crop_frame(frame, scenes[0].box, size))
    result = _report(path, target, size, frame.shape[:2], scenes)
    _write_extras(result, [frame], scenes, preview, report)
    return result


def check_target(target, like=None):
    """The target to detect: ``target``, or the one the --like report was cropped for."""
    if target not in TARGETS:
        raise CropError(f"--target {target!r}: expected one of {', '.join(TARGETS)}")
    if like is not None and like.get("target") in ("face", "person"):
        return like["target"]
    return target


def detect_frames(frames, target, detector, num_frames, stride=1):
    """Per-frame detections (``Found``) of every ``stride``-th of an iterable of (H, W, 3) float frames, None
    for the others, and every frame's thumbnail; returns (found, the number of frames T, thumbnails (T, s, s))."""
    found, thumbnails = [None] * num_frames, []
    for t, frame in enumerate(frames):
        frame = to_uint8(frame)
        thumbnails.append(thumbnail(frame))  # every frame: a cut falls between any two
        if t % stride == 0:
            if t >= len(found):
                found.extend([None] * (t + 1 - len(found)))
            found[t] = look(frame, "person" if target == "auto" else target, detector)  # auto needs both
    count = len(thumbnails)
    return found[:count], count, np.stack(thumbnails) if thumbnails else np.zeros((0, CUT_SIDE, CUT_SIDE), np.uint8)


def plan(found, target, frame_shape, box, like, path, num_frames, cuts=()):
    """(target, scenes) from per-frame detections and the frames that start a shot; the target is 'face' or
    'person' ('auto' resolved), or 'box' for a box given by hand (one scene over all ``num_frames``)."""
    if box is not None:
        H, W = frame_shape
        if box.right > W or box.bottom > H:
            raise CropError(f"--box {','.join(map(str, box))}: outside {path}, which is {W}x{H} (width x height)")
        return "box", [Scene(0, num_frames - 1, Box(*box), Box(*box))]
    if like is not None and like.get("target") not in ("face", "person"):
        raise CropError(f"the source's crop report (--like) was made with --box, by hand: it holds no detected "
                        f"face or person to match in {path}")
    resolved = resolve_target(target, [f.face for f in found if f and f.face], frame_shape)
    scenes = plan_scenes(found, resolved, frame_shape, like, cuts)
    if not scenes:
        raise _nothing_found(path, target)
    return resolved, scenes


def _write_extras(result, first_frames, scenes, preview, report):
    if preview is not None:
        write_image(preview, draw_preview(first_frames, scenes))
    if report is not None:
        write_json(report, result)


def crop_video_file(path, out, target="auto", size=256, box=None, like=None, preview=None, report=None,
                    detector=None, max_detections=MAX_DETECTIONS, max_pixels=MAX_PIXELS):
    """Crop a video file into ``out`` (size x size, same frame rate, sound kept); returns the report (dict).

    Two streaming passes: the shots (every frame) and detection (at most ``max_detections`` evenly spaced
    frames), then the crop.
    """
    path = check_request(path, out, size, preview, report, max_pixels, video=True)
    target = check_target(target, like)
    info = video_info(path)
    frame_shape, num_frames = (info.height, info.width), info.num_frames
    found, cuts = [None] * num_frames, []
    if box is None:
        stride = max(1, math.ceil(num_frames / max_detections))
        found, num_frames, thumbnails = detect_frames(iter_video_frames(path), target, detector or Detector(),
                                                      num_frames, stride)
        cuts = find_cuts(thumbnails)
    target, scenes = plan(found, target, frame_shape, box, like, path, num_frames, cuts)
    firsts = []
    keep_sound = Path(out).suffix.lower() != ".gif" and has_audio(path)
    scene_of = iter(scenes)
    scene = next(scene_of)
    with VideoWriter(out, info.fps or 25.0, audio_from=path if keep_sound else None) as writer:  # atomic
        for t, frame in enumerate(iter_video_frames(path)):
            if t > scene.end and scene is not scenes[-1]:
                scene = next(scene_of)
            frame = to_uint8(frame)
            if t == scene.start:
                firsts.append(frame)
            writer.write(crop_frame(frame, scene.box, size))
    result = _report(path, target, size, frame_shape, scenes, num_frames)
    result["fps"] = info.fps
    _write_extras(result, firsts, scenes, preview, report)
    return result


def crop_file(path, out, **options):
    """Crop an image or a video, by the file's extension; returns the report."""
    require_opencv()
    suffix = Path(out).suffix.lower()
    if is_video(path):
        if suffix not in VIDEO_FORMATS:
            raise CropError(f"--out {out}: a video's crop is a video: use one of {', '.join(VIDEO_FORMATS)}")
        return crop_video_file(path, out, **options)
    if not str(path).lower().endswith(IMAGE_EXTENSIONS):
        raise CropError(f"{path}: expected an image ({', '.join(IMAGE_EXTENSIONS)}) or a video "
                        f"({', '.join(VIDEO_EXTENSIONS)})")
    if suffix not in IMAGE_EXTENSIONS:
        raise CropError(f"--out {out}: an image's crop is an image: use one of {', '.join(IMAGE_EXTENSIONS)}")
    options.pop("max_detections", None)
    return crop_image_file(path, out, **options)


@dataclass
class CroppedInputs:
    source: Path  # the cropped source image
    driving: Path  # the cropped driving video, its object at the source's scale and place
    source_report: dict = field(default_factory=dict)
    driving_report: dict = field(default_factory=dict)


def crop_inputs(source, driving, target, folder, size=256, box=None, preview=None, detector=None,
                max_pixels=MAX_PIXELS):
    """Crop a source image and a driving video for animation, into ``folder``.

    The source is cropped for ``target``, and the driving video --like it, so that its object has the source's
    scale and place (what relative mode needs). With ``box`` (a Box in the source's pixels, drawn by hand) only
    the source is cropped: there is no detected object to match. ``preview``: where to write the previews side
    by side (the source's, then the driving video's).
    """
    folder = Path(folder)
    detector = detector or Detector()
    source_out = folder / "source.png"
    source_report = crop_image_file(source, source_out, target, size, box=box, detector=detector,
                                    preview=folder / "source.preview.png" if preview else None,
                                    max_pixels=max_pixels)
    if box is not None:
        if preview:
            with atomic_file(preview) as temporary:  # an earlier picture stays whole if the copy fails
                shutil.copyfile(folder / "source.preview.png", temporary)
        return CroppedInputs(source_out, Path(driving), source_report, {})
    driving_out = folder / ("driving" + Path(driving).suffix.lower())
    driving_report = crop_video_file(driving, driving_out, target, size, like=source_report, detector=detector,
                                     preview=folder / "driving.preview.png" if preview else None,
                                     max_pixels=max_pixels)
    if preview:
        images = [to_uint8(read_image(folder / name)) for name in ("source.preview.png", "driving.preview.png")]
        height = min(image.shape[0] for image in images)
        write_image(preview, np.concatenate([_fit_height(image, height) for image in images], axis=1))
    return CroppedInputs(source_out, driving_out, source_report, driving_report)


def _fit_height(image, height):
    if image.shape[0] == height:
        return image
    return cv2.resize(image, (round(image.shape[1] * height / image.shape[0]), height), interpolation=cv2.INTER_AREA)
