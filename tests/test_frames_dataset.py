"""Video reading in every format, FramesDataset (splits, id sampling, items), repeat, pairs, and bad data."""
import csv
import warnings

import imageio.v3 as iio
import numpy as np
import pytest

import frames_dataset
from frames_dataset import (DatasetError, DatasetRepeater, FrameSizeError, FramesDataset, PairedDataset,
                            SkippedVideoWarning)
from media import VideoReadError, iter_video_frames, read_video, video_info


def make_frames(num_frames=5, height=32, width=48, seed=0):
    """Smooth uint8 frames (T, H, W, 3) that lossy codecs keep close: a colour gradient shifted per frame."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:height, :width] / max(height, width)
    frames = []
    for t in range(num_frames):
        colour = rng.uniform(0.2, 0.8, 3)
        frames.append(colour * 0.7 + 0.3 * np.stack([rows, cols, (rows + cols) / 2], -1) + 0.02 * t)
    return np.round(np.clip(np.stack(frames), 0, 1) * 255).astype(np.uint8)  # (T, H, W, 3)


def constant_frames(num_frames, height=16, width=16):
    """Frame t is uniformly t / (T - 1): a frame's index can be read back from its value."""
    values = np.linspace(0, 255, num_frames).round().astype(np.uint8)
    return np.broadcast_to(values[:, None, None, None], (num_frames, height, width, 3)).copy()


def write_folder(path, frames, extension='.png'):
    path.mkdir(parents=True)
    for t, frame in enumerate(frames):
        iio.imwrite(path / f"{t}{extension}", frame)  # unpadded names: natural order must still hold
    return path


def write_video(path, frames):
    if path.suffix == '.gif':
        iio.imwrite(path, frames, duration=100, loop=0)
    else:
        iio.imwrite(path, frames, fps=10, **({'codec': 'libvpx-vp9'} if path.suffix == '.webm' else {}))
    return path


# ----------------------------------------------------------------------------------------------------------
# read_video, iter_video_frames, video_info


def test_frame_folder_is_exact_and_in_natural_order(tmp_path):
    frames = constant_frames(12)
    video = read_video(write_folder(tmp_path / 'clip', frames))
    assert video.shape == (12, 16, 16, 3) and video.dtype == np.float32
    np.testing.assert_allclose(video, frames / 255.0, atol=1e-6)  # '10.png' after '9.png', not after '1.png'


@pytest.mark.parametrize('suffix', ['.mp4', '.gif', '.mov', '.avi', '.webm', '.mkv'])
def test_video_files(tmp_path, suffix):
    frames = make_frames()
    video = read_video(write_video(tmp_path / f"clip{suffix}", frames))
    assert video.shape == (5, 32, 48, 3) and video.dtype == np.float32
    assert 0 <= video.min() and video.max() <= 1
    # Lossy codecs and the GIF palette change pixels a little, not the picture.
    assert np.abs(video - frames / 255.0).mean() < 0.05
    info = video_info(tmp_path / f"clip{suffix}")
    assert (info.num_frames, info.height, info.width) == (5, 32, 48)
    assert info.fps == pytest.approx(10.0)


def test_jpg_folder_and_resize_to_frame_shape(tmp_path):
    video = read_video(write_folder(tmp_path / 'clip', make_frames(3, 37, 23), '.jpg'), frame_shape=[16, 20, 3])
    assert video.shape == (3, 16, 20, 3) and video.dtype == np.float32
    assert 0 <= video.min() and video.max() <= 1


@pytest.mark.parametrize('mode', ['gray', 'gray16', 'rgba', 'gray_alpha'])
def test_grayscale_and_alpha_become_rgb(tmp_path, mode):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (2, 9, 13), dtype=np.uint8)  # odd sizes on purpose
    images = {'gray': gray, 'gray16': gray.astype(np.uint16) * 257,
              'rgba': np.concatenate([np.repeat(gray[..., None], 3, -1), np.full((2, 9, 13, 1), 7, np.uint8)], -1),
              'gray_alpha': np.stack([gray, np.full_like(gray, 7)], -1)}
    video = read_video(write_folder(tmp_path / 'clip', images[mode]))
    assert video.shape == (2, 9, 13, 3) and video.dtype == np.float32
    np.testing.assert_allclose(video, np.repeat(gray[..., None], 3, -1) / 255.0, atol=1e-6)


