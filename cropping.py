"""Cropping a user's photo and video the way the training data were cropped: a square around the face
(talking-head models) or around the whole figure (body models), one fixed box per scene of a video.

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

from media import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, WRITE_OPTIONS, VideoWriter, atomic_file, has_audio,
                   iter_video_frames, read_image, video_info, write_image)

VIDEO_FORMATS = tuple(WRITE_OPTIONS)  # the video formats a crop can be written in

TARGETS = ("auto", "face", "person")
FACE_MARGIN = 0.5  # the face box grows by half its side on each side: forehead, hair and chin in, as in VoxCeleb
PERSON_MARGIN = 0.05  # a little room around the figure
FACE_OF_FRAME = 0.25  # auto: a face at least this fraction of the frame's short side is a talking head
MIN_FACE_NEIGHBOURS = 5  # Haar detections supporting a face candidate: real faces had 5-45 ...
STRONG_FACE = 12  # ... and false ones (clothes, hands) 4-13; a face this well supported anchors a video's track
MIN_PERSON_WEIGHT = 0.5  # HOG SVM score of a whole figure accepted without a face
SCENE_GROWTH = 1.6  # a scene ends when the union of its objects grows past this many times their mean side
MEDIAN_WINDOW = 9  # frames over which the per-frame boxes are median-filtered
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


def split_scenes(boxes, growth=SCENE_GROWTH):
    """Frame ranges [(start, end), ...] (end inclusive) over which the union of ``boxes`` stays within ``growth``
    times their mean side: a new scene starts where the object leaves the box. Linear in the frame count."""
    array = np.array(boxes, dtype=np.float64)  # (T, 4): left, top, right, bottom
    sides = np.maximum(array[:, 2] - array[:, 0], array[:, 3] - array[:, 1])  # (T,)
    scenes, start = [], 0
    while start < len(array):
        rest = array[start:]  # (T', 4)
        low = np.minimum.accumulate(rest[:, :2], axis=0)  # (T', 2): the union's left, top so far
        high = np.maximum.accumulate(rest[:, 2:], axis=0)  # (T', 2): its right, bottom
        union_side = (high - low).max(axis=1)  # (T',)
        mean_side = np.cumsum(sides[start:]) / np.arange(1, len(rest) + 1)  # (T',)
        grown = np.flatnonzero(union_side > growth * mean_side)
        end = start + (int(grown[0]) if len(grown) else len(rest))  # first frame of the next scene
        scenes.append((start, end - 1))
        start = end
    return scenes


def square_around(box, frame_shape, margin, keep_top=False):
    """The square of side ``box.side * (1 + 2 margin)`` centred on ``box``, moved inside the frame (H, W).

    A square larger than the frame's short side shrinks to it; it then keeps the box's top (``keep_top``, for a
    figure: the head matters more than the feet) or its centre.
    """
    H, W = frame_shape
    side = min(box.side * (1 + 2 * margin), H, W)
    cx, cy = box.centre
    top = box.top - margin * box.side if keep_top and side < box.height * (1 + 2 * margin) else cy - side / 2
    left = min(max(cx - side / 2, 0.0), W - side)
    top = min(max(top, 0.0), H - side)
    return Box(left, top, left + side, top + side).rounded()


@dataclass
class Scene:
    """One fixed crop for frames ``start`` to ``end`` (inclusive)."""
    start: int
    end: int
    box: Box  # the square crop, rounded to pixels
    object: Box  # the face or figure it was built around (union over the scene)
    face: Optional[Box] = None  # the median face of the scene, the scale reference of --like

    def as_json(self):
        entry = {"frames": [self.start, self.end], "box": [int(v) for v in self.box],
                 "object": [round(float(v), 1) for v in self.object]}
        if self.face is not None:
            entry["face"] = [round(float(v), 1) for v in self.face]
        return entry


def median_box(boxes):
    return Box(*np.median(np.array(boxes, dtype=np.float64), axis=0))


def plan_scenes(found, target, frame_shape, like=None):
    """Scenes with one fixed square box each, from per-frame detections (``Found`` or None where not looked).

    ``like``: a source's report (dict); the boxes are then sized so that the face (else the object) takes the
    same fraction of the crop, at the same place, as in the cropped source.
    """
    tracked = track_faces(found)
    faces = fill_gaps(tracked)
    if target == "face":
        objects = faces
    else:
        objects = fill_gaps([figure_of(face, f.body, frame_shape) if f else None for face, f in zip(tracked, found)])
    if all(b is None for b in objects):
        return []
    objects = median_filter(objects)
    scenes = []
    for start, end in split_scenes(objects):
        scene_faces = [b for b in faces[start:end + 1] if b is not None]
        face = median_box(scene_faces) if scene_faces else None
        obj = union(objects[start:end + 1])
        if like is not None:
            box = like_box(like, median_box(objects[start:end + 1]), face, frame_shape)
        elif target == "face":
            box = square_around(obj, frame_shape, FACE_MARGIN)
        else:
            box = square_around(obj, frame_shape, PERSON_MARGIN, keep_top=True)
        scenes.append(Scene(start, end, box, obj, face))
    return scenes


def like_box(report, obj, face, frame_shape):
    """The square in which ``face`` (or else ``obj``) has the size and place that the report's face (object)
    has in its crop. Shrunk to the frame and moved inside it when it would leave the frame."""
    source = report["scenes"][0]
    use_face = face is not None and "face" in source
    reference, mine = (Box(*source["face"]), face) if use_face else (Box(*source["object"]), obj)
    crop = Box(*source["box"])
    side = mine.side * crop.side / reference.side
    dx, dy = ((a - b) / crop.side for a, b in zip(reference.centre, crop.centre))  # object's offset in the crop
    cx, cy = mine.centre
    H, W = frame_shape
    side = min(side, H, W)
    left = min(max(cx - dx * side - side / 2, 0.0), W - side)
    top = min(max(cy - dy * side - side / 2, 0.0), H - side)
    return Box(left, top, left + side, top + side).rounded()


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
    """The first frame of each scene with its crop box (green) and object (yellow), side by side; uint8."""
    panels = []
    for frame, scene in zip(frames, scenes):
        panel = np.ascontiguousarray(frame.copy())
        thickness = max(2, min(frame.shape[:2]) // 150)
        obj = scene.object.rounded()
        cv2.rectangle(panel, (obj.left, obj.top), (obj.right - 1, obj.bottom - 1), (255, 220, 0),
                      max(1, thickness // 2))
        cv2.rectangle(panel, (scene.box.left, scene.box.top), (scene.box.right - 1, scene.box.bottom - 1),
                      (0, 255, 0), thickness)
        panels.append(panel)
    return np.concatenate(panels, axis=1)  # (H, n W, 3)


def write_json(path, data):
    with atomic_file(path) as temp:
        temp.write_text(json.dumps(data, indent=2) + "\n")


def read_report(path):
    """A crop report written by this module (for --like); raises CropError naming the file."""
    try:
        report = json.loads(Path(path).read_text())
        Box(*report["scenes"][0]["box"]), Box(*report["scenes"][0]["object"])
    except FileNotFoundError:
        raise CropError(f"{path}: crop report not found") from None
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        raise CropError(f"{path}: not a crop report (expected the JSON that --report writes, with "
                        "scenes[0].box and scenes[0].object)") from None
    return report


def _check_paths(path, out):
    path = Path(path)
    if not path.is_file():
        raise CropError(f"{path}: input not found")
    if Path(out).resolve() == path.resolve():
        raise CropError(f"--out {out} is the input itself: write the crop to another file")
    return path


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


def crop_image_file(path, out, target="auto", size=256, box=None, like=None, preview=None, report=None,
                    detector=None):
    """Crop an image file into ``out`` (size x size); returns the report (dict). See the module docstring."""
    path = _check_paths(path, out)
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
    for the others; returns (found, the number of frames)."""
    found, count = [None] * num_frames, 0
    for t, frame in enumerate(frames):
        if t % stride == 0:
            frame = to_uint8(frame)
            if t >= len(found):
                found.extend([None] * (t + 1 - len(found)))
            found[t] = look(frame, "person" if target == "auto" else target, detector)  # auto needs both
        count = t + 1
    return found[:count], count


