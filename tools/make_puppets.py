"""Make a synthetic dataset of 2-D articulated "puppets" with ground-truth joints (a CPU-trainable stand-in
for VoxCeleb/TaiChi/TED, which are downloads a test machine cannot make).

    python tools/make_puppets.py --out data/puppets --size 64 --train 200 --test 20 --frames 48 --seed 0 --preview

Each identity is a figure of ten rigid, textured parts (torso, head, upper/lower arms, upper/lower legs) with
its own proportions, widths, colours and a textured background; each clip is a smooth random motion of its
joints, root and (in some clips) camera. Videos are named ``<identity>#<clip>`` so id sampling works.

Layout of ``--out``:

    train/<video>/<frame>.png, test/<video>/<frame>.png     what FramesDataset reads
    keypoints/{train,test}/<video>.npy                       (T, J, 2) float32 joints, x then y in [-1, 1]
    poses/{train,test}/<video>.npz                           the motion (angles, root, camera) of each clip
    transfer/<source>__<driving>/<frame>.png                 source identity rendered in the driving clip's
    keypoints/transfer/<source>__<driving>.npy               motion: animation ground truth; the pairs are
    test_pairs.csv                                           listed in test_pairs.csv (columns source, driving)
    puppets.json, README.md, preview.png (with --preview)

Python API (``from tools import make_puppets``): ``make_identity(seed, index)``, ``make_poses(rng, num_frames)``,
``render_clip(identity, poses, size)`` -> (frames, keypoints), ``load_identity(out, video)`` and
``load_poses(out, split, video)`` to re-render any identity in any clip's motion.

Coordinates: world units are fractions of the frame height (x right, y down, square frames); a pixel centre
(col, row) is at world ((col + 0.5) / S, (row + 0.5) / S); keypoints are saved as x = 2*col/(S-1) - 1,
y = 2*row/(S-1) - 1 (docs/method.md's conventions). Angles in radians, 0 = limb pointing down its parent's axis.
"""
import argparse
import colorsys
import csv
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import imageio.v3 as iio
import numpy as np

VERSION = 3
JOINTS = ('head', 'neck', 'right_shoulder', 'right_elbow', 'right_wrist', 'left_shoulder', 'left_elbow',
          'left_wrist', 'right_hip', 'right_knee', 'right_ankle', 'left_hip', 'left_knee', 'left_ankle')
# Joint angles of a pose and their limits in degrees. The torso's is its tilt from upright and the neck's the
# head's tilt from the torso; a limb's is its bend away from its parent: shoulders and hips open outwards,
# elbows raise the forearm, knees fold the shin back under the body.
ANGLES = ('torso', 'neck', 'right_shoulder', 'right_elbow', 'left_shoulder', 'left_elbow',
          'right_hip', 'right_knee', 'left_hip', 'left_knee')
ANGLE_LIMITS = np.deg2rad(np.array([(-12, 12), (-25, 25), (-15, 110), (0, 120), (-15, 110), (0, 120),
                                    (-10, 45), (0, 70), (-10, 45), (0, 70)], dtype=np.float64))  # (10, 2)
# Parts in drawing order (far to near, a fixed depth order, so occlusions stay consistent): name, the
# joint it starts from and the joint it ends at (None for the head, a disc about its centre).
PARTS = (('left_upper_arm', 'left_shoulder', 'left_elbow'), ('left_lower_arm', 'left_elbow', 'left_wrist'),
         ('left_upper_leg', 'left_hip', 'left_knee'), ('left_lower_leg', 'left_knee', 'left_ankle'),
         ('right_upper_leg', 'right_hip', 'right_knee'), ('right_lower_leg', 'right_knee', 'right_ankle'),
         ('torso', 'pelvis', 'neck'), ('head', 'head', None),
         ('right_upper_arm', 'right_shoulder', 'right_elbow'), ('right_lower_arm', 'right_elbow', 'right_wrist'))
PATTERNS = ('bands', 'diagonal', 'checks')
MIN_LIMB_WIDTH = 0.066  # of the frame height: at least 4 pixels across at 64x64
TORSO_BELOW_HIPS = 0.04  # how far the torso reaches past the pelvis, frame heights
TORSO_ABOVE_NECK = 0.02  # and past the neck joint, up to the head: the neck keypoint lies on the figure


@dataclass
class Identity:
    """What a puppet looks like; lengths in frame heights."""
    name: str
    lengths: dict        # torso, neck, head_radius, upper_arm, lower_arm, upper_leg, lower_leg, shoulder, hip
    widths: dict         # part name -> width (diameter); the head's is 2 * head_radius
    colours: np.ndarray  # (10, 2, 3) two RGB colours per part, in PARTS order
    patterns: list       # per part: (pattern name, period in frame heights, phase in [0, 1))
    background: dict     # base (3,), waves (G, 2) cycles per frame height, phases (G,), amplitudes (G, 3)