def test_stacked_strip(tmp_path):
    frames = make_frames(4, 16, 16)
    iio.imwrite(tmp_path / 'strip.png', np.concatenate(list(frames), axis=1))  # (16, 64, 3)
    np.testing.assert_allclose(read_video(tmp_path / 'strip.png', [16, 16, 3]), frames / 255.0, atol=1e-6)
    np.testing.assert_allclose(read_video(tmp_path / 'strip.png'), frames / 255.0, atol=1e-6)  # square frames
    assert read_video(tmp_path / 'strip.png', [32, 32, 3]).shape == (4, 32, 32, 3)  # a strip at half scale
    assert read_video(tmp_path / 'strip.png', (16, 8)).shape == (8, 16, 8, 3)
    assert video_info(tmp_path / 'strip.png', (16, 8)).num_frames == 8
    with pytest.raises(VideoReadError, match='strip.png.*frame_shape'):
        read_video(tmp_path / 'strip.png', [16, 24, 3])


def test_single_image_reads_as_one_frame(realworld_dir):
    video = read_video(realworld_dir / 'source.png', [64, 64, 3])
    assert video.shape == (1, 64, 64, 3) and video.dtype == np.float32


def test_streaming_matches_whole_read(tmp_path):
    frames = make_frames(6)
    for path in (write_folder(tmp_path / 'clip', frames), write_video(tmp_path / 'clip.mp4', frames)):
        stream = iter_video_frames(path, frame_shape=[16, 16])
        first = next(stream)  # nothing else decoded yet, and the stream can be abandoned
        assert first.shape == (16, 16, 3) and first.dtype == np.float32
        rest = list(stream)
        np.testing.assert_allclose(np.stack([first] + rest), read_video(path, [16, 16]))


def test_real_video_streams_with_its_metadata(realworld_dir):
    info = video_info(realworld_dir / 'driving.mp4')
    assert info[:4] == (133, 10.0, 384, 384) and info.duration == pytest.approx(13.3) and not info.audio
    stream = iter_video_frames(realworld_dir / 'driving.mp4', frame_shape=[64, 64, 3])
    head = [next(stream) for _ in range(3)]
    stream.close()
    video = read_video(realworld_dir / 'driving.mp4', [64, 64, 3])
    assert video.shape == (133, 64, 64, 3) and video.dtype == np.float32
    np.testing.assert_allclose(np.stack(head), video[:3])
    assert 0 <= video.min() and video.max() <= 1 and video.std() > 0.05


def test_mixed_frame_sizes_need_frame_shape(tmp_path):
    folder = write_folder(tmp_path / 'clip', make_frames(2, 16, 16))
    iio.imwrite(folder / '2.png', make_frames(1, 20, 16)[0])
    with pytest.raises(VideoReadError, match=r'clip.*frame 2.*frame_shape'):
        read_video(folder)
    assert read_video(folder, [16, 16]).shape == (3, 16, 16, 3)


def test_read_errors_name_the_path(tmp_path):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'bad.mp4').write_bytes(b'not a video' * 50)
    (tmp_path / 'bad.png').write_bytes(b'not an image' * 50)
    (tmp_path / 'clip.txt').write_text('hello')
    for name, message in [('missing.mp4', 'does not exist'), ('empty', 'no frames'), ('bad.mp4', 'cannot decode'),
                          ('bad.png', 'cannot read image'), ('clip.txt', 'unsupported video format')]:
        with pytest.raises(VideoReadError, match=message) as error:
            read_video(tmp_path / name)
        assert str(tmp_path / name) in str(error.value)
        assert '=== stderr ===' not in str(error.value)  # ffmpeg's log is cut to its last line
    with pytest.raises(VideoReadError, match='empty'):
        video_info(tmp_path / 'empty')
    with pytest.raises(ValueError, match='frame_shape'):
        read_video(tmp_path / 'empty', frame_shape=[64, 64, 4])


