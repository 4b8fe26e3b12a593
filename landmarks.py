"""Face and body keypoints for the evaluation's AKD and MKR (``keypoint_metrics.py``), from MediaPipe's models.

The four models ship inside the ``mediapipe==0.10.14`` wheel (later versions download theirs at run time); they
are read from the installed package and run by LiteRT (``ai-edge-litert``), a TFLite interpreter, so nothing is
downloaded and neither mediapipe's own code nor its dependencies (opencv-contrib-python, jax) are needed:
``pip install -r requirements-metrics.txt`` (see that file). The pre- and post-processing (letterboxing, SSD
anchors, the crop around a detection, landmark decoding) is done here in numpy, as MediaPipe's graphs describe it:

- face: ``face_detection_short_range.tflite`` (128x128 input in [-1, 1], 896 anchors, 6 keypoints) finds the face;
  a square of 1.5x the box's long side, turned so that the eyes are level, is cropped to 192x192 (in [0, 1]) for
  ``face_landmark.tflite``, whose 468 mesh points are mapped to 51 of the 68 iBUG points (``IBUG51``);
- body: ``pose_detection.tflite`` (224x224 in [-1, 1], 2254 anchors, 4 keypoints) finds the person from the hips'
  centre and a point on the body's enclosing circle; a square of 2.5x that radius, turned upright, is cropped to
  256x256 (in [0, 1]) for ``pose_landmark_full.tflite``, whose 33 joints are mapped to the 18 of OpenPose's COCO
  model (``COCO18``), the joints the pose evaluation counts.

The input ranges are those the models' own TFLite metadata state (mean 127.5 and std 127.5 for the detectors,
std 255 for the face mesh); the anchor, crop and threshold settings are those of MediaPipe's graphs
(``face_detection_short_range.pbtxt``, ``face_detection_front_detection_to_roi.pbtxt``,
``pose_detection.pbtxt``, ``pose_detection_to_roi.pbtxt``, ``tensors_to_pose_landmarks_and_segmentation.pbtxt``).
Every frame is processed on its own (no tracking from the previous frame), so a frame's keypoints do not depend on
its neighbours, nor on the order frames are read in.

Coordinates: pixels of the frame, x then y, pixel centres at integers ((0, 0) is the centre of the top-left
pixel). A rect is (cx, cy, w, h, angle): its centre, its size, and the angle (radians, clockwise on the screen,
since y points down) by which its x axis is turned from the frame's.
"""
import importlib.metadata
import math
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
from scipy.ndimage import gaussian_filter

MEDIAPIPE_VERSION = "0.10.14"  # the last mediapipe whose wheel ships these models
MODEL_FILES = {
    "face_detector": "modules/face_detection/face_detection_short_range.tflite",
    "face_landmarks": "modules/face_landmark/face_landmark.tflite",
    "body_detector": "modules/pose_detection/pose_detection.tflite",
    "body_landmarks": "modules/pose_landmark/pose_landmark_full.tflite",
}
TARGETS = ("face", "body")
INSTALL_HINT = "pip install -r requirements-metrics.txt"

# The 51 iBUG-68 points that are fixed places on the face (iBUG 17-67: brows, nose, eyes, mouth), as indices of
# MediaPipe's 468-point mesh. Each is the mesh point at the same place along the same contour of the mesh's
# published contours (mediapipe/python/solutions/face_mesh_connections.py in the same wheel: FACEMESH_*_EYEBROW,
# FACEMESH_NOSE, FACEMESH_*_EYE, FACEMESH_LIPS); iBUG's "right" is the person's right (the left of the image).
# The jaw line (iBUG 0-16) is left out: iBUG places it on the visible outline of the face, which slides over the
# skin as the head turns, so no fixed mesh point is the same point.
IBUG51 = {
    # brows, outer to inner on the right (17-21), inner to outer on the left (22-26): the brows' upper contours
    17: 70, 18: 63, 19: 105, 20: 66, 21: 107, 22: 336, 23: 296, 24: 334, 25: 293, 26: 300,
    # nose: the bridge from between the eyes (27) to the tip (30), evenly along the mesh's midline
    # 168-6-197-195-5-4-1; then the base of the nose from the right wing (31) through under the tip (33) to the
    # left wing (35), the mesh's 98-97-2-326-327
    27: 168, 28: 197, 29: 5, 30: 1, 31: 98, 32: 97, 33: 2, 34: 326, 35: 327,
    # right eye: outer corner, two points of the upper lid at a third and two thirds, inner corner, lower lid back
    36: 33, 37: 160, 38: 158, 39: 133, 40: 153, 41: 144,
    # left eye: inner corner, upper lid, outer corner, lower lid back
    42: 362, 43: 385, 44: 387, 45: 263, 46: 373, 47: 380,
    # outer lips: right corner, upper lip to the left corner (51: its middle), lower lip back (57: its middle)
    48: 61, 49: 40, 50: 37, 51: 0, 52: 267, 53: 270, 54: 291, 55: 321, 56: 314, 57: 17, 58: 84, 59: 91,
    # inner lips: right corner, upper, left corner, lower
    60: 78, 61: 81, 62: 13, 63: 311, 64: 308, 65: 402, 66: 14, 67: 178,
}

