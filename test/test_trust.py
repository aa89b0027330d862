"""Numbers a user can trust: each case here failed before issue 8 was fixed."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from vpr_seq_ros.cli import main
from vpr_seq_ros.config import load_config
from vpr_seq_ros.errors import ConfigError, MatchingError
from vpr_seq_ros.pipeline import build_map, evaluate
from vpr_seq_ros.refmap import load_map
from vpr_seq_ros.replay import replay


@pytest.fixture
def npy_runs(tmp_path: Path) -> tuple[Path, Path]:
    """A 60-frame reference and a noisy 50-frame query aligned by index: single frames are
    ambiguous, so Recall@K grows with K well past 5."""
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(60, 16)).astype(np.float32)
    query = ref[:50] + 1.4 * rng.normal(size=(50, 16)).astype(np.float32)
    np.save(tmp_path / 'ref.npy', ref)
    np.save(tmp_path / 'q.npy', query)
    return tmp_path / 'ref.npy', tmp_path / 'q.npy'


def _npy_map(tmp_path: Path, ref: Path, **overrides) -> Path:
    cfg = load_config(overrides={'encoder.name': 'npy', **overrides})
    return build_map(ref, cfg, tmp_path / 'm.npz')


def test_recall_at_k_does_not_depend_on_top_k(tmp_path, npy_runs):
    ref, query = npy_runs
    map_path = _npy_map(tmp_path, ref, **{'matching.method': 'single'})
    recalls = []
    for top_k in (1, 5, 20, 50):
        cfg = load_config(overrides={'encoder.name': 'npy', 'matching.method': 'single',
                                     'matching.top_k': top_k,
                                     'evaluation.recall_at': [1, 5, 10, 20, 50]})
        result = evaluate(map_path, query, cfg)
        recalls.append(result.metrics.recall_at)
        assert result.output.matches.top(top_k).k == top_k
    assert all(r == recalls[0] for r in recalls)
    assert recalls[0][50] == 1.0 and recalls[0][10] > recalls[0][5]  # the K's really differ
    # the slow reference: rank of the true reference among all distances
    r = np.load(ref)
    q = np.load(query)
    d = np.linalg.norm(q[:, None] - r[None], axis=2)
    rank = (d < d[np.arange(50), np.arange(50)][:, None]).sum(axis=1)
    for k in (1, 5, 10, 20, 50):
        assert recalls[0][k] == pytest.approx(float(np.mean(rank < k)))


def test_replay_recall_does_not_depend_on_top_k(tmp_path, npy_runs):
    ref, query = npy_runs
    refmap = load_map(_npy_map(tmp_path, ref, **{'matching.method': 'single'}))
    recalls = []
    for top_k in (1, 5, 20):
        cfg = load_config(overrides={'encoder.name': 'npy', 'matching.method': 'single',
                                     'matching.top_k': top_k})
        result = replay(query, cfg, refmap)
        recalls.append(result.metrics.recall_at)
        assert all(len(s.hypothesis.candidates) >= 20 for s in result.steps)
    assert recalls[0] == recalls[1] == recalls[2]
    offline = evaluate(refmap, query, load_config(overrides={'encoder.name': 'npy',
                                                             'matching.method': 'single'}))
    assert offline.metrics.recall_at == recalls[0]  # replay == evaluate on the same data


def test_report_says_how_it_was_made(tmp_path, npy_runs, capsys):
    ref, query = npy_runs
    map_path = _npy_map(tmp_path, ref)
    reports = []
    for extra in ([], ['--slopes', '0.8', '1', '1.25']):
        out = tmp_path / f'r{len(extra)}.json'
        assert main(['evaluate', '--map', str(map_path), str(query), '--report', str(out),
                     '--no-progress', *extra]) == 0
        reports.append(json.loads(out.read_text()))
    printed = capsys.readouterr().out
    assert 'ground truth: same-index +-0 frames (from the defaults; set --gt' in printed
    a, b = reports
    assert a['config']['matching']['slopes'] == [1.0]
    assert b['config']['matching']['slopes'] == [0.8, 1.0, 1.25]
    assert a['config']['evaluation']['gt'] == 'same-index' and a['top_k'] == 20
    assert a['map_manifest_sha256'] == b['map_manifest_sha256'] and \
        len(a['map_manifest_sha256']) == 64
    assert a['version']
    assert main(['evaluate', '--map', str(map_path), str(query), '--tolerance-frames', '2',
                 '--no-progress']) == 0
    assert 'ground truth: same-index +-2 frames (from flags)' in capsys.readouterr().out


def test_map_name_without_suffix_works_everywhere(tmp_path, npy_runs, capsys):
    ref, query = npy_runs
    assert main(['build-map', str(ref), '-o', str(tmp_path / 'route'), '--encoder', 'npy',
                 '--no-progress']) == 0
    assert (tmp_path / 'route.npz').is_file()
    assert main(['evaluate', '--map', str(tmp_path / 'route'), str(query),
                 '--no-progress']) == 0
    assert main(['replay', str(query), '--map', str(tmp_path / 'route'), '--out',
                 str(tmp_path / 'out'), '--no-progress']) == 0
    capsys.readouterr()
    # an existing map is never replaced silently
    assert main(['build-map', str(ref), '-o', str(tmp_path / 'route'), '--encoder', 'npy',
                 '--no-progress']) == 2
    assert '--overwrite' in capsys.readouterr().err
    assert main(['build-map', str(ref), '-o', str(tmp_path / 'route'), '--encoder', 'npy',
                 '--overwrite', '--no-progress']) == 0


def test_replay_takes_any_source_and_index_ground_truth(tmp_path, npy_runs, two_runs, capsys):
    ref, query = npy_runs
    map_path = _npy_map(tmp_path, ref)
    out = tmp_path / 'out'
    assert main(['replay', str(query), '--map', str(map_path), '--out', str(out),
                 '--tolerance-frames', '1', '--no-progress']) == 0
    printed = capsys.readouterr().out
    assert 'R@1' in printed and 'ground truth: same-index +-1 frames' in printed
    assert {'report.json', 'plot.png', 'predictions.csv', 'result_bag'} <= \
        {p.name for p in out.iterdir()}
    report = json.loads((out / 'report.json').read_text())
    assert report['result_bag'] == str(out / 'result_bag')
    # the same numbers as evaluate
    cfg = load_config(overrides={'encoder.name': 'npy', 'evaluation.tolerance_frames': 1})
    offline = evaluate(map_path, query, cfg)
    assert report['recall_at'] == {str(k): v for k, v in offline.metrics.recall_at.items()}
    # an image folder through the node core, scored by radius from its frames.csv
    images_ref, images_query = two_runs
    images_map = build_map(images_ref, load_config(), tmp_path / 'images.npz')
    assert main(['replay', str(images_query), '--map', str(images_map), '--out',
                 str(tmp_path / 'out2'), '--radius-m', '1.5', '--no-progress']) == 0
    assert json.loads((tmp_path / 'out2' / 'report.json').read_text())['recall_at']['1'] >= 0.9


def test_replay_refuses_what_evaluate_refuses(tmp_path, npy_runs, capsys):
    ref, query = npy_runs
    map_path = _npy_map(tmp_path, ref)
    short = tmp_path / 'short.npy'
    np.save(short, np.load(query)[:3])
    messages = []
    for command in (['evaluate', '--map', str(map_path), str(short)],
                    ['replay', str(short), '--map', str(map_path), '--out',
                     str(tmp_path / 'o')]):
        assert main(command + ['--no-progress']) == 2
        messages.append(capsys.readouterr().err.split('error: ')[1])
    assert messages[0] == messages[1]
    assert 'sequence length 5 is longer than the query run' in messages[0]
    assert not (tmp_path / 'o').exists()
    # no silent slam mode without a map
    assert main(['replay', str(query), '--out', str(tmp_path / 'o'), '--no-progress']) == 2
    assert '--mode slam' in capsys.readouterr().err


def test_replay_outputs_are_atomic_and_overwrite_is_explicit(tmp_path, npy_runs, monkeypatch,
                                                            capsys):
    ref, query = npy_runs
    map_path = _npy_map(tmp_path, ref)
    out = tmp_path / 'out'
    import vpr_seq_ros.replay as replay_module

    def fail(*args, **kwargs):
        raise MatchingError('simulated failure half-way')

    monkeypatch.setattr(replay_module, 'write_report', fail)
    assert main(['replay', str(query), '--map', str(map_path), '--out', str(out),
                 '--no-progress']) == 2
    assert not out.exists() and not list(tmp_path.glob('.out.partial-*'))
    monkeypatch.undo()
    assert main(['replay', str(query), '--map', str(map_path), '--out', str(out),
                 '--no-progress']) == 0  # the rerun is not blocked
    capsys.readouterr()
    assert main(['replay', str(query), '--map', str(map_path), '--out', str(out),
                 '--no-progress']) == 2
    assert '--overwrite' in capsys.readouterr().err
    (out / 'marker').write_text('old')
    assert main(['replay', str(query), '--map', str(map_path), '--out', str(out),
                 '--overwrite', '--no-progress']) == 0
    assert not (out / 'marker').exists() and (out / 'report.json').is_file()


def test_node_parameter_file_and_loop_closure_flags(tmp_path, npy_runs):
    root = Path(__file__).resolve().parents[1]
    ref, _ = npy_runs
    from vpr_seq_ros.config import read_config_file, resolve_config

    node_file = read_config_file(root / 'config' / 'slam.yaml')
    assert node_file.is_node_file and node_file.data['node']['loop_closure']['min_score'] == 3.0
    cfg = resolve_config(file=root / 'config' / 'slam.yaml',
                         overrides={'node.loop_closure.min_streak': 5}).config
    assert cfg.node.mode == 'slam' and cfg.sequence.length == 10
    assert cfg.node.loop_closure.min_streak == 5 and cfg.node.loop_closure.exclude_recent_m == 20
    (tmp_path / 'p.yaml').write_text(
        '/**:\n  ros__parameters:\n    use_sim_time: true\n    preset: seqslam\n'
        '    matching.top_k: 7\n')
    resolved = resolve_config(file=tmp_path / 'p.yaml')
    assert resolved.config.matching.top_k == 7 and resolved.config.matching.distance == 'sad'
    assert resolved.origin_of('matching.distance') == 'preset'
    (tmp_path / 'bad.yaml').write_text('other_node:\n  ros__parameters:\n    a: 1\n')
    with pytest.raises(ConfigError, match='without a vpr_seq_node'):
        resolve_config(file=tmp_path / 'bad.yaml')
    # the same file drives a slam replay, with thresholds as flags
    loop = tmp_path / 'loop.npy'
    np.save(loop, np.concatenate([np.load(ref)[:30]] * 2))
    assert main(['replay', str(loop), '--mode', 'slam', '--config',
                 str(root / 'config' / 'slam.yaml'), '--encoder', 'npy', '--min-score', '0',
                 '--exclude-recent-s', '1', '--keyframe-min-interval-s', '0', '--out',
                 str(tmp_path / 'slam'), '--no-progress']) == 0
    report = json.loads((tmp_path / 'slam' / 'report.json').read_text())
    assert report['config']['node']['loop_closure']['min_score'] == 0.0
    assert report['config']['node']['loop_closure']['exclude_recent_m'] == 20.0
    assert report['loop_closures'] > 0


def test_map_settings_do_not_trap_the_query(tmp_path):
    """A map built from a bag with /gps/fix, evaluated against a bag without that topic."""
    from test_bags import SEC, T0, TS2, fix_msg, image_records, write_bag

    stamps = [T0 + i * SEC // 10 for i in range(12)]
    msgs = image_records(TS2, stamps) + [
        ('/gps/fix', 'sensor_msgs/msg/NavSatFix', s, fix_msg(TS2, s, 48.0 + i * 1e-5, 11.0,
                                                             500.0))
        for i, s in enumerate(stamps)]
    ref_bag = write_bag(tmp_path / 'ref', 'mcap', msgs)
    query_bag = write_bag(tmp_path / 'query', 'mcap', image_records(TS2, stamps))
    map_path = build_map(ref_bag, load_config(overrides={
        'source.image_topic': '/cam', 'source.pose_topic': '/gps/fix'}), tmp_path / 'm.npz')
    assert load_map(map_path).manifest.geo_origin
    assert main(['evaluate', '--map', str(map_path), str(query_bag), '--gt', 'same-index',
                 '--no-progress']) == 0
    # a pose topic the user gives explicitly is still checked
    assert main(['evaluate', '--map', str(map_path), str(query_bag), '--pose-topic',
                 '/gps/fix', '--no-progress']) == 2


def test_stored_weights_paths_work_from_any_folder(tmp_path, npy_runs, monkeypatch, capsys):
    torch = pytest.importorskip('torch')
    from models_fixtures import seqmatchnet_checkpoint

    ref, query = npy_runs
    work = tmp_path / 'work'
    work.mkdir()
    torch.save(seqmatchnet_checkpoint(dim=16), work / 'smn.pth.tar')
    monkeypatch.chdir(work)
    assert main(['build-map', str(ref), '-o', str(tmp_path / 'm.npz'), '--preset',
                 'seqmatchnet', '--transform-weights', 'smn.pth.tar', '--no-progress']) == 0
    stored = load_map(tmp_path / 'm.npz').manifest.config['encoder']['transform']['weights']
    assert Path(stored).is_absolute()
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(['evaluate', '--map', str(tmp_path / 'm.npz'), str(query),
                 '--no-progress']) == 0
    (work / 'smn.pth.tar').rename(work / 'moved.pth.tar')
    capsys.readouterr()
    assert main(['evaluate', '--map', str(tmp_path / 'm.npz'), str(query),
                 '--no-progress']) == 2
    err = capsys.readouterr().err
    assert f'encoder.transform.weights = {work / "smn.pth.tar"}' in err
    assert '--transform-weights' in err and 'download' not in err
    assert main(['evaluate', '--map', str(tmp_path / 'm.npz'), str(query),
                 '--transform-weights', str(work / 'moved.pth.tar'), '--no-progress']) == 0


def test_checks_come_before_work(tmp_path, two_runs, capsys, monkeypatch):
    ref, query = two_runs
    map_path = build_map(ref, load_config(), tmp_path / 'm.npz')
    import vpr_seq_ros.pipeline as pipeline

    encoded = []
    real = pipeline.encode_run
    monkeypatch.setattr(pipeline, 'encode_run',
                        lambda *a, **k: encoded.append(1) or real(*a, **k))
    (tmp_path / 'c.yaml').write_text('encoder: {patchnorm: {width: 32, height: 16}}\n')
    assert main(['evaluate', '--map', str(map_path), str(query), '--config',
                 str(tmp_path / 'c.yaml'), '--no-progress']) == 2
    err = capsys.readouterr().err
    assert 'width: map has 64, query has 32' in err and 'none' not in err.lower().split(
        'the map:')[1].split('.')[0]
    assert not encoded  # refused before encoding a single frame
    assert main(['evaluate', '--map', str(map_path), str(query), '--plot', 'out.jpgx']) == 2
    assert 'cannot write a plot as .jpgx' in capsys.readouterr().err
    locked = tmp_path / 'locked'
    locked.mkdir()
    os.chmod(locked, stat.S_IRUSR | stat.S_IXUSR)
    try:
        if not os.access(locked, os.W_OK):  # root writes anywhere: nothing to refuse then
            assert main(['evaluate', '--map', str(map_path), str(query), '--report',
                         str(locked / 'r.json')]) == 2
            assert 'not a writable folder' in capsys.readouterr().err
        assert main(['evaluate', '--map', str(map_path), str(query), '--report',
                     str(tmp_path / 'm.npz' / 'r.json')]) == 2  # a file in the way
        assert 'not a writable folder' in capsys.readouterr().err
    finally:
        os.chmod(locked, stat.S_IRWXU)
    assert not encoded
    assert main(['evaluate', '--map', str(map_path), str(query), '--plot',
                 str(tmp_path / 'outplot'), '--no-progress']) == 0
    assert f'plot: {tmp_path / "outplot.png"}' in capsys.readouterr().out
    assert (tmp_path / 'outplot.png').is_file()


def test_help_shows_every_default(capsys):
    from vpr_seq_ros.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == '_SubParsersAction')
    for name in ('build-map', 'evaluate', 'replay'):
        command = sub.choices[name]
        for action in command._actions:
            if not action.option_strings or action.help in (None, '==SUPPRESS=='):
                continue
            if action.dest in ('help', 'no_progress', 'overwrite', 'preset', 'config', 'map',
                               'out', 'output', 'report', 'plot', 'save_predictions',
                               'fit_calibration'):
                continue
            assert 'default' in action.help, f'{name} {action.option_strings}'
    assert 'bag' in sub.choices['evaluate'].format_help()