# ----------------------------------------------------------------------------------------------------------
# FramesDataset


def make_dataset(root, names, num_frames=4, size=16):
    """Frame folders (or files, by their extension) under root, each of constant frames."""
    for i, name in enumerate(names):
        frames = constant_frames(num_frames, size, size)
        path = root / name
        if path.suffix in ('.mp4', '.gif'):
            root.mkdir(parents=True, exist_ok=True)
            write_video(path, frames)
        elif path.suffix == '.png':
            root.mkdir(parents=True, exist_ok=True)
            iio.imwrite(path, np.concatenate(list(frames), axis=1))
        else:
            write_folder(path, frames)
    return root


def test_train_and_test_folders(tmp_path):
    make_dataset(tmp_path / 'train', ['a', 'b', 'c'])
    make_dataset(tmp_path / 'test', ['d', 'e'], num_frames=6)
    train = FramesDataset(tmp_path, frame_shape=[16, 16, 3])
    test = FramesDataset(tmp_path, frame_shape=[16, 16, 3], is_train=False)
    assert (len(train), len(test)) == (3, 2)
    item = train[1]
    assert set(item) == {'source', 'driving', 'name', 'id'} and (item['name'], item['id']) == ('b', 'b')
    for key in ('source', 'driving'):
        assert item[key].shape == (3, 16, 16) and item[key].dtype == np.float32
    item = test[0]
    assert set(item) == {'video', 'name', 'id'} and item['name'] == 'd'
    assert item['video'].shape == (3, 6, 16, 16) and item['video'].dtype == np.float32
    np.testing.assert_allclose(item['video'][0, :, 0, 0], np.linspace(0, 1, 6), atol=1 / 255)


def test_frames_resized_to_frame_shape(tmp_path):
    make_dataset(tmp_path / 'train', ['a'], size=24)
    make_dataset(tmp_path / 'test', ['b'], size=24)
    assert FramesDataset(tmp_path, frame_shape=(8, 8, 3))[0]['source'].shape == (3, 8, 8)
    assert FramesDataset(tmp_path, frame_shape=(8, 8, 3), is_train=False)[0]['video'].shape == (3, 4, 8, 8)
    assert FramesDataset(tmp_path, frame_shape=None)[0]['source'].shape == (3, 24, 24)


def test_training_pairs_are_sorted_and_only_two_frames_decoded(tmp_path, monkeypatch):
    make_dataset(tmp_path / 'train', ['a'], num_frames=10)
    (tmp_path / 'test').mkdir()
    dataset = FramesDataset(tmp_path, frame_shape=[16, 16, 3])
    calls = []
    read_image = frames_dataset.read_image
    monkeypatch.setattr(frames_dataset, 'read_image', lambda *args, **kw: calls.append(args) or read_image(*args, **kw))
    np.random.seed(0)
    differ = 0
    for _ in range(40):
        item = dataset[0]
        source, driving = item['source'][0, 0, 0], item['driving'][0, 0, 0]
        assert source <= driving  # the earlier frame is the source
        differ += source != driving
    assert len(calls) == 80 and differ > 20


def test_seeded_split_without_train_folder(tmp_path):
    names = [f"v{i}" for i in range(10)]
    make_dataset(tmp_path, names)
    train = FramesDataset(tmp_path, frame_shape=[16, 16, 3], random_seed=3)
    test = FramesDataset(tmp_path, frame_shape=[16, 16, 3], is_train=False, random_seed=3)
    assert (len(train), len(test)) == (8, 2)
    assert sorted(train.videos + test.videos) == names
    assert FramesDataset(tmp_path, frame_shape=None, is_train=False, random_seed=3).videos == test.videos
    other_splits = {tuple(FramesDataset(tmp_path, is_train=False, random_seed=s).videos) for s in range(6)}
    assert len(other_splits) > 1


