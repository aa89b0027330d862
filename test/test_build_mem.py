"""Map writing in bounded memory: the index streamed from a file into the map, and SeqGeM
sequence descriptors made straight in the map's dtype, give the same maps as before."""

from __future__ import annotations

import errno
import zipfile

import numpy as np
import pytest

from vpr_seq_ros.config import INDEX_KINDS, IndexConfig, load_config
from vpr_seq_ros.errors import MapError
from vpr_seq_ros.matching.ann import AnnIndex
from vpr_seq_ros.matching.seqgem import sequence_descriptors
from vpr_seq_ros.pipeline import build_map
from vpr_seq_ros.refmap import ReferenceMap, load_map, make_manifest, save_map
from vpr_seq_ros.types import EncodedRun


def route(n: int = 600, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(size=(n, dim)), axis=0).astype(np.float32)
    return walk / np.linalg.norm(walk, axis=1, keepdims=True)


def seeded_map(refs: np.ndarray, dtype: str = 'float16') -> ReferenceMap:
    n, dim = refs.shape
    run = EncodedRun(refs.astype(dtype), np.arange(n, dtype=np.int64) * 10, None,
                     np.repeat([0, 1], [n // 2, n - n // 2]), ())
    seq = np.abs(refs[::-1]).astype(dtype)
    return ReferenceMap(run, make_manifest({'name': 'npy'}, 4, 'src', dtype, n, dim),
                        sequence_descriptors=seq)


def members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


@pytest.mark.parametrize('kind', INDEX_KINDS)
def test_streamed_index_gives_the_same_map_as_the_in_memory_one(tmp_path, kind):
    refs = route()
    index = AnnIndex.build(refs, IndexConfig(kind=kind, nlist=8, nprobe=8, pq_m=8))
    original = seeded_map(refs)
    in_memory = save_map(ReferenceMap(original.run, original.manifest,
                                      original.sequence_descriptors, None, index.to_bytes(),
                                      index.rows), tmp_path / 'memory.npz')
    index.write(str(tmp_path / 'index.bin'))
    streamed = save_map(ReferenceMap(original.run, original.manifest,
                                     original.sequence_descriptors, None, None, index.rows),
                        tmp_path / 'streamed.npz', tmp_path / 'index.bin')
    # every member byte for byte, in the same order: loaders cannot tell them apart
    assert list(members(in_memory)) == list(members(streamed))
    assert members(in_memory) == members(streamed)
    # the same bytes np.savez writes for the same arrays (the format maps always had)
    arrays = {k[:-4]: np.load(in_memory)[k[:-4]] for k in members(in_memory)}
    np.savez(tmp_path / 'savez.npz', **arrays)
    assert members(tmp_path / 'savez.npz') == members(streamed)
    loaded = load_map(streamed)
    assert isinstance(loaded.index, np.memmap)  # memory-mapped like the descriptors
    restored = AnnIndex.from_bytes(loaded.index, index.params, loaded.index_rows)
    queries = refs[::9] + 0.01
    np.testing.assert_array_equal(restored.search(queries, 5)[0], index.search(queries, 5)[0])
    np.testing.assert_array_equal(loaded.sequence_descriptors, original.sequence_descriptors)


def test_a_missing_index_file_writes_no_map(tmp_path):
    original = seeded_map(route(50))
    with pytest.raises(MapError, match='index file'):
        save_map(ReferenceMap(original.run, original.manifest, None, None, None,
                              np.arange(50)), tmp_path / 'm.npz', tmp_path / 'absent.bin')
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('method', ['seqmatch', 'seqgem'])
def test_build_map_streams_its_index_and_leaves_no_temporary_file(tmp_path, method):
    refs = route(400)
    np.save(tmp_path / 'ref.npy', refs)
    cfg = load_config(overrides={'encoder.name': 'npy', 'matching.method': method,
                                 'sequence.length': 4, 'map.dtype': 'float16',
                                 'matching.index.kind': 'ivf-flat',
                                 'matching.index.nlist': 4, 'matching.index.nprobe': 4})
    out = tmp_path / 'maps' / 'm.npz'
    refmap = load_map(build_map(tmp_path / 'ref.npy', cfg, out))
    assert sorted(p.name for p in out.parent.iterdir()) == ['m.npz']
    assert refmap.run.descriptors.dtype == np.float16
    # the stored index is the one trained over the stored vectors, with the same parameters
    vectors = refmap.run.descriptors if method == 'seqmatch' else \
        refmap.sequence_descriptors
    rows = refmap.index_rows
    again = AnnIndex.build(vectors[rows], IndexConfig(kind='ivf-flat', nlist=4, nprobe=4))
    stored = AnnIndex.from_bytes(refmap.index, again.params, rows)
    queries = route(30, seed=3)
    found, dist = stored.search(queries, 3)
    expect, expect_dist = again.search(queries, 3)
    np.testing.assert_array_equal(found, rows[expect])
    np.testing.assert_allclose(dist, expect_dist, rtol=1e-5)


def test_seqgem_descriptors_in_float16_are_the_float32_ones_rounded_once():
    frames = np.abs(route(300)).astype(np.float16)
    segments = np.repeat([0, 1, 2], 100)
    wide, valid = sequence_descriptors(frames, 5, 3.0, segments)
    narrow, valid16 = sequence_descriptors(frames, 5, 3.0, segments, dtype=np.float16)
    assert wide.dtype == np.float32 and narrow.dtype == np.float16
    np.testing.assert_array_equal(valid, valid16)
    np.testing.assert_array_equal(narrow, wide.astype(np.float16))
    assert not narrow[~valid].any() and narrow[valid].all()


def test_full_disk_while_the_index_is_streamed_keeps_the_old_map(tmp_path, monkeypatch):
    np.save(tmp_path / 'ref.npy', route(200))
    cfg = load_config(overrides={'encoder.name': 'npy', 'sequence.length': 4,
                                 'matching.index.kind': 'ivf-flat',
                                 'matching.index.nlist': 4})
    out = build_map(tmp_path / 'ref.npy', cfg, tmp_path / 'maps' / 'm.npz')
    before = out.read_bytes()

    def full(*args, **kwargs):
        args[0].write(b'\x93NUMPY partial')
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(np.lib.format, 'write_array_header_1_0', full)  # the streamed member
    with pytest.raises(MapError, match='No space left on device.*previous m.npz is unchanged'):
        build_map(tmp_path / 'ref.npy', cfg, out, overwrite=True)
    monkeypatch.undo()
    assert out.read_bytes() == before
    assert [p.name for p in out.parent.iterdir()] == ['m.npz']  # no index or map temporaries