@dataclass
class Poses:
    """The motion of one clip, independent of the identity that performs it."""
    angles: np.ndarray   # (T, 10) radians, in ANGLES order
    root: np.ndarray     # (T, 2) pelvis offset from its rest position, frame heights
    camera: np.ndarray   # (T, 4) rotation (radians), log scale, shift x, shift y (frame heights)


def identity_name(seed, index):
    """Identity names carry the seed, so sets made with different seeds share no identity."""
    return f"p{seed}_{index:04d}"


def _colour(rng, saturation, value):
    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*saturation), rng.uniform(*value)))


def make_identity(seed, index):
    """The identity number ``index`` of the set made with ``seed`` (deterministic)."""
    rng = np.random.default_rng([seed, 0, index])
    # Proportions spread widely (version 3; version 2 had ±10% and 0.92-1.02): two test identities' limbs differ
    # by 14% on average, so that moving a source with another figure's regions (standard mode) gives it the wrong
    # proportions, which is what the transfer evaluation measures.
    scale = rng.uniform(0.85, 1.05)
    base = dict(torso=0.27, neck=0.015, head_radius=0.075, upper_arm=0.15, lower_arm=0.14, upper_leg=0.2,
                lower_leg=0.19, shoulder=0.075, hip=0.05)
    lengths = {key: value * scale * rng.uniform(0.8, 1.2) for key, value in base.items()}
    base_widths = dict(torso=0.2, upper_arm=0.075, lower_arm=0.07, upper_leg=0.09, lower_leg=0.08)
    widths = {key: max(MIN_LIMB_WIDTH, value * rng.uniform(0.9, 1.2)) for key, value in base_widths.items()}
    part_widths = {name: widths[name.split('_', 1)[-1]] for name, _, _ in PARTS if name not in ('torso', 'head')}
    part_widths.update(torso=widths['torso'], head=2 * lengths['head_radius'])
    colours = []
    for _ in PARTS:  # a light and a dark colour (hues drawn apart), so the texture reads at 64x64
        light = _colour(rng, (0.45, 1.0), (0.6, 1.0))
        dark = _colour(rng, (0.3, 1.0), (0.1, 0.45))
        colours.append((light, dark) if rng.uniform() < 0.5 else (dark, light))
    # Periods of 0.11-0.17 frame heights (7-11 px at 64x64): the 3-5 px stripes of version 1 were at the limit of
    # the pixel grid, where half a pixel of misalignment costs as much L1 as not moving the part at all.
    patterns = [(PATTERNS[rng.integers(len(PATTERNS))], rng.uniform(0.11, 0.17), rng.uniform()) for _ in PARTS]
    num_waves = 4
    angles = rng.uniform(0, np.pi, num_waves)
    waves = rng.uniform(1.5, 5.0, (num_waves, 1)) * np.stack([np.cos(angles), np.sin(angles)], 1)  # (G, 2)
    background = dict(base=_colour(rng, (0.05, 0.35), (0.35, 0.65)), waves=waves,
                      phases=rng.uniform(0, 1, num_waves), amplitudes=rng.uniform(-0.07, 0.07, (num_waves, 3)))
    return Identity(identity_name(seed, index), lengths, part_widths, np.array(colours), patterns, background)


def _smooth(rng, num_frames, num_series):
    """Smooth random series in (-1, 1), (T, N): tanh of a few random sinusoids (0.2 to 1.5 cycles / 48 frames)."""
    t = np.arange(num_frames, dtype=np.float64)[:, None, None]  # (T, 1, 1)
    frequencies = rng.uniform(0.2, 1.5, (1, num_series, 3)) / 48  # (1, N, 3) cycles per frame
    amplitudes = rng.uniform(0.3, 1.0, (1, num_series, 3)) / np.arange(1, 4)  # (1, N, 3)
    phases = rng.uniform(0, 2 * np.pi, (1, num_series, 3))
    offsets = rng.uniform(-0.8, 0.8, (num_series,))
    return np.tanh(offsets + (amplitudes * np.sin(2 * np.pi * frequencies * t + phases)).sum(2))  # (T, N)


def make_poses(rng, num_frames, camera_motion=False):
    """A smooth random motion of ``num_frames`` frames; ``rng`` a numpy Generator."""
    lo, hi = ANGLE_LIMITS[:, 0], ANGLE_LIMITS[:, 1]  # (10,)
    angles = (lo + hi) / 2 + (hi - lo) / 2 * _smooth(rng, num_frames, len(ANGLES))  # (T, 10)
    root = _smooth(rng, num_frames, 2) * np.array([0.06, 0.02])  # (T, 2)
    camera = np.zeros((num_frames, 4))
    if camera_motion:
        camera = _smooth(rng, num_frames, 4) * np.array([np.deg2rad(4), 0.04, 0.04, 0.03])  # (T, 4)
    return Poses(angles, root, camera)