def test_split_by_identity_keeps_identities_apart(tmp_path):
    names = [f"id{i}#{clip}" for i in range(5) for clip in range(3)]
    make_dataset(tmp_path, names)
    train = FramesDataset(tmp_path, id_sampling=True, random_seed=1)
    test = FramesDataset(tmp_path, id_sampling=True, is_train=False, random_seed=1)
    test_ids = {name.split('#')[0] for name in test.videos}
    assert len(train) == 4 and len(test) == 3 and len(test_ids) == 1
    assert not test_ids & set(train.videos)


@pytest.mark.slow
def test_id_sampling_on_folders_and_files(tmp_path):
    names = ['alice#0', 'alice#1.mp4', 'alice#2.gif', 'bob#0.png', 'bob#1', 'carol.mp4']
    make_dataset(tmp_path / 'train', names)
    make_dataset(tmp_path / 'test', ['dave#0'])
    dataset = FramesDataset(tmp_path, frame_shape=[16, 16, 3], id_sampling=True)
    assert dataset.videos == ['alice', 'bob', 'carol'] and len(dataset) == 3
    np.random.seed(0)
    seen = {}
    for _ in range(30):
        for index, identity in enumerate(dataset.videos):
            item = dataset[index]
            assert item['id'] == identity and item['source'].shape == (3, 16, 16)
            seen.setdefault(identity, set()).add(item['name'])
    assert seen == {'alice': {'alice#0', 'alice#1.mp4', 'alice#2.gif'}, 'bob': {'bob#0.png', 'bob#1'},
                    'carol': {'carol.mp4'}}
    test = FramesDataset(tmp_path, frame_shape=[16, 16, 3], id_sampling=True, is_train=False)
    assert test.videos == ['dave#0'] and test[0]['id'] == 'dave'  # test sets list videos, not identities


def test_augmentation_applies_to_both_frames(tmp_path):
    make_dataset(tmp_path / 'train', ['a'], size=24)
    dataset = FramesDataset(tmp_path, frame_shape=[24, 24, 3], augmentation_params={
        'flip_param': {'horizontal_flip': True, 'time_flip': True}, 'crop_param': {'size': [16, 12]},
        'jitter_param': {'brightness': 0.1, 'contrast': 0.1, 'saturation': 0.1, 'hue': 0.1}})
    item = dataset[0]
    assert item['source'].shape == item['driving'].shape == (3, 16, 12)
    assert item['source'].dtype == np.float32 and 0 <= item['source'].min() and item['driving'].max() <= 1


# ----------------------------------------------------------------------------------------------------------
# Bad data


def test_missing_or_empty_root_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / 'nowhere')):
        FramesDataset(tmp_path / 'nowhere')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match=f"no video in {tmp_path / 'empty'}"):
        FramesDataset(tmp_path / 'empty')
    (tmp_path / 'notes').mkdir()
    (tmp_path / 'notes' / 'readme.txt').write_text('no videos here')
    with pytest.raises(FileNotFoundError, match=r"no video in .*notes.*readme.txt"):
        FramesDataset(tmp_path / 'notes')
    make_dataset(tmp_path / 'only_train' / 'train', ['a'])
    with pytest.raises(FileNotFoundError, match='no test/ folder'):
        FramesDataset(tmp_path / 'only_train', is_train=False)


def test_short_and_empty_training_videos_skipped_with_one_warning(tmp_path):
    make_dataset(tmp_path / 'train', ['good1', 'good2'])
    make_dataset(tmp_path / 'train', ['one'], num_frames=1)
    (tmp_path / 'train' / 'nothing').mkdir()
    (tmp_path / 'train' / 'zero.mp4').write_bytes(b'')
    (tmp_path / 'test').mkdir()
    with pytest.warns(SkippedVideoWarning) as record:
        dataset = FramesDataset(tmp_path, frame_shape=[16, 16, 3])
    assert len(record) == 1
    message = str(record[0].message)
    assert 'skipping 3 of 5' in message and all(n in message for n in ('one (1 frame)', 'nothing', 'zero.mp4'))
    assert dataset.videos == ['good1', 'good2'] and dataset.num_skipped == 3


