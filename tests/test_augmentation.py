"""Each augmentation's effect, sameness across the frames of an item, determinism, and config errors."""
import numpy as np
import pytest

from augmentation import AllAugmentationTransform


def random_clip(num_frames=4, height=12, width=16, seed=0):
    return np.random.default_rng(seed).uniform(size=(num_frames, height, width, 3)).astype(np.float32)


def repeated_frame(num_frames=3, height=12, width=16):
    """T copies of one frame: after any augmentation the frames must still be equal."""
    return np.repeat(random_clip(1, height, width), num_frames, axis=0)


ALL = {'flip_param': {'horizontal_flip': True, 'time_flip': True}, 'rotation_param': {'degrees': 20},
       'resize_param': {'ratio': [0.8, 1.2]}, 'crop_param': {'size': [10, 14]},
       'jitter_param': {'brightness': 0.3, 'contrast': 0.3, 'saturation': 0.3, 'hue': 0.2}}


def test_horizontal_flip_flips_back_and_happens_half_the_time():
    clip = random_clip()
    transform = AllAugmentationTransform(flip_param={'horizontal_flip': True})
    flipped = 0
    for seed in range(40):
        out = transform(clip, np.random.default_rng(seed))
        if not np.array_equal(out, clip):
            np.testing.assert_array_equal(out[:, :, ::-1], clip)  # every frame flipped, all alike
            flipped += 1
    assert 10 < flipped < 30


def test_time_flip_reverses_order_and_combines_with_horizontal_flip():
    clip = random_clip()
    transform = AllAugmentationTransform(flip_param={'horizontal_flip': True, 'time_flip': True})
    outcomes = set()
    for seed in range(40):
        out = transform(clip, np.random.default_rng(seed))
        for horizontal in (False, True):
            for time in (False, True):
                expected = clip[::-1] if time else clip
                expected = expected[:, :, ::-1] if horizontal else expected
                if np.array_equal(out, expected):
                    outcomes.add((horizontal, time))
    assert outcomes == {(False, False), (False, True), (True, False), (True, True)}


def test_rotation_turns_counter_clockwise_about_the_centre():
    clip = random_clip(2, 10, 10)
    out = AllAugmentationTransform(rotation_param={'degrees': [90, 90]})(clip)
    np.testing.assert_allclose(out, np.rot90(clip, axes=(1, 2)), atol=1e-5)
    out = AllAugmentationTransform(rotation_param={'degrees': 30})(repeated_frame(), np.random.default_rng(0))
    assert out.shape == (3, 12, 16, 3)
    assert np.abs(out[0] - repeated_frame()[0]).max() > 0.1
    assert np.abs(out - out[:1]).max() == 0  # one angle for every frame


def test_resize_changes_the_size_by_one_ratio():
    out = AllAugmentationTransform(resize_param={'ratio': [0.5, 0.5]})(random_clip(2, 12, 16))
    assert out.shape == (2, 6, 8, 3)
    out = AllAugmentationTransform(resize_param={'ratio': [1.5, 1.5]})(np.full((2, 4, 4, 3), 0.25, np.float32))
    assert out.shape == (2, 6, 6, 3) and np.allclose(out, 0.25)
    out = AllAugmentationTransform(resize_param={'ratio': [0.7, 1.3]})(repeated_frame(), np.random.default_rng(1))
    assert np.abs(out - out[:1]).max() == 0


def test_crop_takes_the_same_window_of_every_frame():
    clip = random_clip(3, 12, 16)
    out = AllAugmentationTransform(crop_param={'size': [5, 7]})(clip, np.random.default_rng(3))
    assert out.shape == (3, 5, 7, 3)
    windows = [(top, left) for top in range(8) for left in range(10)
               if np.array_equal(clip[:, top:top + 5, left:left + 7], out)]
    assert len(windows) == 1


