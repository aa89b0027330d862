"""The vpr-seq CLI end to end on tiny generated runs: build-map, evaluate, describe, errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from vpr_seq_ros.cli import main
from vpr_seq_ros.refmap import load_map


def test_build_map_and_evaluate_images(two_runs, tmp_path, capsys):
    ref, query = two_runs
    out = tmp_path / 'map.npz'
    assert main(['build-map', str(ref), '-o', str(out), '--seq-len', '5', '--no-progress']) == 0
    refmap = load_map(out)
    assert len(refmap) == 40 and refmap.run.poses is not None
    assert refmap.manifest.encoder['name'] == 'patchnorm'
    assert refmap.manifest.sequence_length == 5
    report, plot, preds = tmp_path / 'r.json', tmp_path / 'p.png', tmp_path / 'p.csv'
    code = main(['evaluate', '--map', str(out), str(query), '--radius-m', '1.5', '--report',
                 str(report), '--plot', str(plot), '--save-predictions', str(preds),
                 '--no-progress'])
    assert code == 0
    data = json.loads(report.read_text())
    assert set(data['recall_at']) == {'1', '5', '10', '20'}
    assert data['method'] == 'seqmatch' and data['seq_len'] == 5
    assert data['num_queries'] == 30 and data['num_queries_without_window'] == 4
    assert data['recall_at']['1'] >= 0.9
    assert plot.stat().st_size > 0
    rows = list(csv.reader(open(preds)))
    assert len(rows) == 1 + 26 and len(rows[0]) == 1 + 2 * 20
    printed = capsys.readouterr().out
    assert 'R@1' in printed


def test_methods_and_windows_on_npy(tmp_path, capsys):
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 16)).astype(np.float32)
    query = ref[:40] + 1.6 * rng.normal(size=(40, 16)).astype(np.float32)
    np.save(tmp_path / 'ref.npy', ref)
    np.save(tmp_path / 'q.npy', query)
    out = tmp_path / 'm.npz'
    assert main(['build-map', str(tmp_path / 'ref.npy'), '-o', str(out), '--encoder', 'npy',
                 '--no-progress']) == 0
    recalls = {}
    for args in (['--method', 'single'], ['--method', 'seqmatch', '--seq-len', '5'],
                 ['--method', 'seqmatch', '--window', 'centred'],
                 ['--method', 'seqgem', '--seq-len', '3'],
                 ['--method', 'seqmatch', '--slopes', '0.8', '1', '1.25']):
        report = tmp_path / 'r.json'
        assert main(['evaluate', '--map', str(out), str(tmp_path / 'q.npy'), '--gt',
                     'same-index', '--report', str(report), '--overwrite', '--no-progress',
                     *args]) == 0
        recalls[' '.join(args)] = json.loads(report.read_text())['recall_at']['1']
    assert recalls['--method seqmatch --seq-len 5'] > recalls['--method single']
    assert recalls["--method seqmatch --window centred"] > recalls["--method single"]


def test_preset_applies(tmp_path, two_runs):
    ref, query = two_runs
    out = tmp_path / 'm.npz'
    assert main(['build-map', str(ref), '-o', str(out), '--preset', 'seqslam',
                 '--no-progress']) == 0
    assert load_map(out).manifest.config['matching']['distance'] == 'sad'


def test_errors_leave_no_map(tmp_path, two_runs, capsys):
    ref, _ = two_runs
    out = tmp_path / 'm.npz'
    assert main(['build-map', str(ref), '-o', str(out), '--seq-len', '41',
                 '--no-progress']) == 2
    assert 'longer than' in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob('.m.npz*'))
    assert main(['build-map', str(tmp_path / 'nowhere'), '-o', str(out)]) == 2
    assert 'does not exist' in capsys.readouterr().err
    np.save(tmp_path / 'd.npy', np.zeros((5, 3), np.float32))
    assert main(['build-map', str(tmp_path / 'd.npy'), '-o', str(out), '--encoder',
                 'patchnorm']) == 2
    assert '--encoder npy' in capsys.readouterr().err
    assert main(['build-map', str(ref), '-o', str(out), '--preset', 'missing']) == 2
    assert 'unknown preset' in capsys.readouterr().err
    assert not out.exists()


def test_evaluate_refuses_mismatched_encoder(tmp_path, two_runs, capsys):
    ref, query = two_runs
    out = tmp_path / 'm.npz'
    assert main(['build-map', str(ref), '-o', str(out), '--no-progress']) == 0
    (tmp_path / 'c.yaml').write_text('encoder: {patchnorm: {width: 32, height: 16}}\n')
    assert main(['evaluate', '--map', str(out), str(query), '--config',
                 str(tmp_path / 'c.yaml'), '--no-progress']) == 2
    err = capsys.readouterr().err
    assert 'width: map has 64, query has 32' in err and 'height' in err


def test_describe_npy(tmp_path):
    rng = np.random.default_rng(1)
    np.save(tmp_path / 'd.npy', rng.normal(size=(9, 4)).astype(np.float32))
    out = tmp_path / 'desc.npz'
    assert main(['describe', str(tmp_path / 'd.npy'), '--encoder', 'npy', '--method', 'seqgem',
                 '--seq-len', '3', '-o', str(out), '--no-progress']) == 0
    with np.load(out) as data:
        assert data['frame_descriptors'].shape == (9, 4)
        assert data['sequence_descriptors'].shape == (7, 4)
        np.testing.assert_array_equal(data['sequence_first_frame'], np.arange(7))


def test_help_is_available_for_every_command():
    for command in ('build-map', 'evaluate', 'describe', 'export-onnx', 'demo', 'replay',
                    'images-to-bag', 'train'):
        done = subprocess.run([sys.executable, '-m', 'vpr_seq_ros.cli', command, '--help'],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert 'usage: vpr-seq ' + command in done.stdout


def test_core_does_not_import_ros_or_torch():
    code = ('import sys, vpr_seq_ros.pipeline, vpr_seq_ros.cli; '
            'bad = [m for m in ("rclpy", "torch", "cv_bridge") if m in sys.modules]; '
            'print(bad); sys.exit(1 if bad else 0)')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize('argv', [['evaluate', '--map', 'x.npz'], ['build-map']])
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