@pytest.mark.slow
def test_corrupt_training_video_skipped_and_replaced(tmp_path):
    make_dataset(tmp_path / 'train', ['a#0', 'b#0.mp4'])
    (tmp_path / 'train' / 'a#1.mp4').write_bytes(b'corrupt' * 100)
    (tmp_path / 'train' / 'c#0.gif').write_bytes(b'corrupt' * 100)
    make_dataset(tmp_path / 'train', ['d#0.mp4'], num_frames=1)
    (tmp_path / 'test').mkdir()
    for id_sampling in (False, True):
        dataset = FramesDataset(tmp_path, frame_shape=[16, 16, 3], id_sampling=id_sampling)
        np.random.seed(0)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter('always')
            items = [dataset[i] for _ in range(10) for i in range(len(dataset))]
        assert {item['name'] for item in items} <= {'a#0', 'b#0.mp4'}
        assert all(item['source'].shape == (3, 16, 16) for item in items)
        # imageio's ffmpeg reader leaves pipes to the garbage collector: ResourceWarnings are not ours to count
        messages = [str(w.message) for w in record if w.category is SkippedVideoWarning]
        assert len(messages) == 3 == dataset.num_skipped  # one warning per bad video, counted
        for name in ('a#1.mp4', 'c#0.gif', 'd#0.mp4'):
            assert sum(name in message for message in messages) == 1
        assert '(3 video(s) skipped so far)' in messages[-1]


def test_all_training_videos_corrupt_is_an_error(tmp_path):
    (tmp_path / 'train').mkdir()
    (tmp_path / 'test').mkdir()
    (tmp_path / 'train' / 'x.mp4').write_bytes(b'corrupt' * 100)
    with pytest.warns(SkippedVideoWarning, match='x.mp4'), pytest.raises(VideoReadError, match='none of the 1 training'):
        FramesDataset(tmp_path)  # when the dataset is made, not later in a loader worker


def test_corrupt_test_video_raises_naming_it(tmp_path):
    make_dataset(tmp_path / 'train', ['a'])
    make_dataset(tmp_path / 'test', ['b'])
    (tmp_path / 'test' / 'c.mp4').write_bytes(b'corrupt' * 100)
    dataset = FramesDataset(tmp_path, is_train=False)
    assert dataset[0]['name'] == 'b'
    with pytest.raises(VideoReadError, match='c.mp4'):
        dataset[1]


# ----------------------------------------------------------------------------------------------------------
# DatasetRepeater, PairedDataset


def test_repeater(tmp_path):
    make_dataset(tmp_path / 'train', ['a', 'b', 'c'])
    (tmp_path / 'test').mkdir()
    repeated = DatasetRepeater(FramesDataset(tmp_path, frame_shape=[16, 16, 3]), num_repeats=4)
    assert len(repeated) == 12
    assert [repeated[i]['name'] for i in (0, 4, 8, 11)] == ['a', 'b', 'c', 'c']


def test_random_pairs_are_seeded_and_leave_the_global_rng_alone(tmp_path):
    make_dataset(tmp_path / 'train', ['x'])
    make_dataset(tmp_path / 'test', [f"v{i}" for i in range(6)], num_frames=2)
    test = FramesDataset(tmp_path, frame_shape=[16, 16, 3], is_train=False)
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    pairs = PairedDataset(test, number_of_pairs=4, seed=5)
    assert np.random.rand() == expected_next
    assert len(pairs) == 4 and len(set(pairs.pairs)) == 4
    assert all(0 <= i < 4 and 0 <= j < 4 for i, j in pairs.pairs)  # among the first number_of_pairs videos
    assert PairedDataset(test, 4, seed=5).pairs == pairs.pairs
    assert len(PairedDataset(test, 100).pairs) == 36  # at most every (driving, source) pair of the 6 videos
    item = pairs[0]
    assert set(item) == {f"{role}_{key}" for role in ('driving', 'source') for key in ('video', 'name', 'id')}
    driving, source = pairs.pairs[0]
    assert (item['driving_name'], item['source_name']) == (test.videos[driving], test.videos[source])
    assert item['source_video'].shape == (3, 2, 16, 16)


