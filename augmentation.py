"""Training augmentations, each drawn once per item and applied alike to all its frames (docs/method.md §9).

The config keys are the reference's:

    flip_param:     {horizontal_flip: bool, time_flip: bool}      each applied with probability 1/2; they combine
    rotation_param: {degrees: d}                                  angle ~ U(-d, d) (or U(lo, hi) for [lo, hi])
    resize_param:   {ratio: [lo, hi]}                             both sides scaled by r ~ U(lo, hi)
    crop_param:     {size: [h, w]}                                random crop, edge padding when too small
    jitter_param:   {brightness, contrast, saturation, hue}       all four, in a random order (torchvision's)

Randomness: the parameters are drawn from numpy, from the ``rng`` passed to the call (a
``numpy.random.Generator`` or ``RandomState``) or else from numpy's global RNG, so ``np.random.seed(s)``
makes a run repeatable and torch's DataLoader, which re-seeds numpy in each worker, gives every worker its
own draws. The pixel work is done on all T frames at once as one (T, 3, H, W) torch batch.
"""
import inspect

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF


def _randint(rng, high):
    """An integer in [0, high) from a Generator, a RandomState or the numpy.random module."""
    return int(rng.integers(high)) if hasattr(rng, 'integers') else int(rng.randint(high))


def _range(value, name, around=0.0):
    """A config value v or [lo, hi] as (lo, hi); v gives (around - v, around + v)."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
        return around - float(value), around + float(value)
    lo, hi = (float(v) for v in value)
    if lo > hi:
        raise ValueError(f"{name} must be [lo, hi] with lo <= hi, got {list(value)}")
    return lo, hi


class RandomFlip:
    """Mirror left-right and/or reverse time, each with probability 1/2 (independently: they combine)."""

    def __init__(self, horizontal_flip=False, time_flip=False):
        self.horizontal_flip = horizontal_flip
        self.time_flip = time_flip

    def __call__(self, clip, rng):
        """clip (T, 3, H, W) -> (T, 3, H, W)."""
        if self.horizontal_flip and rng.random() < 0.5:
            clip = clip.flip(3)
        if self.time_flip and rng.random() < 0.5:
            clip = clip.flip(0)
        return clip


class RandomRotation:
    """Rotate counter-clockwise (as skimage's ``rotate``) about the centre by a random angle in degrees.

    Corners that come from outside the frame are black, as with skimage's default used by the reference.
    """

    def __init__(self, degrees):
        self.degrees = _range(degrees, 'rotation_param.degrees')

    def __call__(self, clip, rng):
        """clip (T, 3, H, W) -> (T, 3, H, W)."""
        T, _, H, W = clip.shape
        angle = np.deg2rad(rng.uniform(*self.degrees))
        cos, sin = np.cos(angle), np.sin(angle)
        # An output pixel at offset (dx, dy) from the centre samples the input at the offset rotated back.
        # affine_grid works in [-1, 1] per axis, so scale to pixels (W/2, H/2), rotate, scale back.
        rotation = np.array([[cos, -sin], [sin, cos]])
        theta = np.diag([2.0 / W, 2.0 / H]) @ rotation @ np.diag([W / 2.0, H / 2.0])  # (2, 2)
        theta = torch.tensor(np.concatenate([theta, np.zeros((2, 1))], 1), dtype=clip.dtype)  # (2, 3)
        grid = F.affine_grid(theta.expand(T, 2, 3), [T, 3, H, W], align_corners=False)  # (T, H, W, 2)
        return F.grid_sample(clip, grid, mode='bilinear', padding_mode='zeros', align_corners=False)


class RandomResize:
    """Scale height and width by one random ratio (the size changes; a crop usually follows)."""

    def __init__(self, ratio):
        self.ratio = _range(ratio, 'resize_param.ratio', around=1.0)
        if self.ratio[0] <= 0:
            raise ValueError(f"resize_param.ratio must be positive, got {list(ratio)}")

    def __call__(self, clip, rng):
        """clip (T, 3, H, W) -> (T, 3, int(H*r), int(W*r))."""
        H, W = clip.shape[2:]
        ratio = rng.uniform(*self.ratio)
        size = (max(1, int(H * ratio)), max(1, int(W * ratio)))
        if size == (H, W):
            return clip
        return F.interpolate(clip, size=size, mode='bilinear', align_corners=False, antialias=ratio < 1)


class RandomCrop:
    """Crop a random (h, w) window; a frame smaller than that is first padded (edge values) around it."""

    def __init__(self, size):
        size = [size, size] if isinstance(size, int) else list(size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"crop_param.size must be [h, w] with positive h and w, got {size}")
        self.size = tuple(int(s) for s in size)

    def __call__(self, clip, rng):
        """clip (T, 3, H, W) -> (T, 3, h, w)."""
        h, w = self.size
        H, W = clip.shape[2:]
        pad_h, pad_w = max(0, h - H), max(0, w - W)
        if pad_h or pad_w:
            clip = F.pad(clip, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), mode='replicate')
            H, W = clip.shape[2:]
        top, left = _randint(rng, H - h + 1), _randint(rng, W - w + 1)
        return clip[:, :, top:top + h, left:left + w]


class ColorJitter:
    """Brightness, contrast, saturation and hue, all four, in a random order, with torchvision's semantics.

    brightness/contrast/saturation b give a factor ~ U(max(0, 1 - b), 1 + b) (or U(lo, hi) for [lo, hi]);
    hue h in [0, 0.5] gives a hue shift ~ U(-h, h). Results stay in [0, 1].
    """

    def __init__(self, brightness=0, contrast=0, saturation=0, hue=0):
        self.factors = {}
        for name, value in (('brightness', brightness), ('contrast', contrast), ('saturation', saturation)):
            lo, hi = _range(value, f'jitter_param.{name}', around=1.0)
            self.factors[name] = (max(0.0, lo), hi)
        self.hue = _range(hue, 'jitter_param.hue')
        if not -0.5 <= self.hue[0] <= self.hue[1] <= 0.5:
            raise ValueError(f"jitter_param.hue must lie in [0, 0.5] (or [lo, hi] within [-0.5, 0.5]), got {hue}")

    def __call__(self, clip, rng):
        """clip (T, 3, H, W) in [0, 1] -> (T, 3, H, W) in [0, 1]."""
        adjust = {'brightness': TF.adjust_brightness, 'contrast': TF.adjust_contrast,
                  'saturation': TF.adjust_saturation, 'hue': TF.adjust_hue}
        ranges = {**self.factors, 'hue': self.hue}
        names = list(adjust)
        for i in rng.permutation(len(names)):
            name = names[i]
            factor = rng.uniform(*ranges[name])
            if factor != (0.0 if name == 'hue' else 1.0):
                clip = adjust[name](clip, float(factor))  # (T, 3, H, W)
        return clip


_TRANSFORMS = {'flip_param': RandomFlip, 'rotation_param': RandomRotation, 'resize_param': RandomResize,
               'crop_param': RandomCrop, 'jitter_param': ColorJitter}


class AllAugmentationTransform:
    """The configured augmentations in the reference's order: flip, rotation, resize, crop, colour jitter.

    Call it on the frames of one item, (T, H, W, 3) float32 in [0, 1] (an array or a list of frames); it
    returns a new (T, H', W', 3) float32 array in [0, 1] (H', W' differ only under resize or crop).
    """

    def __init__(self, flip_param=None, rotation_param=None, resize_param=None, crop_param=None,
                 jitter_param=None):
        given = {'flip_param': flip_param, 'rotation_param': rotation_param, 'resize_param': resize_param,
                 'crop_param': crop_param, 'jitter_param': jitter_param}
        self.transforms = []
        for key, params in given.items():
            if params is None:
                continue
            transform = _TRANSFORMS[key]
            try:
                self.transforms.append(transform(**params))
            except TypeError as error:  # an unknown or missing key in the config
                raise ValueError(f"augmentation_params.{key}: {error} (expected keys: "
                                 f"{list(inspect.signature(transform).parameters)})") from error

    def __call__(self, frames, rng=None):
        """frames (T, H, W, 3) -> (T, H', W', 3); rng a numpy Generator/RandomState, default the global one."""
        rng = np.random if rng is None else rng
        clip = torch.from_numpy(np.ascontiguousarray(np.asarray(frames, dtype=np.float32)))  # (T, H, W, 3)
        clip = clip.permute(0, 3, 1, 2)  # (T, 3, H, W)
        for transform in self.transforms:
            clip = transform(clip, rng)
        return clip.clamp(0, 1).permute(0, 2, 3, 1).contiguous().numpy()  # (T, H', W', 3)
