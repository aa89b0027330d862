"""Reference maps: round trip, atomic writes, version and encoder mismatches."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from vpr_seq_ros.errors import MapError
from vpr_seq_ros.refmap import ReferenceMap, load_map, make_manifest, save_map
from vpr_seq_ros.types import EncodedRun


def small_map(dtype: str = 'float32', poses: bool = True) -> ReferenceMap:
    rng = np.random.default_rng(0)
    n = 12
    run = EncodedRun(rng.normal(size=(n, 8)).astype(np.float32),
                     np.arange(n, dtype=np.int64) * 10, rng.normal(size=(n, 4)) if poses else None,
                     np.repeat([0, 1], [5, 7]), tuple(f'f{i}' for i in range(n)))
    manifest = make_manifest({'name': 'patchnorm', 'width': 64}, 5, 'src', dtype, n, 8)
    return ReferenceMap(run, manifest)


@pytest.mark.parametrize('dtype', ['float32', 'float16'])
def test_round_trip(tmp_path, dtype):
    original = small_map(dtype)
    path = save_map(original, tmp_path / 'm')
    assert path.name == 'm.npz'
    loaded = load_map(path)
    tol = 1e-3 if dtype == 'float16' else 0
    np.testing.assert_allclose(loaded.run.descriptors, original.run.descriptors, atol=tol)
    np.testing.assert_array_equal(loaded.run.stamps_ns, original.run.stamps_ns)
    np.testing.assert_array_equal(loaded.run.segments, original.run.segments)
    np.testing.assert_array_equal(loaded.run.poses, original.run.poses)
    assert loaded.run.names == original.run.names
    assert loaded.manifest.encoder == {'name': 'patchnorm', 'width': 64}
    assert loaded.manifest.format_version == 1


def test_map_without_poses(tmp_path):
    loaded = load_map(save_map(small_map(poses=False), tmp_path / 'm.npz'))
    assert loaded.run.poses is None


def test_failed_write_leaves_nothing(tmp_path):
    refmap = small_map()
    bad = ReferenceMap(refmap.run, dataclasses.replace(refmap.manifest,
                                                      extra={'bad': object()}))
    with pytest.raises(TypeError):
        save_map(bad, tmp_path / 'm.npz')
    assert list(tmp_path.iterdir()) == []


def test_overwrite_is_atomic(tmp_path):
    path = save_map(small_map(), tmp_path / 'm.npz')
    save_map(small_map('float16'), path)
    assert load_map(path).manifest.dtype == 'float16'
    assert [p.name for p in tmp_path.iterdir()] == ['m.npz']


def test_load_errors(tmp_path):
    with pytest.raises(MapError, match='does not exist'):
        load_map(tmp_path / 'none.npz')
    (tmp_path / 'bad.npz').write_bytes(b'PK\x03\x04 truncated')
    with pytest.raises(MapError, match='corrupt'):
        load_map(tmp_path / 'bad.npz')
    refmap = small_map()
    manifest = {**refmap.manifest.to_dict(), 'format_version': 99}
    path = tmp_path / 'v99.npz'
    np.savez(path, manifest=np.frombuffer(json.dumps(manifest).encode(), np.uint8),
             descriptors=refmap.run.descriptors)
    with pytest.raises(MapError, match='format version 99'):
        load_map(path)
    np.savez(tmp_path / 'other.npz', x=np.zeros(3))
    with pytest.raises(MapError, match='manifest'):
        load_map(tmp_path / 'other.npz')


def test_check_query_names_differences():
    refmap = small_map()
    refmap.check_query({'name': 'patchnorm', 'width': 64})
    with pytest.raises(MapError, match='width: map has 64, query has 32'):
        refmap.check_query({'name': 'patchnorm', 'width': 32})
    with pytest.raises(MapError, match='name: map has patchnorm, query has jist-r18') as err:
        refmap.check_query({'name': 'jist-r18', 'width': 64})
    assert 'width' not in str(err.value)  # only the differing fields
    # a key one side lacks and a None on the other are the same setting, not a difference
    refmap.check_query({'name': 'patchnorm', 'width': 64, 'weights_sha256': None})
    with pytest.raises(MapError, match=r'weights_sha256: map has none, query has ab12\. Use'):
        refmap.check_query({'name': 'patchnorm', 'width': 64, 'weights_sha256': 'ab12'})


def test_descriptors_are_memory_mapped_not_read(tmp_path):
    original = small_map('float16')
    path = save_map(original, tmp_path / 'm')
    lazy = load_map(path)
    desc = lazy.run.descriptors
    assert desc.dtype == np.float16 and isinstance(desc, np.memmap) and desc.mode == 'r'
    np.testing.assert_array_equal(desc, original.run.descriptors.astype(np.float16))
    with pytest.raises(ValueError):  # read-only: the map file is never written through it
        desc[0, 0] = 1
    assert load_map(path, keep_float16=False).run.descriptors.dtype == np.float32
    f32 = save_map(small_map('float32'), tmp_path / 'f32')
    assert isinstance(load_map(f32).run.descriptors, np.memmap)


def test_compressed_and_truncated_files(tmp_path):
    original = small_map()
    path = save_map(original, tmp_path / 'm')
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    np.savez_compressed(tmp_path / 'c.npz', **arrays)  # e.g. recompressed by a user
    np.testing.assert_array_equal(load_map(tmp_path / 'c.npz').run.descriptors,
                                  original.run.descriptors)
    raw = path.read_bytes()
    (tmp_path / 't.npz').write_bytes(raw[:len(raw) // 2])
    with pytest.raises(MapError, match='corrupt or not a map'):
        load_map(tmp_path / 't.npz')
    (tmp_path / 'x.npz').write_bytes(b'not a zip at all')
    with pytest.raises(MapError, match='corrupt or not a map'):
        load_map(tmp_path / 'x.npz')


def test_manifest_round_trip_keeps_every_entry(tmp_path):
    refmap = small_map()
    manifest = dataclasses.replace(refmap.manifest, geo_origin=(48.1, 11.5, 520.0),
                                   config={'sequence': {'length': 5}},
                                   extra={'sequence_descriptors': {'length': 5, 'p': 3.0}})
    loaded = load_map(save_map(ReferenceMap(refmap.run, manifest), tmp_path / 'm')).manifest
    assert loaded == manifest
    assert loaded.get('sequence_descriptors') == {'length': 5, 'p': 3.0}
    assert loaded.get('missing', 7) == 7
    broken = {**manifest.to_dict()}
    del broken['sequence_length']
    path = tmp_path / 'broken.npz'
    np.savez(path, manifest=np.frombuffer(json.dumps(broken).encode(), np.uint8),
             descriptors=refmap.run.descriptors, stamps_ns=refmap.run.stamps_ns,
             segments=refmap.run.segments)
    with pytest.raises(MapError, match='malformed manifest'):
        load_map(path)