def plan(found, target, frame_shape, box, like, path, num_frames):
    """(target, scenes) from per-frame detections; the target is 'face' or 'person' ('auto' resolved), or 'box'
    for a box given by hand (one scene over all ``num_frames``)."""
    if box is not None:
        H, W = frame_shape
        if box.right > W or box.bottom > H:
            raise CropError(f"--box {','.join(map(str, box))}: outside {path}, which is {W}x{H} (width x height)")
        return "box", [Scene(0, num_frames - 1, Box(*box), Box(*box))]
    if like is not None and like.get("target") not in ("face", "person"):
        like = None  # the source was cropped by hand: nothing detected to match
    resolved = resolve_target(target, [f.face for f in found if f and f.face], frame_shape)
    scenes = plan_scenes(found, resolved, frame_shape, like)
    if not scenes:
        raise _nothing_found(path, target)
    return resolved, scenes


def _write_extras(result, first_frames, scenes, preview, report):
    if preview is not None:
        write_image(preview, draw_preview(first_frames, scenes))
    if report is not None:
        write_json(report, result)


def crop_video_file(path, out, target="auto", size=256, box=None, like=None, preview=None, report=None,
                    detector=None, max_detections=MAX_DETECTIONS):
    """Crop a video file into ``out`` (size x size, same frame rate, sound kept); returns the report (dict).

    Two streaming passes: detection on at most ``max_detections`` evenly spaced frames, then the crop.
    """
    path = _check_paths(path, out)
    target = check_target(target, like)
    info = video_info(path)
    frame_shape, num_frames = (info.height, info.width), info.num_frames
    found = [None] * num_frames
    if box is None:
        stride = max(1, math.ceil(num_frames / max_detections))
        found, num_frames = detect_frames(iter_video_frames(path), target, detector or Detector(), num_frames,
                                             stride)
    target, scenes = plan(found, target, frame_shape, box, like, path, num_frames)
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


def crop_inputs(source, driving, target, folder, size=256, box=None, preview=None, detector=None):
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
                                    preview=folder / "source.preview.png" if preview else None)
    if box is not None:
        if preview:
            shutil.copyfile(folder / "source.preview.png", preview)
        return CroppedInputs(source_out, Path(driving), source_report, {})
    driving_out = folder / ("driving" + Path(driving).suffix.lower())
    driving_report = crop_video_file(driving, driving_out, target, size, like=source_report, detector=detector,
                                     preview=folder / "driving.preview.png" if preview else None)
    if preview:
        images = [to_uint8(read_image(folder / name)) for name in ("source.preview.png", "driving.preview.png")]
        height = min(image.shape[0] for image in images)
        write_image(preview, np.concatenate([_fit_height(image, height) for image in images], axis=1))
    return CroppedInputs(source_out, driving_out, source_report, driving_report)


def _fit_height(image, height):
    if image.shape[0] == height:
        return image
    return cv2.resize(image, (round(image.shape[1] * height / image.shape[0]), height), interpolation=cv2.INTER_AREA)
