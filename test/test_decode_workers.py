"""Decoding in worker processes: the same frames and descriptors, bit for bit, as in-process
decoding (image folders and bags, fork and spawn), the worker's error at its frame, frames
dropped by a bag counted the same, bounded read-ahead, and no process left behind."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator

import cv2
import numpy as np
import pytest
from PIL import Image

from vpr_seq_ros.config import EncoderConfig, SourceConfig, config_from_dict
from vpr_seq_ros.encoders import build_encoder
from vpr_seq_ros.errors import ConfigError, SourceError
from vpr_seq_ros.pipeline import encode_run
from vpr_seq_ros.sources import open_source, parallel
from vpr_seq_ros.sources.bag import BagSource
from vpr_seq_ros.sources.base import DecodeFunction, DecodeJob, DecodeOutcome, DecodingSource
from vpr_seq_ros.sources.parallel import read_frames, resolve_decode_workers
from vpr_seq_ros.types import Frame

from conftest import write_run
from test_bags import (COMPRESSED, ODOM, SEC, T0, compressed_msg, frame_rgb, image_records,
                       pose_msg, ts_for, write_bag)

METHODS = ['fork', 'spawn']


def frames_equal(a: list[Frame], b: list[Frame]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert (x.index, x.stamp_ns, x.pose, x.segment, x.name) == \
            (y.index, y.stamp_ns, y.pose, y.segment, y.name)
        assert x.image.dtype == y.image.dtype == np.uint8
        np.testing.assert_array_equal(x.image, y.image)


def assert_no_workers_left(pids: Iterable[int]) -> None:
    assert multiprocessing.active_children() == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def worker_pids() -> set[int]:
    return {p.pid for p in multiprocessing.active_children() if p.pid is not None}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A 21-frame run with poses, stamps and two segments."""
    return write_run(tmp_path / 'run', np.arange(21.0), seed=3,
                     segments=np.repeat([0, 1], [11, 10]))


@pytest.mark.parametrize('method', METHODS)
def test_image_folder_frames_identical_in_workers(folder: Path, method: str) -> None:
    source = open_source(folder)
    inline = list(source)
    frames_equal(list(read_frames(source, workers=2, depth=4, start_method=method)), inline)
    assert_no_workers_left([])


def test_encode_run_in_workers_matches_in_process(folder: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, 'DEFAULT_START_METHOD', 'fork')
    encoder = build_encoder(EncoderConfig(name='patchnorm'))
    ref = encode_run(open_source(folder), encoder, batch_size=4, decode_workers=0)
    done: list[int] = []
    run = encode_run(open_source(folder), encoder, batch_size=4, progress=done.append,
                     decode_workers=3)
    np.testing.assert_array_equal(run.descriptors, ref.descriptors)
    np.testing.assert_array_equal(run.stamps_ns, ref.stamps_ns)
    np.testing.assert_array_equal(run.poses, ref.poses)
    np.testing.assert_array_equal(run.segments, ref.segments)
    assert run.names == ref.names and sum(done) == 21 and done[:5] == [4] * 5