# OpenPose's COCO model (18 joints, its order), as indices of MediaPipe's 33 pose landmarks (the names are those of
# mediapipe.solutions.pose.PoseLandmark); the neck, which MediaPipe has not, is the middle of the shoulders.
COCO18 = (
    ("nose", (0,)), ("neck", (11, 12)), ("right_shoulder", (12,)), ("right_elbow", (14,)), ("right_wrist", (16,)),
    ("left_shoulder", (11,)), ("left_elbow", (13,)), ("left_wrist", (15,)), ("right_hip", (24,)),
    ("right_knee", (26,)), ("right_ankle", (28,)), ("left_hip", (23,)), ("left_knee", (25,)),
    ("left_ankle", (27,)), ("right_eye", (5,)), ("left_eye", (2,)), ("right_ear", (8,)), ("left_ear", (7,)),
)
KEYPOINT_NAMES = {"face": tuple(f"ibug{i}" for i in IBUG51), "body": tuple(name for name, _ in COCO18)}

# A detection or a joint counts when its probability is at least this: MediaPipe's min_score_thresh for both
# detectors, and the visibility and presence thresholds of its drawing utilities for the pose landmarks.
MIN_SCORE = 0.5
NMS_IOU = 0.3  # detections overlapping the best one by more than this IoU are averaged into it (weighted NMS)


class DetectorUnavailable(RuntimeError):
    """The TFLite runtime or the mediapipe wheel that holds the models is not installed."""


class Rect(NamedTuple):
    """A turned rectangle in frame pixels: centre, size, and the angle (radians) of its x axis."""
    cx: float
    cy: float
    w: float
    h: float
    angle: float = 0.0


class Keypoints(NamedTuple):
    """One frame's keypoints: ``points`` (J, 2) in pixels, x then y, and ``visible`` (J,) bool, False for a joint
    the detector did not find (or found outside the frame)."""
    points: np.ndarray
    visible: np.ndarray


# ----------------------------------------------------------------------------------------------------------
# The models and their runtime