def _direction(angle):
    """Unit vector of a limb at ``angle`` from pointing straight down (y grows downwards), (..., 2)."""
    return np.stack([np.sin(angle), np.cos(angle)], -1)


def forward_kinematics(identity, poses):
    """World positions (frame heights) of the joints, the pelvis and the head centre: name -> (T, 2)."""
    L = identity.lengths
    a = dict(zip(ANGLES, poses.angles.T))  # name -> (T,)
    standing_top = L['torso'] + L['neck'] + 2 * L['head_radius']
    standing_bottom = L['upper_leg'] + L['lower_leg'] + identity.widths['right_lower_leg'] / 2
    pelvis = np.array([0.5, 0.5 + (standing_top - standing_bottom) / 2]) + poses.root  # (T, 2)
    down = _direction(a['torso'])  # (T, 2) the torso's axis, pointing from neck to pelvis
    side = np.stack([down[:, 1], -down[:, 0]], -1)  # (T, 2) towards the figure's left (the viewer's right)
    p = {'pelvis': pelvis, 'neck': pelvis - L['torso'] * down}
    p['head'] = p['neck'] - (L['neck'] + L['head_radius']) * _direction(a['torso'] + a['neck'])
    for sign, s in ((-1, 'right'), (1, 'left')):
        # Mirror image sides: a positive angle opens the right limbs to the viewer's left, the left to the right.
        p[f'{s}_shoulder'] = p['neck'] + sign * L['shoulder'] * side + 0.15 * L['torso'] * down
        upper = a['torso'] + sign * a[f'{s}_shoulder']
        p[f'{s}_elbow'] = p[f'{s}_shoulder'] + L['upper_arm'] * _direction(upper)
        p[f'{s}_wrist'] = p[f'{s}_elbow'] + L['lower_arm'] * _direction(upper + sign * a[f'{s}_elbow'])
        p[f'{s}_hip'] = pelvis + sign * L['hip'] * side
        thigh = a['torso'] + sign * a[f'{s}_hip']
        p[f'{s}_knee'] = p[f'{s}_hip'] + L['upper_leg'] * _direction(thigh)
        p[f'{s}_ankle'] = p[f'{s}_knee'] + L['lower_leg'] * _direction(thigh - sign * a[f'{s}_knee'])
    return p


def _camera(poses):
    """Per frame scale (T,) and the 2x2 rotation-scale (T, 2, 2) and shift (T, 2) of the camera about the centre."""
    angle, log_scale = poses.camera[:, 0], poses.camera[:, 1]
    scale = np.exp(log_scale)  # (T,)
    cos, sin = np.cos(angle), np.sin(angle)
    matrix = scale[:, None, None] * np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], 1)  # (T, 2, 2)
    return scale, matrix, poses.camera[:, 2:]


def _through_camera(points, poses):
    """World points (T, N, 2) to where the camera shows them, in frame heights: [0, 1] is in frame."""
    _, matrix, shift = _camera(poses)
    return np.einsum('tij,tnj->tni', matrix, points - 0.5) + 0.5 + shift[:, None]  # (T, N, 2)


def _to_image(points, poses, size):
    """World points (T, N, 2) to pixel coordinates (col, row) through the camera."""
    return _through_camera(points, poses) * size - 0.5  # (T, N, 2)


def _background(identity, poses, size):
    """The identity's textured background seen through each frame's camera, (T or 1, S, S, 3) in [0, 1]."""
    bg = identity.background
    centres = (np.arange(size) + 0.5) / size - 0.5  # (S,) pixel centres about the frame centre
    _, matrix, shift = _camera(poses)
    if not np.any(poses.camera):  # a still camera: one image for the clip
        matrix, shift = matrix[:1], shift[:1]
    # The world point a pixel p sees is M^-1 (p - shift) + 1/2, so each wave's phase k.world is affine in p:
    # (M^-T k).p + k.(1/2 - M^-1 shift). Evaluated as an outer sum over rows and columns, without a grid.
    inverse = np.linalg.inv(matrix)  # (T, 2, 2)
    slopes = 2 * np.pi * np.einsum('tji,gj->tgi', inverse, bg['waves'])  # (T, G, 2) radians per unit along x, y
    offsets = 2 * np.pi * ((0.5 - np.einsum('tij,tj->ti', inverse, shift)) @ bg['waves'].T + bg['phases'])  # (T, G)
    slopes, offsets, centres = (x.astype(np.float32) for x in (slopes, offsets, centres))
    phases = (slopes[..., 0, None, None] * centres[None, None, None, :]
              + slopes[..., 1, None, None] * centres[None, None, :, None] + offsets[..., None, None])  # (T, G, S, S)
    # Clipped sines: soft-edged bands, so the background has edges to track, not only smooth gradients.
    bands = np.clip(1.5 * np.sin(phases), -1, 1)  # (T, G, S, S)
    image = bg['base'].astype(np.float32) + np.tensordot(bands, bg['amplitudes'].astype(np.float32), (1, 0))
    return np.clip(image, 0, 1)  # (T, S, S, 3)


