"""Calibrated confidence end to end: fitted on a validation run, applied to another by
evaluate, replay and the node core."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vpr_seq_ros.calibration import load_calibration
from vpr_seq_ros.cli import main
from vpr_seq_ros.config import load_config
from vpr_seq_ros.encoders.identity import IdentityEncoder
from vpr_seq_ros.errors import ConfigError
from vpr_seq_ros.refmap import load_map
from vpr_seq_ros.runtime.core import NodeCore
from vpr_seq_ros.types import Frame


@pytest.fixture
def runs(tmp_path):
    """A 200-frame map and two noisy query runs of it (validation and held out)."""
    rng = np.random.default_rng(9)
    ref = rng.normal(size=(200, 16)).astype(np.float32)
    np.save(tmp_path / 'ref.npy', ref)
    for name, seed in (('val', 1), ('test', 2)):
        noise = np.random.default_rng(seed).normal(size=ref.shape).astype(np.float32)
        np.save(tmp_path / f'{name}.npy', ref + 1.5 * noise)
    assert main(['build-map', str(tmp_path / 'ref.npy'), '-o', str(tmp_path / 'm'),
                 '--encoder', 'npy', '--method', 'single', '--no-progress']) == 0
    return tmp_path


def test_fit_on_validation_and_check_on_held_out(runs, capsys):
    cal = runs / 'cal.json'
    assert main(['evaluate', '--map', str(runs / 'm'), str(runs / 'val.npy'),
                 '--fit-calibration', str(cal), '--no-progress']) == 0
    assert 'calibration:' in capsys.readouterr().out
    calibration = load_calibration(cal)
    assert calibration.feature == 'distance' and calibration.num_samples == 200
    p = calibration(np.linspace(0, 10, 50))
    assert np.all(np.diff(p) <= 1e-12) and 0 <= p.min() and p.max() <= 1  # monotone
    report = runs / 'r.json'
    assert main(['evaluate', '--map', str(runs / 'm'), str(runs / 'test.npy'),
                 '--calibration', str(cal), '--report', str(report), '--no-progress']) == 0
    assert 'expected calibration error' in capsys.readouterr().out
    data = json.loads(report.read_text())['calibration']
    bins = data['bins']
    # the ECE is the count-weighted gap between confidence and accuracy over the bins
    gap = sum(b['count'] * abs(b['accuracy'] - b['confidence']) for b in bins if b['count'])
    assert data['ece'] == pytest.approx(gap / data['num_matches'])
    assert data['num_matches'] == 200 and data['ece'] < 0.2
    # the replay of the held-out run reports the same calibration error as evaluate
    assert main(['replay', str(runs / 'test.npy'), '--map', str(runs / 'm'), '--calibration',
                 str(cal), '--out', str(runs / 'out'), '--no-progress']) == 0
    replayed = json.loads((runs / 'out' / 'report.json').read_text())['calibration']
    assert replayed['ece'] == pytest.approx(data['ece'])


def test_node_core_publishes_confidence_and_gates_on_it(runs):
    assert main(['evaluate', '--map', str(runs / 'm'), str(runs / 'val.npy'),
                 '--fit-calibration', str(runs / 'cal.json'), '--no-progress']) == 0
    refmap = load_map(runs / 'm')
    cfg = load_config(overrides={'encoder.name': 'npy', 'matching.method': 'single',
                                 'node.calibration': str(runs / 'cal.json')})
    core = NodeCore(cfg, IdentityEncoder(), refmap)
    query = np.load(runs / 'test.npy')
    step = core.on_frame(Frame(index=0, stamp_ns=1, descriptor=query[0]))
    conf = [c.confidence for c in step.hypothesis.candidates]
    assert all(0 <= c <= 1 for c in conf)
    assert conf == sorted(conf, reverse=True)  # best distance, highest probability
    plain = NodeCore(load_config(overrides={'encoder.name': 'npy', 'matching.method': 'single'}),
                     IdentityEncoder(), refmap)
    step = plain.on_frame(Frame(index=0, stamp_ns=1, descriptor=query[0]))
    assert all(math.isnan(c.confidence) for c in step.hypothesis.candidates)
    with pytest.raises(ConfigError, match='needs node.calibration'):
        NodeCore(load_config(overrides={'encoder.name': 'npy', 'node.mode': 'slam',
                                        'node.loop_closure.min_confidence': 0.5}),
                 IdentityEncoder())
    with pytest.raises(ConfigError, match='cannot read calibration'):
        NodeCore(load_config(overrides={'encoder.name': 'npy', 'node.calibration': 'nope'}),
                 IdentityEncoder(), refmap)
