"""``vpr-seq inspect``: what a map holds, as text and JSON, on maps built in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_run

from vpr_seq_ros.cli import main
from vpr_seq_ros.refmap import ReferenceMap, load_map, make_manifest, save_map
from vpr_seq_ros.types import EncodedRun


def _inspect(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(['inspect', *args]) == 0
    return capsys.readouterr().out


def test_inspect_an_image_map_given_without_its_suffix(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    # 7 frames at x = 0, 2, .. 12 m in two segments (3 + 4 frames)
    folder = write_run(tmp_path / 'run', np.arange(0.0, 14.0, 2.0), seed=0,
                       segments=np.array([0, 0, 0, 1, 1, 1, 1]))
    assert main(['build-map', str(folder), '-o', str(tmp_path / 'mymap'), '--seq-len', '3',
                 '--no-progress']) == 0
    capsys.readouterr()
    text = _inspect(capsys, str(tmp_path / 'mymap'))
    size = (tmp_path / 'mymap.npz').stat().st_size
    assert f'map:          {tmp_path / "mymap.npz"} (' in text
    assert 'format vpr_seq_ros.map version 1' in text
    assert 'frames:       7 descriptors of 2048 float32' in text  # 64 x 32 patchnorm
    assert 'encoder:      patchnorm (width=64, height=32, patch_size=8, normalize=l2)' in text
    assert 'sequence:     L = 3' in text
    assert 'segments:     2 (frames: 3, 4)' in text
    # path within segments only: 2 x 2 m + 3 x 2 m
    assert 'poses:        x 0.0 .. 12.0 m, y 0.0 .. 0.0 m, z 0.0 .. 0.0 m; path 10.0 m' in text
    assert 'stamps:       0.6 s, from 1.000 to 1.600 s' in text
    assert f'built from:   {folder}' in text
    assert '  sequence: length=3 window=trailing' in text
    assert 'left out:     none' in text
    data = json.loads(_inspect(capsys, str(tmp_path / 'mymap.npz'), '--json'))
    assert data['file_size_bytes'] == size and data['num_frames'] == 7
    assert data['descriptor_dim'] == 2048 and data['dtype'] == 'float32'
    assert data['segments'] == {'count': 2, 'lengths': [3, 4]}
    assert data['poses']['extent_m']['x'] == [0.0, 12.0]
    assert data['poses']['path_length_m'] == pytest.approx(10.0)
    assert data['config']['sequence']['length'] == 3 and data['sequence_length'] == 3
    assert data['encoder'] == load_map(tmp_path / 'mymap.npz').manifest.encoder
    assert data['sequence_descriptors'] is None and data['geo_origin'] is None


def test_inspect_a_seqgem_float16_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    np.save(tmp_path / 'ref.npy', np.random.default_rng(0).normal(size=(12, 8)).astype(
        np.float32))
    assert main(['build-map', str(tmp_path / 'ref.npy'), '-o', str(tmp_path / 'm.npz'),
                 '--encoder', 'npy', '--method', 'seqgem', '--seq-len', '4', '--map-dtype',
                 'float16', '--no-progress']) == 0
    capsys.readouterr()
    data = json.loads(_inspect(capsys, str(tmp_path / 'm'), '--json'))
    assert data['dtype'] == 'float16' and data['descriptor_dim'] == 8
    assert data['sequence_descriptors'] == {'shape': [12, 8], 'length': 4, 'p': 3.0,
                                            'window': 'trailing', 'method': 'seqgem'}
    assert data['poses'] is None and data['weights_sha256'] == {}
    text = _inspect(capsys, str(tmp_path / 'm.npz'))
    assert 'sequence descriptors: 12 x 8 (method=seqgem, length=4, p=3, window=trailing)' \
        in text
    assert 'poses:        none' in text and 'frames:       12 descriptors of 8 float16' in text


def test_inspect_shows_checksums_origin_and_frames_left_out(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    n = 5
    run = EncodedRun(np.ones((n, 4), np.float32), np.arange(n, dtype=np.int64) * 10**9,
                     np.column_stack([np.arange(n, dtype=float), np.zeros((n, 3))]),
                     np.zeros(n, np.int64))
    encoder = {'name': 'seqmatchnet', 'base': {'name': 'jist-r18', 'weights_sha256': 'ab12'},
               'transform': {'name': 'seqmatchnet', 'weights_sha256': 'cd34', 'dim': 4}}
    manifest = make_manifest(encoder, 2, 'bag.mcap', 'float32', n, 4,
                             geo_origin=[48.137, 11.575, 520.0],
                             dropped_frames={'no_pose_yet': 1, 'keyframe_gating': 30},
                             config={'source': {'pose_topic': '/gps/fix',
                                                'keyframe_distance_m': 2.0}},
                             software_version='9.9')
    path = save_map(ReferenceMap(run, manifest), tmp_path / 'gps')
    text = _inspect(capsys, str(path))
    assert 'weights:      base.weights_sha256 ab12' in text
    assert 'weights:      transform.weights_sha256 cd34' in text
    assert 'geo origin:   lat 48.1370000, lon 11.5750000, alt 520.0 m' in text
    assert ('left out:     1 frame without a pose yet (before the first pose on /gps/fix), '
            '30 frames skipped by keyframe gating (one frame per 2 m)') in text
    assert 'software_version: 9.9' in text
    data = json.loads(_inspect(capsys, str(path), '--json'))
    assert data['weights_sha256'] == {'base.weights_sha256': 'ab12',
                                      'transform.weights_sha256': 'cd34'}
    assert data['dropped_frames'] == {'no_pose_yet': 1, 'keyframe_gating': 30}
    assert data['other'] == {'software_version': '9.9'}


def test_inspect_a_missing_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['inspect', str(tmp_path / 'nothing')]) == 2
    err = capsys.readouterr().err
    assert f'map file {tmp_path / "nothing"} does not exist' in err
    (tmp_path / 'plain').write_bytes(b'not a map')
    assert main(['inspect', str(tmp_path / 'plain')]) == 2
    assert 'corrupt or not a map' in capsys.readouterr().err