def _texture(u, v, pattern, pixels_per_unit):
    """Pattern value in [0, 1] at part-local coordinates u (along), v (across) in frame heights, (T, h, w)."""
    name, period, phase = pattern
    if name == 'bands':
        wave = np.sin(2 * np.pi * (u / period + phase))
    elif name == 'diagonal':
        wave = np.sin(2 * np.pi * ((u + v) / (period * np.sqrt(2)) + phase))
    else:
        wave = np.sin(2 * np.pi * (u / period + phase)) * np.sin(2 * np.pi * (v / period + phase))
    # A wave crosses zero with slope 2*pi/period per unit: scaled so the edge is about one pixel wide.
    return np.clip(0.5 + 0.5 * wave * (period * pixels_per_unit) / np.pi, 0, 1)


def _draw_part(canvas, coverage, start, direction, span, half_width, corner, colours, pattern, pixels_per_unit):
    """Composite one textured rounded box into canvas (T, S, S, 3) and coverage (T, S, S), in place.

    The box runs along ``direction`` (T, 2) from ``start`` (T, 2) over u in [span[0], span[1]] (each (T,)),
    across it over [-half_width, half_width] (T,), corners rounded by ``corner`` (T,): a capsule when the
    corner is the half width, a disc when the span is too. All in pixels; pixels_per_unit (T,) sizes the
    texture. Only the part's bounding box over the clip is computed: a thin limb costs little at 256x256.
    """
    size = canvas.shape[1]
    ends = start[:, None] + direction[:, None] * np.stack(span, 1)[..., None]  # (T, 2 ends, 2)
    reach = half_width.max() + 1
    c0, r0 = np.maximum(np.floor(ends.min((0, 1)) - reach).astype(int), 0)
    c1, r1 = np.minimum(np.ceil(ends.max((0, 1)) + reach).astype(int) + 1, size)
    if c0 >= c1 or r0 >= r1:
        return
    dx = np.arange(c0, c1, dtype=np.float32)[None, None, :] - start[:, 0, None, None]  # (T, 1, w)
    dy = np.arange(r0, r1, dtype=np.float32)[None, :, None] - start[:, 1, None, None]  # (T, h, 1)
    ex, ey = direction[:, 0, None, None], direction[:, 1, None, None]  # (T, 1, 1)
    u = dx * ex + dy * ey  # (T, h, w) along the part
    v = dy * ex - dx * ey  # (T, h, w) across it
    # Signed distance to the rounded box (negative inside), then one pixel of anti-aliasing across its edge.
    lo, hi, hw, rc = (x[:, None, None] for x in (*span, half_width, corner))
    qu = np.abs(u - (lo + hi) / 2) - ((hi - lo) / 2 - rc)  # (T, h, w)
    qv = np.abs(v) - (hw - rc)  # (T, h, w)
    outside = np.sqrt(np.maximum(qu, 0) ** 2 + np.maximum(qv, 0) ** 2)  # (T, h, w)
    distance = outside + np.minimum(np.maximum(qu, qv), 0) - rc  # (T, h, w)
    alpha = np.clip(0.5 - distance, 0, 1)  # (T, h, w)
    ppu = pixels_per_unit[:, None, None]
    t = _texture(u / ppu, v / ppu, pattern, ppu)[..., None]  # (T, h, w, 1)
    colour = colours[0] + t * (colours[1] - colours[0])  # (T, h, w, 3)
    window = canvas[:, r0:r1, c0:c1]
    window += alpha[..., None] * (colour - window)
    np.maximum(coverage[:, r0:r1, c0:c1], alpha, out=coverage[:, r0:r1, c0:c1])