def test_crop_larger_than_the_frame_pads_with_edge_values():
    clip = random_clip(2, 4, 6)
    out = AllAugmentationTransform(crop_param={'size': [8, 6]})(clip)
    assert out.shape == (2, 8, 6, 3)
    np.testing.assert_array_equal(out[:, 2:6], clip)  # centred
    np.testing.assert_array_equal(out[:, 0], clip[:, 0])
    np.testing.assert_array_equal(out[:, 7], clip[:, -1])


def test_jitter_keeps_range_and_is_the_same_for_every_frame():
    transform = AllAugmentationTransform(jitter_param={'brightness': 0.9, 'contrast': 0.9, 'saturation': 0.9,
                                                       'hue': 0.5})
    clip = repeated_frame()
    for seed in range(5):
        out = transform(clip, np.random.default_rng(seed))
        assert out.dtype == np.float32 and out.shape == clip.shape
        assert 0 <= out.min() and out.max() <= 1
        assert np.abs(out - clip).max() > 0.01
        assert np.abs(out - out[:1]).max() == 0


@pytest.mark.parametrize('key, value, check', [
    ('brightness', [0.5, 0.5], lambda clip, out: np.allclose(out, clip * 0.5, atol=1e-6)),
    ('contrast', [0.0, 0.0], lambda clip, out: np.allclose(out, out[:, :1, :1], atol=1e-6)),  # one grey per frame
    ('saturation', [0.0, 0.0], lambda clip, out: np.allclose(out, out[..., :1], atol=1e-6)),  # grey
    ('hue', [0.5, 0.5], lambda clip, out: not np.allclose(out, clip, atol=0.05)),
])
def test_each_jitter_has_its_effect(key, value, check):
    clip = random_clip()
    out = AllAugmentationTransform(jitter_param={key: value})(clip)
    assert check(clip, out)


def test_all_four_jitters_apply_together():
    # The reference kept only the last of its colour transforms: here darkening and greying both happen.
    clip = random_clip()
    out = AllAugmentationTransform(jitter_param={'brightness': [0.5, 0.5], 'contrast': 0, 'saturation': [0, 0],
                                                 'hue': 0})(clip, np.random.default_rng(0))
    grey = clip @ np.array([0.2989, 0.587, 0.114], np.float32)  # (T, H, W) torchvision's grey
    np.testing.assert_allclose(out, np.repeat(0.5 * grey[..., None], 3, -1), atol=1e-5)


def test_deterministic_under_a_seed_with_either_rng():
    clip = random_clip(3, 16, 16)
    transform = AllAugmentationTransform(**ALL)
    first = transform(clip, np.random.default_rng(7))
    np.testing.assert_array_equal(first, transform(clip, np.random.default_rng(7)))
    assert first.shape == (3, 10, 14, 3) and first.dtype == np.float32 and 0 <= first.min() and first.max() <= 1
    np.random.seed(11)
    global_draw = transform(clip)
    np.random.seed(11)
    np.testing.assert_array_equal(global_draw, transform(list(clip)))  # the global RNG; a list of frames works
    np.testing.assert_array_equal(global_draw, transform(clip, np.random.RandomState(11)))
    assert not np.array_equal(first, transform(clip, np.random.default_rng(8)))


def test_input_left_untouched():
    clip = random_clip()
    before = clip.copy()
    AllAugmentationTransform(**ALL)(clip, np.random.default_rng(0))
    np.testing.assert_array_equal(clip, before)


@pytest.mark.parametrize('params, message', [
    ({'flip_param': {'horizontal': True}}, r"flip_param.*'horizontal'.*horizontal_flip"),
    ({'jitter_param': {'hue': 0.7}}, r"jitter_param.hue"),
    ({'jitter_param': {'brightness': -1}}, r"jitter_param.brightness"),
    ({'crop_param': {'size': [0, 4]}}, r"crop_param.size"),
    ({'resize_param': {'ratio': [1.2, 0.8]}}, r"resize_param.ratio"),
])
def test_bad_config_names_the_key(params, message):
    with pytest.raises(ValueError, match=message):
        AllAugmentationTransform(**params)
