"""Frame sources: image folders with and without frames.csv, .npy descriptor files."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_run

from vpr_seq_ros.config import SourceConfig
from vpr_seq_ros.errors import SourceError
from vpr_seq_ros.sources import open_source


def test_image_folder_with_table(tmp_path):
    folder = write_run(tmp_path / 'run', np.arange(5.0), seed=0,
                       segments=np.array([0, 0, 1, 1, 1]))
    source = open_source(folder)
    frames = list(source)
    assert len(source) == 5 and source.has_poses
    assert [f.index for f in frames] == list(range(5))
    assert [f.name for f in frames] == sorted(f.name for f in frames)
    assert frames[1].stamp_ns == 1_100_000_000
    assert frames[3].pose.x == 3.0 and frames[3].segment == 1
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8


def test_image_folder_synthesises_stamps_from_rate(tmp_path):
    folder = write_run(tmp_path / 'run', np.arange(3.0), seed=0, with_table=False)
    (folder / 'notes.txt').write_text('ignored')
    frames = list(open_source(folder, SourceConfig(rate_hz=4.0)))
    assert [f.stamp_ns for f in frames] == [0, 250_000_000, 500_000_000]
    assert frames[0].pose is None


def test_bad_folders(tmp_path):
    with pytest.raises(SourceError, match='does not exist'):
        open_source(tmp_path / 'missing')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(SourceError, match='no images'):
        open_source(tmp_path / 'empty')
    folder = write_run(tmp_path / 'run', np.arange(3.0), seed=0, with_table=False)
    (folder / 'img_0001.png').write_bytes(b'not a png')
    with pytest.raises(SourceError, match='img_0001.png'):
        list(open_source(folder))


def test_bad_tables(tmp_path):
    folder = write_run(tmp_path / 'run', np.arange(3.0), seed=0, with_table=False)
    (folder / 'frames.csv').write_text('name,stamp_ns\nimg_0000.png,5\n')
    with pytest.raises(SourceError, match='no row'):
        open_source(folder)
    (folder / 'frames.csv').write_text('name,speed\nimg_0000.png,5\n')
    with pytest.raises(SourceError, match='columns'):
        open_source(folder)
    rows = ''.join(f'img_{i:04d}.png,{s}\n' for i, s in enumerate([5, 4, 6]))
    (folder / 'frames.csv').write_text('name,stamp_ns\n' + rows)
    with pytest.raises(SourceError, match='increase'):
        open_source(folder)


def test_npy_source(tmp_path):
    data = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    np.save(tmp_path / 'd.npy', data)
    frames = list(open_source(tmp_path / 'd.npy'))
    assert len(frames) == 6
    np.testing.assert_array_equal(frames[2].descriptor, data[2])
    (tmp_path / 'd.frames.csv').write_text(
        'name,stamp_ns,x,y\n' + ''.join(f'{i},{10 + i},{i},0\n' for i in range(6)))
    frames = list(open_source(tmp_path / 'd.npy'))
    assert frames[5].stamp_ns == 15 and frames[5].pose.x == 5.0


@pytest.mark.parametrize('array, message', [
    (np.zeros((3,), np.float32), 'shape'),
    (np.zeros((0, 4), np.float32), 'shape'),
    (np.zeros((3, 4), np.int32), 'floats'),
])
def test_npy_bad_arrays(tmp_path, array, message):
    np.save(tmp_path / 'd.npy', array)
    with pytest.raises(SourceError, match=message):
        open_source(tmp_path / 'd.npy')


def test_npy_nan_rows(tmp_path):
    data = np.zeros((4, 3), np.float32)
    data[2, 1] = np.nan
    np.save(tmp_path / 'd.npy', data)
    with pytest.raises(SourceError, match='row 2'):
        list(open_source(tmp_path / 'd.npy'))
    (tmp_path / 'x.npy').write_bytes(b'garbage')
    with pytest.raises(SourceError, match='cannot read'):
        open_source(tmp_path / 'x.npy')


def test_image_folder_counts_files_it_cannot_read_but_not_notes(tmp_path):
    folder = write_run(tmp_path / 'run', np.arange(3.0), seed=0)
    source = open_source(folder)
    assert source.dropped() == {} and source.dropped_line() == 'none'
    (folder / 'notes.txt').write_text('not a frame')
    (folder / 'extra.GIF').write_bytes(b'GIF89a')
    (folder / 'phone.heic').write_bytes(b'....')
    source = open_source(folder)
    assert len(source) == 3
    assert source.dropped() == {'unsupported_format': 2}
    assert source.dropped_line() == '2 files of an unsupported image format (.gif, .heic)'
    only_gifs = tmp_path / 'gifs'
    only_gifs.mkdir()
    (only_gifs / 'a.gif').write_bytes(b'GIF89a')
    with pytest.raises(SourceError, match='holds no images.*1 .gif file'):
        open_source(only_gifs)


def test_npy_source_drops_nothing(tmp_path):
    np.save(tmp_path / 'd.npy', np.ones((4, 3), np.float32))
    assert open_source(tmp_path / 'd.npy').dropped() == {}


def test_format_dropped_reads_as_a_sentence():
    from vpr_seq_ros.sources.base import DropReason, format_dropped, ordered_counts

    counts = {'duplicate_stamp': 3, DropReason.NO_POSE_YET: 1, 'keyframe_gating': 0,
              'node_busy': 2}
    assert ordered_counts(counts) == {'no_pose_yet': 1, 'duplicate_stamp': 3, 'node_busy': 2}
    assert format_dropped(counts, '/gps/fix') == (
        '1 frame without a pose yet (before the first pose on /gps/fix), '
        '3 duplicate stamps (the same stamp as an earlier frame), 2 node busy')
    assert format_dropped({'keyframe_gating': 1}) == \
        '1 frame skipped by keyframe gating (one frame per keyframe distance)'
    assert format_dropped({}) == 'none'