def render(identity, poses, size, draw_figure=True):
    """Frames (T, S, S, 3) float32 in [0, 1], figure coverage (T, S, S) in [0, 1], keypoints (T, J, 2) in pixels."""
    num_frames = len(poses.angles)
    points = forward_kinematics(identity, poses)
    names = sorted(points)
    image_points = _to_image(np.stack([points[n] for n in names], 1), poses, size)  # (T, N, 2) pixels
    pixel = dict(zip(names, image_points.transpose(1, 0, 2)))  # name -> (T, 2)
    canvas = np.broadcast_to(_background(identity, poses, size), (num_frames, size, size, 3)).copy()
    coverage = np.zeros((num_frames, size, size), np.float32)
    pixels_per_unit = _camera(poses)[0] * size  # (T,)
    if draw_figure:
        for index, (name, first, second) in enumerate(PARTS):
            half_width = identity.widths[name] / 2 * pixels_per_unit  # (T,)
            if second is None:  # the head: a disc about its centre, its texture turned with the neck
                start, vector = pixel['head'], pixel['head'] - pixel['neck']  # (T, 2) each
                length = np.zeros(num_frames)
            else:
                start, vector = pixel[first], pixel[second] - pixel[first]  # (T, 2) each
                length = np.linalg.norm(vector, axis=1)  # (T,)
            direction = vector / np.maximum(np.linalg.norm(vector, axis=1, keepdims=True), 1e-9)  # (T, 2)
            if name == 'torso':  # a box with softened corners, reaching a little below the hips
                span = (-TORSO_BELOW_HIPS * pixels_per_unit, length + TORSO_ABOVE_NECK * pixels_per_unit)
                corner = 0.4 * half_width
            else:  # limbs are capsules about their bones, the head a disc
                span, corner = (-half_width, length + half_width), half_width
            geometry = [np.asarray(x, np.float32) for x in (start, direction, span, half_width, corner)]
            _draw_part(canvas, coverage, *geometry, identity.colours[index].astype(np.float32),
                       identity.patterns[index], pixels_per_unit.astype(np.float32))
    keypoints = np.stack([pixel[name] for name in JOINTS], 1)  # (T, J, 2)
    return np.clip(canvas, 0, 1), coverage, keypoints


def render_clip(identity, poses, size):
    """Render ``identity`` performing ``poses`` at size x size.

    Returns frames (T, S, S, 3) uint8 and keypoints (T, J, 2) float32, x then y in [-1, 1] (pixel centres
    0 and S-1 at -1 and +1). Any identity can perform any clip's poses: that is the animation ground truth.
    """
    frames, _, keypoints = render(identity, poses, size)
    return to_uint8(frames), normalise_keypoints(keypoints, size)


def to_uint8(frames):
    return np.round(frames * 255).astype(np.uint8)


def normalise_keypoints(keypoints, size):
    """Pixel (col, row) to the project's [-1, 1] coordinates, (..., 2) float32."""
    return (2 * keypoints / (size - 1) - 1).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# The dataset on disk

# Clips whose joints come nearer the frame's edge than this (frame heights) are redrawn (about 1 in 200): then
# every keypoint lies in [-1, 1] at any size from 32 pixels up (pixel centres span [0.5/S, 1 - 0.5/S]).
EDGE_MARGIN = 0.016


def in_frame(identity, poses):
    """Whether every joint of ``identity`` in ``poses`` stays EDGE_MARGIN inside the frame (any size)."""
    points = forward_kinematics(identity, poses)
    shown = _through_camera(np.stack([points[n] for n in JOINTS], 1), poses)  # (T, J, 2)
    return bool(((shown >= EDGE_MARGIN) & (shown <= 1 - EDGE_MARGIN)).all())


def clip_poses(seed, identity_index, clip_index, num_frames, camera_prob=0.5):
    """The poses of clip ``clip_index`` of identity ``identity_index``: deterministic, all joints in frame."""
    rng = np.random.default_rng([seed, 1, identity_index, clip_index])
    camera_motion = rng.uniform() < camera_prob
    identity = make_identity(seed, identity_index)
    for _ in range(100):  # in practice one or two draws
        poses = make_poses(rng, num_frames, camera_motion)
        if in_frame(identity, poses):
            break
    return poses


def video_name(seed, identity_index, clip_index):
    return f"{identity_name(seed, identity_index)}#{clip_index:02d}"


def parse_video_name(name):
    """'p<seed>_<index>#<clip>' -> (seed, identity index, clip index)."""
    identity, clip = name.split('#')
    seed, index = identity[1:].rsplit('_', 1)
    return int(seed), int(index), int(clip)


def _write_clip(out, folder, name, frames, keypoints, poses=None):
    """Frames as <out>/<folder>/<name>/<t>.png, keypoints as <out>/keypoints/<folder>/<name>.npy (+ poses)."""
    video_dir = Path(out) / folder / name
    video_dir.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        iio.imwrite(video_dir / f"{t:04d}.png", frame, compress_level=3)  # 2x faster than 6, 15% larger
    (Path(out) / 'keypoints' / folder).mkdir(parents=True, exist_ok=True)
    np.save(Path(out) / 'keypoints' / folder / f"{name}.npy", keypoints)
    if poses is not None:
        (Path(out) / 'poses' / folder).mkdir(parents=True, exist_ok=True)
        np.savez(Path(out) / 'poses' / folder / f"{name}.npz", angles=poses.angles, root=poses.root,
                 camera=poses.camera)