def model_folder():
    """The installed mediapipe package's folder, checked to hold the four models; DetectorUnavailable if not.

    The package is located from its metadata, never imported: its own code needs opencv-contrib-python and jax."""
    try:
        distribution = importlib.metadata.distribution("mediapipe")
    except importlib.metadata.PackageNotFoundError:
        raise DetectorUnavailable(f"the detector models are not installed (mediapipe=={MEDIAPIPE_VERSION}'s "
                                  f"wheel holds them): {INSTALL_HINT}") from None
    folder = Path(distribution.locate_file("mediapipe"))
    missing = [name for name in MODEL_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise DetectorUnavailable(f"mediapipe {distribution.version} at {folder} lacks {missing[0]} (later versions "
                                  f"download their models at run time; {MEDIAPIPE_VERSION} ships them): "
                                  f"{INSTALL_HINT}")
    return folder


def check_available():
    """Raise DetectorUnavailable, saying what to install, unless the TFLite runtime and the models are there."""
    model_folder()
    _interpreter_class()


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise DetectorUnavailable(f"the TFLite runtime ai-edge-litert is not installed: {INSTALL_HINT}") from None
    return Interpreter


def make_interpreter(path, threads=1):
    """A LiteRT interpreter of a .tflite file with its tensors allocated."""
    interpreter = _interpreter_class()(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


class Model:
    """One .tflite network: ``model(x)`` runs it on an (S, S, 3) float32 image and returns its outputs."""

    def __init__(self, path, threads=1):
        self.interpreter = make_interpreter(path, threads)
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = [detail["index"] for detail in self.interpreter.get_output_details()]
        self.size = int(self.input["shape"][1])

    def __call__(self, image):
        self.interpreter.set_tensor(self.input["index"], image[None].astype(np.float32))  # (1, S, S, 3)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(index)[0] for index in self.outputs]


# ----------------------------------------------------------------------------------------------------------
# Geometry: crops of turned rects, SSD anchors, detections


def smoothing(rect, size):
    """The Gaussian sigma (frame pixels) that keeps a ``size`` crop of ``rect`` from aliasing: (scale - 1) / 2,
    scale being frame pixels per crop pixel, as scikit-image's resize takes it; 0 when the crop enlarges."""
    return max(0.0, (max(rect.w, rect.h) / size - 1) / 2)


def smooth(image, sigma):
    """``image`` (H, W, 3) blurred by a Gaussian of ``sigma`` pixels (edges repeated), float32."""
    image = np.asarray(image, np.float32)
    return gaussian_filter(image, sigma=(sigma, sigma, 0), mode="nearest") if sigma > 0 else image


def warp(image, rect, size, border="nearest", smoothed=False):
    """The (size, size, 3) float32 crop of ``rect`` from ``image`` (H, W, 3), sampled bilinearly; unless
    ``smoothed`` (the caller blurred the image already), the part read is blurred first by ``smoothing``, so that
    a crop smaller than the rect does not alias. ``border``: 'nearest' repeats the edge pixels outside the frame,
    'constant' puts black there."""
    cx, cy, w, h, angle = rect
    offsets = ((np.arange(size, dtype=np.float32) + 0.5) / size - 0.5)  # (S,) crop pixel centres, in [-0.5, 0.5]
    u, v = np.meshgrid(offsets * w, offsets * h)  # (S, S) each: along the rect's x and y axes, in pixels
    cos, sin = math.cos(angle), math.sin(angle)
    x, y = cx + u * cos - v * sin, cy + u * sin + v * cos  # (S, S) each: frame pixels
    sigma = 0.0 if smoothed else smoothing(rect, size)
    margin = int(math.ceil(4 * sigma)) + 2
    H, W = image.shape[:2]
    top, left = min(max(0, int(y.min()) - margin), H - 1), min(max(0, int(x.min()) - margin), W - 1)
    bottom, right = max(min(H, int(y.max()) + margin + 2), top + 1), max(min(W, int(x.max()) + margin + 2), left + 1)
    region = smooth(image[top:bottom, left:right], sigma)  # (h', w', 3): only what the crop reads
    # One pixel of border around the region; samples beyond it are clamped onto it. The region is clipped only
    # at the frame's edges, so what lies beyond it is outside the frame.
    region = np.pad(region, ((1, 1), (1, 1), (0, 0)), mode="edge" if border == "nearest" else "constant")
    Hp, Wp = region.shape[:2]
    x = np.clip(x - (left - 1), 0, Wp - 1.001).ravel()  # (S * S,) in the padded region
    y = np.clip(y - (top - 1), 0, Hp - 1.001).ravel()
    x0, y0 = x.astype(np.int64), y.astype(np.int64)  # (S * S,) each
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]  # (S * S, 1) each
    pixels = region.reshape(-1, 3)  # (Hp * Wp, 3)
    corner = y0 * Wp + x0  # (S * S,) the top-left neighbour of each sample
    def at(index):  # np.take: four times as fast as fancy indexing here
        return np.take(pixels, index, axis=0)  # (S * S, 3)

    upper = at(corner) * (1 - fx) + at(corner + 1) * fx  # (S * S, 3)
    lower = at(corner + Wp) * (1 - fx) + at(corner + Wp + 1) * fx
    return (upper * (1 - fy) + lower * fy).reshape(size, size, 3)  # (S, S, 3)


def unwarp(uv, rect):
    """Points (N, 2) given as fractions (u, v) of a crop of ``rect`` back in frame pixels (N, 2)."""
    cx, cy, w, h, angle = rect
    u, v = (uv[:, 0] - 0.5) * w, (uv[:, 1] - 0.5) * h  # (N,) each, pixels along the rect's axes
    cos, sin = math.cos(angle), math.sin(angle)
    return np.stack([cx + u * cos - v * sin, cy + u * sin + v * cos], axis=1)  # (N, 2)


def letterbox(shape):
    """The square rect centred on a frame of ``shape`` (H, W, ...) that holds all of it: what a detector sees."""
    H, W = shape[:2]
    return Rect((W - 1) / 2, (H - 1) / 2, max(H, W), max(H, W))


def ssd_anchors(input_size, strides, anchors_per_layer=2):
    """Centres (N, 2) in [0, 1] of MediaPipe's SSD anchors (fixed size, so only centres matter).

    Each layer puts ``anchors_per_layer`` anchors (aspect ratio 1 and the interpolated scale) on every cell of
    its ceil(input_size / stride) grid; consecutive layers with the same stride share one grid, its cells taking
    all their anchors in turn. Face detector: strides (8, 16, 16, 16) at 128 -> 16*16*2 + 8*8*6 = 896 anchors.
    """
    centres, layer = [], 0
    while layer < len(strides):
        stride, repeats = strides[layer], 1
        while layer + repeats < len(strides) and strides[layer + repeats] == stride:
            repeats += 1
        cells = math.ceil(input_size / stride)
        grid = (np.arange(cells) + 0.5) / cells  # (cells,)
        x, y = np.meshgrid(grid, grid)  # (cells, cells) each, rows of the grid first
        cell_centres = np.stack([x.ravel(), y.ravel()], axis=1)  # (cells^2, 2)
        centres.append(np.repeat(cell_centres, anchors_per_layer * repeats, axis=0))
        layer += repeats
    return np.concatenate(centres)  # (N, 2)


class Detection(NamedTuple):
    """The best detection of a frame: ``box`` (cx, cy, w, h) and ``keypoints`` (P, 2) in frame pixels."""
    score: float
    box: np.ndarray
    keypoints: np.ndarray


def best_detection(raw, logits, anchors, input_size, rect):
    """Decode an SSD detector's outputs and return the best detection, or None below ``MIN_SCORE``.

    Args: raw (N, 4 + 2P): x, y, w, h, then P keypoints, in input pixels relative to the anchor's centre;
    logits (N, 1); anchors (N, 2); the letterbox ``rect`` the input was cropped from. The detections overlapping
    the best by more than ``NMS_IOU`` are averaged with it, weighted by score (MediaPipe's weighted NMS)."""
    scores = sigmoid(logits[:, 0])  # (N,)
    keep = scores >= MIN_SCORE
    if not keep.any():
        return None
    scores, raw, anchors = scores[keep], raw[keep], anchors[keep]
    values = raw.reshape(len(raw), -1, 2) / input_size  # (N, 2 + P, 2): fractions of the input
    values[:, 0] += anchors  # the box's centre
    values[:, 2:] += anchors[:, None]  # the keypoints
    centre, size = values[:, 0], values[:, 1]  # (N, 2) each
    best = np.argmax(scores)
    low = np.maximum(centre - size / 2, centre[best] - size[best] / 2)  # (N, 2) the intersection's corners
    high = np.minimum(centre + size / 2, centre[best] + size[best] / 2)
    intersection = np.prod(np.clip(high - low, 0, None), axis=1)  # (N,)
    union = np.prod(size, axis=1) + np.prod(size[best]) - intersection
    group = intersection / np.maximum(union, 1e-12) > NMS_IOU
    group[best] = True
    weights = scores[group] / scores[group].sum()  # (G,)
    mean = np.tensordot(weights, values[group], axes=1)  # (2 + P, 2)
    corner_free = np.concatenate([mean[:1], mean[2:]])  # (1 + P, 2): positions, in fractions of the input
    pixels = unwarp(corner_free, rect)  # (1 + P, 2)
    box = np.concatenate([pixels[0], mean[1] * np.array([rect.w, rect.h])])  # (4,) cx, cy, w, h
    return Detection(float(scores[best]), box, pixels[1:])


def angle_of(start, end, target):
    """The angle (radians) that turns the line from ``start`` to ``end`` (frame pixels) to ``target`` radians,
    counted anticlockwise from the x axis as seen on the screen (y points down)."""
    angle = target - math.atan2(-(end[1] - start[1]), end[0] - start[0])
    return (angle + math.pi) % (2 * math.pi) - math.pi


def sigmoid(x):
    return 1 / (1 + np.exp(-np.clip(np.asarray(x, np.float64), -100, 100)))


def refine_from_heatmap(uv, heatmaps, window=7):
    """Landmarks (N, 2), fractions of the crop, moved to the mean of their heatmap's cells within a ``window`` x
    ``window`` square about them, each cell weighted by its probability (heatmaps (h, w, N), logits). A landmark
    whose square holds no cell of probability ``MIN_SCORE`` or more keeps its place (MediaPipe's
    RefineLandmarksFromHeatmapCalculator with its kernel_size 7)."""
    h, w, N = heatmaps.shape
    refined = uv.copy()
    half = window // 2
    for n in range(N):
        col, row = int(uv[n, 0] * w), int(uv[n, 1] * h)
        top, left = max(0, row - half), max(0, col - half)
        bottom, right = min(h, row + half + 1), min(w, col + half + 1)
        if bottom <= top or right <= left:
            continue
        weights = sigmoid(heatmaps[top:bottom, left:right, n])  # (h', w')
        if weights.max() < MIN_SCORE:
            continue
        rows, cols = np.mgrid[top:bottom, left:right]  # (h', w') each
        total = weights.sum()
        refined[n] = ((weights * (cols + 0.5)).sum() / total / w, (weights * (rows + 0.5)).sum() / total / h)
    return refined


# ----------------------------------------------------------------------------------------------------------
# The two pipelines


class Landmarker:
    """A detector, then a landmark network on a crop about what it found.

    ``landmarker(frame)`` gives the frame's ``Keypoints``, or None when nothing is found. The crop the detector
    gives is only roughly placed; as MediaPipe does from one video frame to the next, the crop is then placed again
    from the landmarks found in it, ``REFINE`` times, within the same frame (so a frame's keypoints depend on that
    frame alone). The landmarks are the mean of those found in ``len(JITTER)`` crops moved by a few percent of their
    side: a single crop's landmarks move by a pixel or two when the crop moves by a few, and the mean moves less.
    Subclasses say how a crop follows from a detection and from landmarks."""

    REFINE = 2
    JITTER = ((0, 0), (-0.03, -0.03), (0.03, 0.03), (-0.03, 0.03), (0.03, -0.03))  # fractions of the crop's side
    strides = ()  # the detector's SSD layers
    keypoint_names = ()

    def __init__(self, detector_file, landmark_file, threads=1):
        folder = model_folder()
        self.detector = Model(folder / MODEL_FILES[detector_file], threads)
        self.network = Model(folder / MODEL_FILES[landmark_file], threads)
        self.anchors = ssd_anchors(self.detector.size, self.strides)  # (N, 2)

    def detect(self, frame) -> Optional[Detection]:
        """The detector's best detection in the frame, letterboxed to its square input in [-1, 1]."""
        rect = letterbox(frame.shape)
        raw, logits = self.detector(warp(frame, rect, self.detector.size, "constant") * 2 - 1)
        return best_detection(raw, logits, self.anchors, self.detector.size, rect)

    def __call__(self, frame) -> Optional[Keypoints]:
        frame = as_float_frame(frame)
        detection = self.detect(frame)
        if detection is None:
            return None
        rect = self.rect_from_detection(detection)
        # Blurred once for all the crops of this frame (they have about the detection's size), not once a crop.
        frame_in = frame
        frame = smooth(frame, smoothing(rect, self.network.size))
        for _ in range(self.REFINE):
            found = self.landmarks(frame, rect)
            if found is None:
                return None
            rect = self.rect_from_landmarks(found[0])
        runs = [self.landmarks(frame, rect._replace(cx=rect.cx + dx * rect.w, cy=rect.cy + dy * rect.h))
                for dx, dy in self.JITTER]
        runs = [run for run in runs if run is not None]
        if not runs:
            return None
        points = np.mean([run[0] for run in runs], axis=0)  # (L, 2) frame pixels
        probability = np.mean([run[1] for run in runs], axis=0)  # (L,)
        return self.keypoints(points, probability >= MIN_SCORE, frame_in.shape)


class FaceLandmarker(Landmarker):
    """``landmarker(frame)``: the 51 iBUG points (``IBUG51``) of the most confident face, or None."""

    strides = (8, 16, 16, 16)  # 896 anchors at 128x128
    keypoint_names = KEYPOINT_NAMES["face"]

    def __init__(self, threads=1):
        super().__init__("face_detector", "face_landmarks", threads)
        self.indices = np.array(list(IBUG51.values()))  # (51,)

    @staticmethod
    def rect_from_detection(detection):
        """1.5x the box's long side, square, turned so that the eyes (the detector's keypoints 0, 1) are level."""
        cx, cy, w, h = detection.box
        side = 1.5 * max(w, h)
        return Rect(cx, cy, side, side, angle_of(detection.keypoints[0], detection.keypoints[1], 0.0))

    @staticmethod
    def rect_from_landmarks(points):
        """The same from the mesh: its bounding box, and the line between the eyes' outer corners (33, 263)."""
        (left, top), (right, bottom) = points.min(0), points.max(0)
        side = 1.5 * max(right - left, bottom - top)
        return Rect((left + right) / 2, (top + bottom) / 2, side, side, angle_of(points[33], points[263], 0.0))

    def landmarks(self, frame, rect):
        """The 468 mesh points (468, 2) in frame pixels and their probability (468,), or None when the network
        says the crop holds no face; its input is the crop in [0, 1]."""
        mesh, flag = self.network(warp(frame, rect, self.network.size, smoothed=True))  # (1, 1, 1404), (1, 1, 1)
        presence = float(sigmoid(flag.ravel()[0]))
        if presence < MIN_SCORE:
            return None
        points = mesh.reshape(-1, 3)[:, :2] / self.network.size  # (468, 2) fractions of the crop
        return unwarp(points, rect), np.full(len(points), presence)

    def keypoints(self, points, found, shape):
        return Keypoints(points[self.indices], found[self.indices])


class BodyLandmarker(Landmarker):
    """``landmarker(frame)``: the 18 joints of OpenPose's COCO model (``COCO18``) of the most confident person, or
    None; a joint counts when MediaPipe rates it both visible and present (``MIN_SCORE``) and it lies in the
    frame."""

    strides = (8, 16, 32, 32, 32)  # 2254 anchors at 224x224
    keypoint_names = KEYPOINT_NAMES["body"]

    def __init__(self, threads=1):
        super().__init__("body_detector", "body_landmarks", threads)

    @staticmethod
    def _rect(centre, top):
        """Centred on the hips' middle, 1.25x the square of side twice the distance to ``top`` (a point on the
        circle about the body), turned so that ``top`` is straight above the centre."""
        side = 1.25 * 2 * float(np.hypot(*(top - centre)))
        return Rect(float(centre[0]), float(centre[1]), side, side, angle_of(centre, top, math.pi / 2))

    def rect_from_detection(self, detection):
        return self._rect(detection.keypoints[0], detection.keypoints[1])

    def rect_from_landmarks(self, points):
        return self._rect(points[33], points[34])  # the network's two auxiliary points, the detector's two

    def landmarks(self, frame, rect):
        """The 39 points (33 joints and 6 auxiliary, (39, 2)) in frame pixels, refined on their heatmaps, and the
        probability of each being visible and present (39,), or None when the network finds no person; its input
        is the crop in [0, 1]."""
        outputs = self.network(warp(frame, rect, self.network.size, smoothed=True))
        landmarks, flag, heatmaps = outputs[0], outputs[1], outputs[3]  # (195,), (1,), (64, 64, 39)
        if float(flag.ravel()[0]) < MIN_SCORE:  # the pose flag is a probability already
            return None
        landmarks = landmarks.reshape(-1, 5)  # (39, 5): x, y, z in crop pixels, visibility, presence (logits)
        uv = refine_from_heatmap(landmarks[:, :2] / self.network.size, heatmaps)  # (39, 2) fractions of the crop
        return unwarp(uv, rect), sigmoid(np.minimum(landmarks[:, 3], landmarks[:, 4]))

    def keypoints(self, points, found, shape):
        H, W = shape[:2]
        x, y = points[:, 0], points[:, 1]
        found = found & (x >= -0.5) & (x <= W - 0.5) & (y >= -0.5) & (y <= H - 0.5)  # (39,)
        joints = np.stack([points[list(parts)].mean(0) for _, parts in COCO18])  # (18, 2)
        visible = np.array([found[list(parts)].all() for _, parts in COCO18])  # (18,)
        return Keypoints(joints, visible)


def as_float_frame(frame):
    """A frame (H, W, 3) as float32 in [0, 1]: uint8 frames are scaled, float ones kept."""
    frame = np.asarray(frame)
    if frame.dtype == np.uint8:
        return frame.astype(np.float32) / 255
    return frame.astype(np.float32, copy=False)


def make_landmarker(target, threads=1):
    """The landmarker of ``target`` ('face' or 'body'); DetectorUnavailable when its models are not installed."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    return (FaceLandmarker if target == "face" else BodyLandmarker)(threads)