def bag_with_late_and_early_drops(tmp_path: Path, kind: str) -> Path:
    """12 PNG frames with odometry: frame 3 fails only when decoded, frame 6 is empty (found
    when opened), frame 8 repeats a stamp, frame 0 comes before the first pose."""
    ts = ts_for(kind)
    stamps = [T0 + i * SEC // 10 for i in range(12)]
    stamps[8] = stamps[7]
    payloads = [cv2.imencode('.png', frame_rgb(i, 12, 16)[:, :, ::-1])[1].tobytes()
                for i in range(12)]
    payloads[3] = b'\x89PNG but not really'
    payloads[6] = b''
    records = [('/cam/compressed', COMPRESSED, s, compressed_msg(ts, s, p))
               for s, p in zip(stamps, payloads)]
    records += [('/odom', ODOM, s, pose_msg(ts, ODOM, s, 0.1 * i, 0.0))
                for i, s in enumerate(range(T0 + SEC // 20, T0 + 2 * SEC, SEC // 10))]
    return write_bag(tmp_path / 'bag', kind, records)


@pytest.mark.parametrize('method', METHODS)
def test_bag_frames_and_drops_identical_in_workers(tmp_path: Path, method: str) -> None:
    path = bag_with_late_and_early_drops(tmp_path, 'mcap')
    inline_source = BagSource(path, '/cam/compressed', '/odom')
    inline = list(inline_source)
    assert [f.name for f in inline] == [f'/cam/compressed#{i}' for i in (1, 2, 4, 5, 7, 9, 10,
                                                                          11)]
    assert inline_source.dropped() == {'no_pose_yet': 1, 'duplicate_stamp': 1, 'malformed': 2}
    source = BagSource(path, '/cam/compressed', '/odom')
    assert len(source) == 9  # frame 3 is not known to be bad yet
    frames_equal(list(read_frames(source, workers=2, depth=2, start_method=method)), inline)
    assert source.dropped() == inline_source.dropped() and len(source) == 8
    np.testing.assert_array_equal(inline[2].image, frame_rgb(4, 12, 16))


def test_raw_image_bag_identical_in_workers(tmp_path: Path) -> None:
    ts = ts_for('ros1')
    path = write_bag(tmp_path / 'bag', 'ros1',
                     image_records(ts, [T0 + i * SEC // 10 for i in range(9)]))
    inline = list(BagSource(path, '/cam'))
    frames_equal(list(read_frames(BagSource(path, '/cam'), 2, 3, 'fork')), inline)
    np.testing.assert_array_equal(inline[7].image, frame_rgb(7))


@pytest.mark.parametrize('method', METHODS)
def test_worker_error_is_raised_at_its_frame_and_workers_stop(folder: Path,
                                                              method: str) -> None:
    bad = sorted(folder.glob('*.png'))[5]
    bad.write_bytes(b'not a png at all')
    with pytest.raises(SourceError, match='cannot read image') as inline_error:
        list(open_source(folder))
    seen: list[str] = []
    pids: set[int] = set()
    with pytest.raises(SourceError, match='cannot read image') as caught:
        for frame in read_frames(open_source(folder), 2, 3, method):
            pids |= worker_pids()
            seen.append(frame.name)
    assert str(caught.value) == str(inline_error.value) and bad.name in str(caught.value)
    assert seen == [p.name for p in sorted(folder.glob('*.png'))[:5]]
    assert any(bad.name in note and 'worker process' in note for note in caught.value.__notes__)
    assert 'Traceback' in str(caught.value.__cause__)  # the worker's own traceback
    assert pids
    assert_no_workers_left(pids)


def test_keyboard_interrupt_stops_the_workers(folder: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, 'DEFAULT_START_METHOD', 'fork')
    pids: set[int] = set()

    def interrupt(count: int) -> None:
        pids.update(worker_pids())
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        encode_run(open_source(folder), build_encoder(EncoderConfig(name='patchnorm')),
                   batch_size=4, progress=interrupt, decode_workers=2)
    assert pids
    assert_no_workers_left(pids)


# --- a source of test payloads: counts reads; payloads can crash or raise ------------------------

class Awkward(Exception):
    """An exception that pickles but cannot be unpickled (two required arguments)."""

    def __init__(self, what: str, code: int) -> None:
        super().__init__(f'{what} ({code})')


def decode_number(payload: tuple[int, str]) -> np.ndarray:
    """A 2x2 image of the payload's number; ``'exit'`` kills the worker, ``'awkward'`` raises
    an exception that cannot come back as itself."""
    number, action = payload
    if action == 'exit':
        os._exit(7)
    if action == 'awkward':
        raise Awkward('odd', number)
    return np.full((2, 2, 3), number, np.uint8)


class Numbers(DecodingSource):
    """``n`` frames whose images are their numbers; ``actions`` maps a frame to an action."""

    def __init__(self, n: int, actions: dict[int, str] | None = None) -> None:
        self.n, self.actions, self.path, self.read = n, actions or {}, 'numbers', 0

    def __len__(self) -> int:
        return self.n

    @property
    def decode_function(self) -> DecodeFunction:
        return decode_number

    def decode_jobs(self) -> Iterator[DecodeJob]:
        for i in range(self.n):
            self.read += 1
            yield DecodeJob(Frame(index=i, stamp_ns=i, name=f'n{i}'),
                            (i, self.actions.get(i, '')))

    def assemble(self, outcomes: Iterable[DecodeOutcome]) -> Iterator[Frame]:
        for outcome in outcomes:
            if outcome.error is not None:
                raise outcome.error
            yield Frame(outcome.frame.index, outcome.frame.stamp_ns, image=outcome.image,
                        name=outcome.frame.name)


def test_images_come_back_in_order_through_shared_memory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    read = parallel._Slots.read
    slotted: list[int] = []
    monkeypatch.setattr(parallel._Slots, 'read',
                        lambda self, slot, found: slotted.append(slot) or read(self, slot, found))
    frames = list(read_frames(Numbers(40), 3, 2, 'fork'))
    assert [int(f.image[0, 0, 0]) for f in frames] == list(range(40))
    # the first window (2 + 2 * 3 frames) comes by pipe, before an image size is known
    assert len(slotted) == 40 - 8


def test_without_shared_memory_images_come_through_the_pipe(
        folder: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
        ) -> None:
    def full(size: int) -> None:
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(parallel, '_allocate', full)
    source = open_source(folder)
    frames_equal(list(read_frames(source, 1, 2, 'fork')), list(source))
    assert sum('no shared memory' in r.getMessage() for r in caplog.records) == 1


def test_a_worker_that_dies_names_the_frame() -> None:
    pids: set[int] = set()
    with pytest.raises(SourceError, match='worker process stopped.*frame n9 of numbers.*'
                       'decode_workers to 0'):
        for _ in read_frames(Numbers(30, {9: 'exit'}), 2, 2, 'fork'):
            pids |= worker_pids()
    assert_no_workers_left(pids)


def test_an_exception_that_cannot_travel_keeps_its_type_and_text() -> None:
    with pytest.raises(Awkward, match='odd'):  # in-process: the exception itself
        list(Numbers(5, {3: 'awkward'}))
    with pytest.raises(SourceError, match=r'Awkward: odd \(3\)') as caught:
        list(read_frames(Numbers(5, {3: 'awkward'}), 1, 2, 'fork'))
    assert any('frame n3' in note for note in caught.value.__notes__)


def test_read_ahead_is_bounded_and_stops_with_the_consumer() -> None:
    source = Numbers(1000)
    frames = read_frames(source, 2, 4, 'fork')
    assert next(frames).index == 0
    threading.Event().wait(0.3)  # let the reader and the workers run ahead
    # depth + 2 * workers * chunk (1 here) submitted, one of them consumed; depth queued; one
    # held by the reader
    assert source.read <= (4 + 2 * 2) + 4 + 1
    pids = worker_pids()
    frames.close()
    assert source.read < 1000 and pids
    assert_no_workers_left(pids)
    assert not any(t.name == 'frame-reader' and t.is_alive() for t in threading.enumerate())


# --- the setting ---------------------------------------------------------------------------

@pytest.mark.parametrize('cores, expected', [(1, 0), (2, 0), (3, 2), (5, 4), (16, 4)])
def test_auto_leaves_a_core_to_the_encoder_and_needs_two(
        monkeypatch: pytest.MonkeyPatch, cores: int, expected: int) -> None:
    monkeypatch.setattr(parallel, 'usable_cores', lambda: cores)
    assert resolve_decode_workers('auto') == expected
    assert resolve_decode_workers('3') == 3 and resolve_decode_workers(0) == 0


def test_the_setting_is_checked() -> None:
    assert SourceConfig().decode_workers == 'auto'
    assert config_from_dict({'source': {'decode_workers': 2}}).source.decode_workers == '2'
    for bad in ('many', '-1', '1.5'):
        with pytest.raises(ConfigError, match='source.decode_workers'):
            config_from_dict({'source': {'decode_workers': bad}})
    with pytest.raises(ConfigError, match='auto or an integer'):
        resolve_decode_workers('two')


def test_non_decoding_sources_are_read_on_the_thread(tmp_path: Path) -> None:
    path = tmp_path / 'd.npy'
    np.save(path, np.arange(12, dtype=np.float32).reshape(6, 2))
    frames = list(read_frames(open_source(path), workers=2, depth=2))
    assert [f.descriptor[0] for f in frames] == [0, 2, 4, 6, 8, 10]
    assert multiprocessing.active_children() == []


def test_unreadable_image_has_the_same_message_either_way(tmp_path: Path) -> None:
    folder = tmp_path / 'run'
    folder.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / 'a.png')
    (folder / 'b.jpg').write_bytes(b'')
    messages: list[Any] = []
    for workers in (0, 1):
        with pytest.raises(SourceError) as caught:
            list(read_frames(open_source(folder), workers, 2, 'fork'))
        messages.append(str(caught.value))
    assert messages[0] == messages[1] and 'b.jpg' in messages[0]


def test_build_map_takes_the_setting_and_a_map_does_not_pass_it_on(
        folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vpr_seq_ros.cli import build_parser
    from vpr_seq_ros.commands.common import config_from_args
    from vpr_seq_ros.pipeline import build_map, map_config
    from vpr_seq_ros.refmap import load_map

    args = build_parser().parse_args(['build-map', str(folder), '-o', 'm.npz',
                                      '--decode-workers', '2'])
    cfg = config_from_args(args)
    assert cfg.source.decode_workers == '2'
    monkeypatch.setattr(parallel, 'DEFAULT_START_METHOD', 'fork')
    refmap = load_map(build_map(folder, cfg, tmp_path / 'm.npz'))
    assert len(refmap) == 21 and refmap.manifest.config['source']['decode_workers'] == '2'
    assert 'decode_workers' not in map_config(refmap)['source']