def test_pairs_from_csv(tmp_path):
    make_dataset(tmp_path / 'train', ['x'])
    make_dataset(tmp_path / 'test', ['a', 'b', 'c.mp4'], num_frames=2)
    pairs_csv = tmp_path / 'pairs.csv'
    with open(pairs_csv, 'w', newline='') as file:
        csv.writer(file).writerows([['source', 'driving', 'note'], ['a', 'b', ''], ['b', 'c', 'no extension'],
                                    ['missing', 'a', ''], ['c.mp4', 'a', '']])
    test = FramesDataset(tmp_path, frame_shape=[16, 16, 3], is_train=False, pairs_list=pairs_csv)
    with pytest.warns(UserWarning, match=r"1 of 4 pairs .*missing"):
        pairs = PairedDataset(test, number_of_pairs=10)
    assert pairs.pairs == [(1, 0), (2, 1), (0, 2)]  # (driving, source) indices, in the file's order
    assert (pairs[1]['source_name'], pairs[1]['driving_name']) == ('b', 'c.mp4')
    with pytest.warns(UserWarning):
        assert len(PairedDataset(test, number_of_pairs=2)) == 2
    bad_csv = tmp_path / 'bad.csv'
    bad_csv.write_text('from,to\na,b\n')
    with pytest.raises(ValueError, match=r"bad.csv needs 'source' and 'driving' columns; found \['from', 'to'\]"):
        PairedDataset(FramesDataset(tmp_path, is_train=False, pairs_list=bad_csv), 5)


# ----------------------------------------------------------------------------------------------------------
# frame_shape null: stored sizes, one size per dataset


@pytest.mark.parametrize('is_train', [True, False])
def test_frame_shape_null_uses_stored_sizes_and_names_a_video_of_another(tmp_path, is_train):
    split = 'train' if is_train else 'test'
    make_dataset(tmp_path / split, ['a', 'b'], size=16)
    make_dataset(tmp_path / split, ['c.mp4'], size=32)
    (tmp_path / ('test' if is_train else 'train')).mkdir()
    dataset = FramesDataset(tmp_path, frame_shape=None, is_train=is_train)
    assert dataset.frame_size == (16, 16)
    key = 'source' if is_train else 'video'
    assert dataset[0][key].shape[-2:] == (16, 16)
    with pytest.raises(FrameSizeError) as error:
        dataset[2]
    message = str(error.value)
    assert str(tmp_path / split / 'c.mp4') in message and '32x32' in message and '16x16' in message
    assert str(tmp_path / split / 'a') in message and 'frame_shape' in message


@pytest.mark.parametrize('rows,words', [('source,driving\nnope,also_nope\n', 'no pair'),
                                        ('source\nb\n', "needs 'source' and 'driving' columns"),
                                        ('source,driving\nb\n', 'no pair')])
def test_a_pairs_list_that_names_no_video_or_lacks_a_column_is_a_dataset_error(tmp_path, rows, words):
    make_dataset(tmp_path / 'train', ['a'])
    make_dataset(tmp_path / 'test', ['b', 'c'])
    (tmp_path / 'pairs.csv').write_text(rows)
    dataset = FramesDataset(tmp_path, frame_shape=[16, 16, 3], is_train=False, pairs_list=tmp_path / 'pairs.csv')
    with warnings.catch_warnings(), pytest.raises(DatasetError, match=words) as error:
        warnings.simplefilter('ignore')  # the rows left out are also warned about
        PairedDataset(dataset, number_of_pairs=5)
    assert str(tmp_path / 'pairs.csv') in str(error.value)