def _make_job(job, settings):
    """Render and write one job: ('train'|'test', video) or ('transfer', source video, driving video)."""
    seed, size, frames, camera_prob, out = (settings[k] for k in ('seed', 'size', 'frames', 'camera_prob', 'out'))
    if job[0] == 'transfer':
        _, source, driving = job
        _, identity_index, _ = parse_video_name(source)
        _, driving_identity, driving_clip = parse_video_name(driving)
        poses = clip_poses(seed, driving_identity, driving_clip, frames, camera_prob)
        clip, keypoints = render_clip(make_identity(seed, identity_index), poses, size)
        _write_clip(out, 'transfer', f"{source}__{driving}", clip, keypoints)
    else:
        split, name = job
        _, identity_index, clip_index = parse_video_name(name)
        poses = clip_poses(seed, identity_index, clip_index, frames, camera_prob)
        clip, keypoints = render_clip(make_identity(seed, identity_index), poses, size)
        _write_clip(out, split, name, clip, keypoints, poses)
    return len(clip)


def plan(seed, num_train, num_test, clips_per_identity, num_pairs, frames, camera_prob=0.5):
    """Video names per split, and the (source, driving) test pairs, all from different identities when possible.

    Test identities are numbered after the training ones, so the two splits share none.
    """
    def videos(count, first_identity):
        return [video_name(seed, first_identity + i // clips_per_identity, i % clips_per_identity)
                for i in range(count)]
    splits = {'train': videos(num_train, 0), 'test': videos(num_test, math.ceil(num_train / clips_per_identity))}
    rng = np.random.default_rng([seed, 2])
    test = splits['test']
    pairs = []
    for i in range(num_pairs if test else 0):
        driving = test[i % len(test)]
        others = [name for name in test if name.split('#')[0] != driving.split('#')[0]] or test
        poses = clip_poses(seed, *parse_video_name(driving)[1:], frames, camera_prob)
        for _ in range(10):  # a source whose figure keeps every joint in frame in this motion
            source = others[rng.integers(len(others))]
            _, identity_index, _ = parse_video_name(source)
            if in_frame(make_identity(seed, identity_index), poses):
                break
        pairs.append((source, driving))
    return splits, pairs


def load_identity(out, video):
    """The identity of a video (or identity name) of a generated set, rebuilt from the set's seed."""
    settings = json.loads((Path(out) / 'puppets.json').read_text())
    seed, index, _ = parse_video_name(video if '#' in video else video + '#00')
    if seed != settings['seed']:
        raise ValueError(f"{video} is not from the set in {out}, which was made with seed {settings['seed']}")
    return make_identity(seed, index)


def load_poses(out, split, video):
    """The poses of a generated clip, from <out>/poses/<split>/<video>.npz."""
    with np.load(Path(out) / 'poses' / split / f"{video}.npz") as data:
        return Poses(data['angles'], data['root'], data['camera'])


# ----------------------------------------------------------------------------------------------------------
# Preview, README, command line

BONES = (('head', 'neck'), ('neck', 'right_shoulder'), ('right_shoulder', 'right_elbow'),
         ('right_elbow', 'right_wrist'), ('neck', 'left_shoulder'), ('left_shoulder', 'left_elbow'),
         ('left_elbow', 'left_wrist'), ('neck', 'right_hip'), ('right_hip', 'right_knee'),
         ('right_knee', 'right_ankle'), ('neck', 'left_hip'), ('left_hip', 'left_knee'), ('left_knee', 'left_ankle'))


def draw_keypoints(frame, keypoints, zoom):
    """A frame (S, S, 3) uint8 enlarged ``zoom`` times (nearest), with its skeleton (J, 2 in [-1, 1]) drawn."""
    from skimage.draw import disk, line
    image = frame.repeat(zoom, 0).repeat(zoom, 1)  # (zS, zS, 3)
    size = image.shape[0]
    pixels = (keypoints + 1) / 2 * (frame.shape[0] - 1) * zoom + (zoom - 1) / 2  # (J, 2) col, row
    index = {name: i for i, name in enumerate(JOINTS)}
    for a, b in BONES:
        (ca, ra), (cb, rb) = np.round(pixels[index[a]]).astype(int), np.round(pixels[index[b]]).astype(int)
        rows, cols = line(ra, ca, rb, cb)
        keep = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
        image[rows[keep], cols[keep]] = 255
    for j, (col, row) in enumerate(pixels):
        colour = np.array(colorsys.hsv_to_rgb(j / len(JOINTS), 1, 1)) * 255
        image[disk((row, col), max(2, zoom), shape=image.shape[:2])] = colour
    return image


def contact_sheet(out, videos, columns=8):
    """One row per (folder, video) of ``out``: ``columns`` frames spread over the clip, keypoints drawn."""
    rows = []
    for folder, name in videos:
        frame_paths = sorted((Path(out) / folder / name).glob('*.png'))
        keypoints = np.load(Path(out) / 'keypoints' / folder / f"{name}.npy")  # (T, J, 2)
        chosen = np.linspace(0, len(frame_paths) - 1, columns).round().astype(int)
        zoom = max(1, math.ceil(128 / iio.imread(frame_paths[0]).shape[0]))  # small frames enlarged to >= 128
        rows.append(np.concatenate([draw_keypoints(iio.imread(frame_paths[t]), keypoints[t], zoom)
                                    for t in chosen], 1))
    return np.concatenate(rows, 0)


README = """# Synthetic articulated puppets

Made by `python tools/make_puppets.py {command}` (version {version}, seed {seed}). The same command makes the
same files; another seed makes a disjoint set of identities (identity names carry the seed).

- `train/` ({train} videos) and `test/` ({test} videos): one folder of {frames} PNG frames ({size}x{size}) per
  video, named `<identity>#<clip>` ({clips} clips per identity; no identity is in both splits).
- `keypoints/{{train,test}}/<video>.npy`: (T, {num_joints}, 2) float32 joint positions, x then y in [-1, 1]
  (x = 2*col/(W-1) - 1, y = 2*row/(H-1) - 1, pixel centres). Joints, in order: {joints}.
- `poses/{{train,test}}/<video>.npz`: the motion of each clip (`angles` (T, 10) radians in the order
  {angles}; `root` (T, 2) pelvis offset; `camera` (T, 4) rotation, log scale, shift).
- `transfer/<source>__<driving>/` and `keypoints/transfer/`: {pairs} animation ground truths, the source
  video's identity (figure and background) rendered in the driving video's motion; `test_pairs.csv` lists the
  pairs (columns `source`, `driving`, `ground_truth`), usable as a `pairs_list`.

Each identity is a figure of ten rigid parts (torso, head, upper and lower arms and legs) with its own
proportions, widths, colours and textures (bands, diagonal stripes or checks) on a textured background. In each
clip every joint angle follows a smooth random trajectory within fixed limits, the root moves and tilts a
little, parts occlude each other in a fixed depth order, and with probability {camera_prob} the camera moves
(a small rotation, zoom and shift of the whole frame).
"""


def write_readme(out, settings, command):
    text = README.format(command=command, num_joints=len(JOINTS), joints=', '.join(JOINTS),
                         angles=', '.join(ANGLES), version=VERSION, **settings)
    (Path(out) / 'README.md').write_text(text)


OUTPUTS = ('train', 'test', 'keypoints', 'poses', 'transfer', 'test_pairs.csv', 'puppets.json', 'README.md',
           'preview.png')


class PuppetError(ValueError):
    """Settings or an ``--out`` the tool cannot use; the message names the option and what it expects."""


MIN_SIZE, MAX_SIZE = 32, 4096  # below 32 pixels the parts' textures and joints blur together


def check_settings(out, size, num_train, num_test, frames, seed, clips_per_identity, num_pairs, camera_prob,
                   workers):
    """Raise a PuppetError for the first setting that cannot make a set, before anything is written."""
    checks = [
        (MIN_SIZE <= size <= MAX_SIZE, f"--size {size}: expected a frame side of {MIN_SIZE} to {MAX_SIZE} pixels"),
        (frames >= 2, f"--frames {frames}: expected at least 2 frames per video (a training pair takes two)"),
        (clips_per_identity >= 1, f"--clips {clips_per_identity}: expected at least 1 clip per identity"),
        (num_train >= 0, f"--train {num_train}: expected a count >= 0"),
        (num_test >= 0, f"--test {num_test}: expected a count >= 0"),
        (num_pairs >= 0, f"--pairs {num_pairs}: expected a count >= 0"),
        (seed >= 0, f"--seed {seed}: expected a seed >= 0"),
        (0 <= camera_prob <= 1, f"--camera-prob {camera_prob}: expected a fraction from 0 to 1"),
        (workers is None or workers >= 1, f"--workers {workers}: expected at least 1 process"),
        (not Path(out).exists() or Path(out).is_dir(), f"--out {out}: a file; expected a folder (made when missing)"),
    ]
    for ok, message in checks:
        if not ok:
            raise PuppetError(message)


def prepare_output(out, overwrite):
    """Make ``out``; an earlier set there is replaced only with ``overwrite``, and only its own files."""
    out = Path(out)
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not overwrite:
        raise PuppetError(f"{out} already holds {', '.join(existing)}; pass --overwrite to replace that set")
    if existing and not (out / 'puppets.json').exists():
        raise PuppetError(f"{out} holds {', '.join(existing)} but no puppets.json: not a set made by this tool, "
                          f"so nothing is deleted; choose another --out")
    for name in existing:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate(out, size=64, num_train=200, num_test=20, frames=48, seed=0, clips_per_identity=4, num_pairs=20,
             camera_prob=0.5, workers=None, preview=False, overwrite=False, command=''):
    """Write a puppet set to ``out`` (layout in the module docstring); returns the settings written."""
    check_settings(out, size, num_train, num_test, frames, seed, clips_per_identity, num_pairs, camera_prob, workers)
    prepare_output(out, overwrite)
    splits, pairs = plan(seed, num_train, num_test, clips_per_identity, num_pairs, frames, camera_prob)
    settings = dict(seed=seed, size=size, frames=frames, train=num_train, test=num_test, clips=clips_per_identity,
                    pairs=len(pairs), camera_prob=camera_prob, out=str(out))
    jobs = [(split, name) for split in ('train', 'test') for name in splits[split]]
    jobs += [('transfer', source, driving) for source, driving in pairs]
    workers = workers or min(os.cpu_count() or 1, 8)
    if workers > 1:
        with Pool(workers) as pool:
            list(pool.imap_unordered(_Job(settings), jobs, chunksize=4))
    else:
        list(map(_Job(settings), jobs))
    with open(Path(out) / 'test_pairs.csv', 'w', newline='') as file:
        writer = csv.writer(file)
        writer.writerow(['source', 'driving', 'ground_truth'])
        writer.writerows([(s, d, f"transfer/{s}__{d}") for s, d in pairs])
    record = {**{k: v for k, v in settings.items() if k != 'out'}, 'version': VERSION, 'joints': JOINTS,
              'angles': ANGLES, 'videos': splits}
    (Path(out) / 'puppets.json').write_text(json.dumps(record, indent=1))
    write_readme(out, settings, command)
    if preview:
        shown = [('train', name) for name in splits['train'][:3]] + [('test', name) for name in splits['test'][:1]]
        shown += [('transfer', f"{s}__{d}") for s, d in pairs[:1]]
        iio.imwrite(Path(out) / 'preview.png', contact_sheet(out, shown))
    return settings


class _Job:
    """A picklable job runner for the worker pool."""

    def __init__(self, settings):
        self.settings = settings

    def __call__(self, job):
        return _make_job(job, self.settings)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='data/puppets', help="output folder (default: data/puppets)")
    parser.add_argument('--size', type=int, default=64, help="frame side in pixels (default: 64)")
    parser.add_argument('--train', type=int, default=200, help="training videos (default: 200)")
    parser.add_argument('--test', type=int, default=20, help="test videos (default: 20)")
    parser.add_argument('--frames', type=int, default=48, help="frames per video (default: 48)")
    parser.add_argument('--seed', type=int, default=0, help="seed; another seed gives other identities (default: 0)")
    parser.add_argument('--clips', type=int, default=4, help="clips per identity (default: 4)")
    parser.add_argument('--pairs', type=int, default=20,
                        help="test pairs with an animation ground truth, 0 for none (default: 20)")
    parser.add_argument('--camera-prob', type=float, default=0.5,
                        help="fraction of clips with camera motion (default: 0.5)")
    parser.add_argument('--workers', type=int, default=None, help="processes (default: CPU count, at most 8)")
    parser.add_argument('--preview', action='store_true', help="also write <out>/preview.png, a contact sheet")
    parser.add_argument('--overwrite', action='store_true', help="replace a set made earlier in --out")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    command = ' '.join(sys.argv[1:] if argv is None else argv)
    try:
        settings = generate(args.out, args.size, args.train, args.test, args.frames, args.seed, args.clips,
                            args.pairs, args.camera_prob, args.workers, args.preview, args.overwrite, command)
    except PuppetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a folder that cannot be written, a full disk
        print(f"error: {error.filename or args.out}: cannot write the set: {error.strerror or error}",
              file=sys.stderr)
        return 1
    count = settings['train'] + settings['test'] + settings['pairs']
    print(f"wrote {count} videos ({settings['train']} train, {settings['test']} test, {settings['pairs']} transfer) "
          f"of {args.frames} frames at {args.size}x{args.size} to {args.out} in {time.perf_counter() - start:.1f} s"
          + (f"; preview: {Path(args.out) / 'preview.png'}" if args.preview else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
