"""tools/make_puppets.py: determinism, layout, keypoints (shapes, range, on the figure), re-rendering, the CLI."""
import csv
import importlib.util
import json
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from frames_dataset import FramesDataset, PairedDataset
from media import read_video

# Loaded by path (tools/ is not a package); registered so that the worker pool can pickle its jobs.
_spec = importlib.util.spec_from_file_location('make_puppets', Path(__file__).parents[1] / 'tools' / 'make_puppets.py')
mp = sys.modules.setdefault('make_puppets', importlib.util.module_from_spec(_spec))
if not hasattr(mp, 'generate'):
    _spec.loader.exec_module(mp)

SMALL = dict(size=64, num_train=6, num_test=4, frames=6, clips_per_identity=2, num_pairs=2, workers=1)


@pytest.fixture(scope='module')
def puppets(tmp_path_factory):
    """A small set, made once for the module."""
    out = tmp_path_factory.mktemp('puppets') / 'set'
    mp.generate(out, seed=0, **SMALL)
    return out


def tree(out):
    """Every file of a set, relative path -> bytes (the preview and README aside)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob('*')) if p.is_file()}


def test_layout(puppets):
    train, test = (sorted(p.name for p in (puppets / split).iterdir()) for split in ('train', 'test'))
    assert train == ['p0_0000#00', 'p0_0000#01', 'p0_0001#00', 'p0_0001#01', 'p0_0002#00', 'p0_0002#01']
    assert test == ['p0_0003#00', 'p0_0003#01', 'p0_0004#00', 'p0_0004#01']  # identities after the training ones
    for split, names in (('train', train), ('test', test)):
        for name in names:
            frames = sorted((puppets / split / name).iterdir())
            assert [f.name for f in frames] == [f"{t:04d}.png" for t in range(6)]
            assert iio.imread(frames[0]).shape == (64, 64, 3)
            assert (puppets / 'poses' / split / f"{name}.npz").is_file()
    settings = json.loads((puppets / 'puppets.json').read_text())
    assert settings['seed'] == 0 and settings['videos']['test'] == test and settings['joints'] == list(mp.JOINTS)
    readme = (puppets / 'README.md').read_text()
    assert 'seed 0' in readme and 'x = 2*col/(W-1) - 1' in readme
    with open(puppets / 'test_pairs.csv', newline='') as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2
    for row in rows:
        assert row['source'].split('#')[0] != row['driving'].split('#')[0] and row['driving'] in test
        assert len(list((puppets / row['ground_truth']).glob('*.png'))) == 6


def test_keypoint_shapes_and_range(puppets):
    files = sorted((puppets / 'keypoints').rglob('*.npy'))
    assert len(files) == 6 + 4 + 2
    for file in files:
        keypoints = np.load(file)
        assert keypoints.shape == (6, len(mp.JOINTS), 2) == (6, 14, 2) and keypoints.dtype == np.float32
        assert np.abs(keypoints).max() <= 1


def test_deterministic_and_seeds_disjoint(puppets, tmp_path):
    mp.generate(tmp_path / 'again', seed=0, **{**SMALL, 'workers': 2})  # the worker count changes nothing
    assert tree(tmp_path / 'again') == tree(puppets)
    mp.generate(tmp_path / 'other', seed=1, **SMALL)
    other = sorted(p.name for p in (tmp_path / 'other' / 'train').iterdir())
    assert not {name.split('#')[0] for name in other} & {p.name.split('#')[0] for p in (puppets / 'train').iterdir()}
    first = iio.imread(tmp_path / 'other' / 'train' / other[0] / '0000.png')
    assert np.abs(first.astype(int) - iio.imread(puppets / 'train' / 'p0_0000#00' / '0000.png')).mean() > 5


def test_keypoints_lie_on_the_figure():
    for index in range(6):
        identity = mp.make_identity(3, index)
        poses = mp.clip_poses(3, index, 0, 8, camera_prob=0.5)
        frames, coverage, pixels = mp.render(identity, poses, 64)
        background, _, _ = mp.render(identity, poses, 64, draw_figure=False)
        cols, rows = np.round(pixels).astype(int).transpose(2, 0, 1)  # (T, J) each
        t = np.arange(8)[:, None]
        assert (coverage[t, rows, cols] > 0.99).all()
        assert (np.abs(frames[t, rows, cols] - background[t, rows, cols]).max(-1) > 1 / 255).all()
        # The saved convention: pixel centre 0 at -1 and S-1 at +1.
        np.testing.assert_allclose(mp.render_clip(identity, poses, 64)[1], 2 * pixels / 63 - 1, atol=1e-6)


def test_figure_is_large_with_wide_limbs():
    heights = []
    for index in range(20):
        identity = mp.make_identity(0, index)
        assert min(identity.widths.values()) * 64 >= 4  # limbs at least 4 pixels across at 64x64
        _, coverage, _ = mp.render(identity, mp.clip_poses(0, index, 0, 4), 64)
        rows = np.nonzero((coverage > 0.5).any(2))  # (frame, row) pairs covered by the figure
        heights += [np.ptp(rows[1][rows[0] == t]) + 1 for t in range(4)]
    assert np.mean(heights) > 0.7 * 64


def test_parts_rotate_visibly_and_camera_moves_the_background():
    identity = mp.make_identity(0, 0)
    assert {pattern for pattern, _, _ in identity.patterns} <= set(mp.PATTERNS)
    still = mp.clip_poses(0, 0, 0, 6, camera_prob=0.0)
    moving = mp.clip_poses(0, 0, 0, 6, camera_prob=1.0)
    assert not np.any(still.camera) and np.abs(moving.camera).max() > 0
    background = mp.render(identity, still, 64, draw_figure=False)[0]
    assert np.abs(background - background[:1]).max() == 0
    background = mp.render(identity, moving, 64, draw_figure=False)[0]
    assert np.abs(background[-1] - background[0]).mean() > 0.005


def test_any_identity_in_any_clip_matches_the_written_files(puppets):
    np.testing.assert_array_equal(  # re-rendering a training clip from its identity and its saved poses
        mp.render_clip(mp.load_identity(puppets, 'p0_0001#01'), mp.load_poses(puppets, 'train', 'p0_0001#01'), 64)[0],
        np.round(read_video(puppets / 'train' / 'p0_0001#01') * 255).astype(np.uint8))
    with open(puppets / 'test_pairs.csv', newline='') as file:
        row = next(csv.DictReader(file))
    frames, keypoints = mp.render_clip(mp.load_identity(puppets, row['source']),
                                       mp.load_poses(puppets, 'test', row['driving']), 64)
    np.testing.assert_array_equal(frames, np.round(read_video(puppets / row['ground_truth']) * 255).astype(np.uint8))
    name = row['ground_truth'].split('/')[-1]
    np.testing.assert_array_equal(keypoints, np.load(puppets / 'keypoints' / 'transfer' / f"{name}.npy"))
    driving_keypoints = np.load(puppets / 'keypoints' / 'test' / f"{row['driving']}.npy")
    assert np.abs(keypoints - driving_keypoints).max() > 0.02  # another figure in the same motion
    with pytest.raises(ValueError, match='seed 0'):
        mp.load_identity(puppets, 'p1_0000#00')


def test_frames_dataset_reads_the_set(puppets):
    train = FramesDataset(puppets, frame_shape=[64, 64, 3], id_sampling=True)
    assert train.videos == ['p0_0000', 'p0_0001', 'p0_0002']
    assert train[0]['source'].shape == (3, 64, 64)
    test = FramesDataset(puppets, frame_shape=[64, 64, 3], is_train=False, pairs_list=puppets / 'test_pairs.csv')
    pairs = PairedDataset(test, number_of_pairs=10)
    assert len(pairs) == 2 and pairs[0]['driving_video'].shape == (3, 6, 64, 64)


def test_cli_preview_timing_and_overwrite(tmp_path, capsys):
    argv = ['--out', str(tmp_path / 'cli'), '--size', '32', '--train', '2', '--test', '2', '--frames', '3',
            '--clips', '1', '--pairs', '1', '--workers', '1', '--preview']
    assert mp.main(argv) == 0
    printed = capsys.readouterr().out
    assert 'wrote 5 videos' in printed and ' s' in printed and 'preview.png' in printed
    preview = iio.imread(tmp_path / 'cli' / 'preview.png')
    assert preview.shape == (4 * 128, 8 * 128, 3)  # rows: 2 train, 1 test, 1 transfer; 8 frames enlarged 4x
    assert '32x32' in (tmp_path / 'cli' / 'README.md').read_text()
    assert mp.main(argv) == 1 and '--overwrite' in one_error_line(capsys)
    assert mp.main(argv + ['--overwrite', '--seed', '4']) == 0
    assert sorted(p.name for p in (tmp_path / 'cli' / 'train').iterdir()) == ['p4_0000#00', 'p4_0001#00']
    (tmp_path / 'foreign' / 'train').mkdir(parents=True)
    capsys.readouterr()
    assert mp.main(['--out', str(tmp_path / 'foreign'), '--overwrite']) == 1
    assert 'no puppets.json' in one_error_line(capsys)
    assert (tmp_path / 'foreign' / 'train').is_dir()


def one_error_line(capsys):
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    return lines[0]


@pytest.mark.parametrize('args,expected', [
    (['--size', '13'], '--size 13: expected a frame side of 32 to 4096 pixels'),
    (['--size', '20000'], '--size 20000: expected a frame side of 32 to 4096 pixels'),
    (['--frames', '1'], '--frames 1: expected at least 2 frames per video (a training pair takes two)'),
    (['--clips', '0'], '--clips 0: expected at least 1 clip per identity'),
    (['--train', '-1'], '--train -1: expected a count >= 0'),
    (['--seed', '-1'], '--seed -1: expected a seed >= 0'),
    (['--camera-prob', '1.5'], '--camera-prob 1.5: expected a fraction from 0 to 1'),
    (['--workers', '0'], '--workers 0: expected at least 1 process'),
])
def test_bad_settings_are_one_error_line_and_write_nothing(tmp_path, capsys, args, expected):
    out = tmp_path / 'set'
    assert mp.main(['--out', str(out), '--train', '1', '--test', '1', '--frames', '2', *args]) == 1
    assert one_error_line(capsys) == f'error: {expected}'
    assert not out.exists()


def test_an_out_that_is_a_file_is_one_error_line(tmp_path, capsys):
    out = tmp_path / 'set'
    out.write_text('mine')
    assert mp.main(['--out', str(out), '--train', '1', '--test', '1', '--frames', '2']) == 1
    assert one_error_line(capsys) == f'error: --out {out}: a file; expected a folder (made when missing)'
    assert out.read_text() == 'mine'

