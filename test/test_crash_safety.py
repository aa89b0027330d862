"""No map is ever lost: kill -9 during a write, a full disk, an unwritable folder, read-only maps.

* ``vpr-seq build-map`` (``python -m vpr_seq_ros.cli``) and the slam node core's ``save_map``
  run in child processes that are killed with SIGKILL at random moments, many times; the map
  file is then always the previous map or a complete new one, never a partial file.
* A full disk (``ENOSPC`` from the write, or from fsync) and an unwritable folder are a clear
  error naming the file, with the previous map intact and no temporary file left.
* In localization mode the map file is never opened for writing.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_run

from vpr_seq_ros.cli import main
from vpr_seq_ros.config import load_config
from vpr_seq_ros.errors import MapError, VprSeqError
from vpr_seq_ros.refmap import load_map
from vpr_seq_ros.runtime.core import NodeCore
from vpr_seq_ros.types import Frame
from vpr_seq_ros.writing import atomic_write

REPO = Path(__file__).resolve().parents[1]
BUILD_KILLS = 8
SAVE_KILLS = 10


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (str(REPO), env.get('PYTHONPATH')) if p)
    return env


def kill_after(cmd: list[str], delay_s: float) -> int | None:
    """Start ``cmd``, SIGKILL it after ``delay_s`` unless it ended; its exit code or None."""
    proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        return proc.wait(timeout=delay_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return None


def build_cmd(ref: Path, out: Path, seq_len: int) -> list[str]:
    return [sys.executable, '-m', 'vpr_seq_ros.cli', 'build-map', str(ref), '-o', str(out),
            '--seq-len', str(seq_len), '--overwrite', '--no-progress']


def test_kill_9_during_build_map_keeps_the_old_map_or_the_new_one(tmp_path):
    ref = write_run(tmp_path / 'ref', np.arange(60.0), seed=1)
    out = tmp_path / 'map.npz'
    started = time.monotonic()
    assert kill_after(build_cmd(ref, out, 3), 120.0) == 0
    full_s = time.monotonic() - started
    old = load_map(out)
    old_digest = digest(out)
    rng = random.Random(13)
    outcomes = {'old': 0, 'new': 0}
    for attempt in range(BUILD_KILLS):
        # half anywhere in the run, half in its last third (where the map is written)
        delay = rng.uniform(0.0, full_s * 1.2) if attempt % 2 else \
            rng.uniform(full_s * 0.66, full_s * 1.1)
        code = kill_after(build_cmd(ref, out, 4), delay)
        assert code in (None, 0)
        refmap = load_map(out)  # never a partial file
        if digest(out) == old_digest:
            outcomes['old'] += 1
        else:
            assert refmap.manifest.sequence_length == 4, refmap.manifest
            np.testing.assert_array_equal(refmap.run.descriptors, old.run.descriptors)
            outcomes['new'] += 1
            old_digest = digest(out)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith('.map.npz.')]
    print(f'build-map killed {BUILD_KILLS} times (full run {full_s:.2f} s): {outcomes}, '
          f'{len(leftovers)} temporary files of killed writers')
    assert sum(outcomes.values()) == BUILD_KILLS
    assert kill_after(build_cmd(ref, out, 3), 120.0) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.map.npz.')], \
        f'stale temporary files not removed: {leftovers}'


SAVER = '''
import sys
import numpy as np
from vpr_seq_ros.config import load_config
from vpr_seq_ros.runtime.core import NodeCore
from vpr_seq_ros.types import Frame
out, n = sys.argv[1], int(sys.argv[2])
cfg = load_config(overrides={'node.mode': 'slam', 'encoder.name': 'npy'})
core = NodeCore.from_config(cfg)
rows = np.random.default_rng(0).normal(size=(n, 256)).astype(np.float32)
for i in range(n):
    core.on_frame(Frame(index=i, stamp_ns=10**9 * (i + 1), descriptor=rows[i]))
    core.save_map(out)   # ~/save_map after every keyframe: a new, larger map each time
while n > 3:  # then keep saving the whole map, so that a kill always lands in a save
    core.save_map(out)
'''


def test_kill_9_during_slam_save_map_keeps_a_complete_map(tmp_path):
    out = tmp_path / 'slam.npz'
    n = 400
    rows = np.random.default_rng(0).normal(size=(n, 256)).astype(np.float32)
    cmd = [sys.executable, '-c', SAVER, str(out), str(n)]
    assert kill_after([sys.executable, '-c', SAVER, str(out), '3'], 60.0) == 0
    previous = len(load_map(out).run)
    assert previous == 3
    rng = random.Random(17)
    sizes = []
    torn = 0
    for _ in range(SAVE_KILLS):
        assert kill_after(cmd, rng.uniform(0.5, 1.2)) is None, 'the saver ended by itself'
        refmap = load_map(out)  # complete, whichever save it is
        k = len(refmap.run)
        np.testing.assert_array_equal(refmap.run.descriptors, rows[:k])
        assert refmap.run.stamps_ns.tolist() == [10**9 * (i + 1) for i in range(k)]
        sizes.append(k)
        torn += len([p for p in tmp_path.iterdir() if p.name.endswith('.tmp')])
    print(f'slam saves killed at {SAVE_KILLS} random moments: maps of {sorted(sizes)} '
          f'keyframes; {torn} kills left a temporary file (killed mid-write)')
    assert len(set(sizes)) > 1, sizes  # the kills landed at different saves


@pytest.fixture
def built(tmp_path: Path) -> Path:
    ref = write_run(tmp_path / 'ref', np.arange(20.0), seed=1)
    out = tmp_path / 'maps' / 'map.npz'
    assert main(['build-map', str(ref), '-o', str(out), '--no-progress']) == 0
    return out


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith('.tmp')]


@pytest.mark.parametrize('where', ['write', 'fsync'])
def test_full_disk_is_a_clear_error_and_the_old_map_stays(built, tmp_path, monkeypatch, capsys,
                                                          where):
    before = digest(built)

    def full(*args, **kwargs):
        if where == 'write':
            args[0].write(b'PK\x03\x04 partial')
        raise OSError(errno.ENOSPC, 'No space left on device')

    if where == 'write':
        monkeypatch.setattr(np.lib.format, 'write_array', full)  # what writes each member
    else:
        monkeypatch.setattr(os, 'fsync', full)
    code = main(['build-map', str(tmp_path / 'ref'), '-o', str(built), '--seq-len', '4',
                 '--overwrite', '--no-progress'])
    err = capsys.readouterr().err
    assert code != 0
    assert 'No space left on device' in err and 'previous map.npz is unchanged' in err, err
    assert 'free some disk space' in err
    monkeypatch.undo()
    assert digest(built) == before and len(load_map(built).run) == 20
    assert no_temporaries(built.parent)


def test_full_disk_during_slam_save_map(tmp_path, monkeypatch):
    cfg = load_config(overrides={'node.mode': 'slam', 'encoder.name': 'npy'})
    core = NodeCore.from_config(cfg)
    for i in range(4):
        core.on_frame(Frame(index=i, stamp_ns=10**9 * (i + 1),
                            descriptor=np.full(8, i, np.float32)))
    out = core.save_map(tmp_path / 'slam.npz')
    before = digest(out)
    core.on_frame(Frame(index=4, stamp_ns=5 * 10**9, descriptor=np.full(8, 4, np.float32)))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(np.lib.format, 'write_array', full)
    with pytest.raises(MapError, match='No space left on device.*previous slam.npz is unchanged'):
        core.save_map(out)
    monkeypatch.undo()
    assert digest(out) == before and no_temporaries(tmp_path)
    assert len(load_map(core.save_map(out)).run) == 5  # space again: the next save works


def test_unwritable_folder_is_a_clear_error(built, tmp_path, monkeypatch, capsys):
    before = digest(built)
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    assert main(['build-map', str(tmp_path / 'ref'), '-o', str(blocker / 'map.npz'),
                 '--no-progress']) != 0
    err = capsys.readouterr().err
    assert str(blocker) in err and 'cannot write' in err, err

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, 'Permission denied')

    monkeypatch.setattr(os, 'replace', denied)  # e.g. a folder made read-only meanwhile
    with pytest.raises(VprSeqError, match='Permission denied.*unchanged.*folder you may write'):
        atomic_write(built, lambda handle: handle.write(b'new'))
    monkeypatch.undo()
    assert digest(built) == before and no_temporaries(built.parent)


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_read_only_folder_for_a_user(built):
    before = digest(built)
    built.parent.chmod(0o500)
    try:
        with pytest.raises(VprSeqError, match='Permission denied.*unchanged'):
            atomic_write(built, lambda handle: handle.write(b'new'))
    finally:
        built.parent.chmod(0o700)
    assert digest(built) == before


def test_localization_never_opens_the_map_for_writing(built, monkeypatch):
    """Start-up, frames, reset and a refused save: the map is only ever opened to read."""
    opened: list[tuple[str, str]] = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file, mode='r', *args, **kwargs):
        opened.append((str(file), mode))
        return real_open(file, mode, *args, **kwargs)

    def spy_os_open(file, flags, *args, **kwargs):
        writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
        opened.append((str(file), 'w' if writing else 'r'))
        return real_os_open(file, flags, *args, **kwargs)

    before = (digest(built), built.stat().st_mtime_ns)
    monkeypatch.setattr(builtins, 'open', spy_open)
    monkeypatch.setattr(os, 'open', spy_os_open)
    cfg = load_config(overrides={'node.mode': 'localization', 'node.map_path': str(built)})
    core = NodeCore.from_config(cfg)
    rng = np.random.default_rng(0)
    for i in range(8):
        core.on_frame(Frame(index=i, stamp_ns=10**9 * (i + 1),
                            image=rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)))
    core.reset()
    with pytest.raises(MapError, match='read-only'):
        core.save_map(built)
    monkeypatch.undo()
    mine = [(f, m) for f, m in opened if Path(f).resolve() == built.resolve()]
    assert mine, 'the spy saw the map being read'
    assert all(set(m) <= {'r', 'b'} for _, m in mine), mine
    assert (digest(built), built.stat().st_mtime_ns) == before
