"""ROS parameters are the dotted projection of the schema; the queue drops the stalest."""

from __future__ import annotations

import threading

import pytest
import yaml

from vpr_seq_ros.config import Config, flatten, load_config
from vpr_seq_ros.errors import ConfigError
from vpr_seq_ros.ros.params import (config_from_parameters, default_parameters, is_dynamic,
                                    parameter_description, parameter_kind)
from vpr_seq_ros.runtime.queue import DroppingQueue


def test_every_field_is_a_parameter_with_kind_and_description():
    params = default_parameters(Config())
    assert set(params) == set(flatten(Config()))
    assert params['encoder.weights'] == ''           # None -> '' for ROS
    assert parameter_kind('matching.slopes') == 'float[]'
    assert parameter_kind('evaluation.recall_at') == 'int[]'
    assert parameter_kind('encoder.weights') == 'str'
    assert parameter_kind('node.loop_closure.min_streak') == 'int'
    assert 'consecutive keyframes' in parameter_description('node.loop_closure.min_streak')
    for name in params:
        assert parameter_description(name) != name, name


def test_dynamic_and_read_only():
    assert is_dynamic('matching.top_k') and is_dynamic('node.loop_closure.min_streak')
    assert is_dynamic('node.keyframe.min_distance_m')
    assert not is_dynamic('encoder.name') and not is_dynamic('sequence.length')
    assert not is_dynamic('node.mode') and not is_dynamic('matching.method')


def test_parameters_round_trip_and_validation():
    cfg = load_config('seqslam')
    params = default_parameters(cfg)
    assert config_from_parameters(params) == cfg
    changed = config_from_parameters({'node.loop_closure.min_streak': 5}, cfg)
    assert changed.node.loop_closure.min_streak == 5 and changed.encoder == cfg.encoder
    with pytest.raises(ConfigError, match='min_streak'):
        config_from_parameters({'node.loop_closure.min_streak': 0}, cfg)


@pytest.mark.parametrize('name', ['localization.yaml', 'slam.yaml'])
def test_shipped_parameter_files_fit_the_schema(name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / 'config' / name
    data = yaml.safe_load(path.read_text())
    params = data['vpr_seq_node']['ros__parameters']
    flat = {}

    def walk(prefix, node):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(f'{prefix}{key}.', value)
            else:
                flat[f'{prefix}{key}'] = value

    walk('', params)
    base = load_config(flat.pop('preset', None) or None)
    cfg = config_from_parameters(flat, base)
    assert cfg.node.mode == name.split('.')[0]


def test_dropping_queue_keeps_the_newest():
    q: DroppingQueue[int] = DroppingQueue(2)
    assert q.put(1) == 0 and q.put(2) == 0
    assert q.put(3) == 1 and q.dropped == 1
    assert q.get() == 2 and q.get() == 3
    assert q.get(timeout=0.01) is None
    got = []
    consumer = threading.Thread(target=lambda: got.append(q.get(timeout=2.0)))
    consumer.start()
    q.put(7)
    consumer.join()
    assert got == [7]
    with pytest.raises(ValueError):
        DroppingQueue(0)


def test_node_configuration_is_one_resolution(tmp_path):
    """map < preset < config file < parameters, as evaluate and replay resolve it."""
    import numpy as np

    from vpr_seq_ros.pipeline import build_map
    from vpr_seq_ros.ros.params import resolve_node_config

    np.save(tmp_path / 'ref.npy', np.random.default_rng(0).normal(size=(20, 8)).astype('f4'))
    built = load_config(overrides={'encoder.name': 'npy', 'sequence.length': 7,
                                   'matching.distance': 'sad', 'matching.top_k': 9})
    map_path = build_map(tmp_path / 'ref.npy', built, tmp_path / 'map.npz')
    params = tmp_path / 'params.yaml'
    params.write_text(yaml.safe_dump({'vpr_seq_node': {'ros__parameters': {
        'sequence': {'length': 6}, 'matching': {'top_k': 4}}}}))
    cfg, refmap = resolve_node_config({'node.map_path': str(map_path), 'matching.top_k': 2},
                                      config_file=str(params))
    assert refmap is not None and len(refmap.run) == 20
    assert cfg.encoder.name == 'npy' and cfg.matching.distance == 'sad'   # the map's
    assert cfg.sequence.length == 6                                        # the file's
    assert cfg.matching.top_k == 2                                         # the parameter's
    slam, none = resolve_node_config({'node.mode': 'slam', 'node.map_path': str(map_path)})
    assert none is None and slam.encoder.name == Config().encoder.name   # slam: no map layer


def test_a_map_saved_in_slam_mode_starts_in_localization_mode(tmp_path):
    """The map's configuration layer (node.mode: slam) never overrides the node's mode."""
    import numpy as np

    from vpr_seq_ros.runtime.core import NodeCore
    from vpr_seq_ros.ros.params import resolve_node_config
    from vpr_seq_ros.types import Frame

    slam = NodeCore.from_config(load_config(overrides={'node.mode': 'slam',
                                                       'encoder.name': 'npy'}))
    for i in range(6):
        slam.on_frame(Frame(index=i, stamp_ns=(i + 1) * 10**9,
                            descriptor=np.full(4, i, np.float32)))
    path = slam.save_map(tmp_path / 'keyframes.npz')
    cfg, refmap = resolve_node_config({'node.map_path': str(path)})
    assert cfg.node.mode == 'localization' and refmap is not None and len(refmap.run) == 6
    assert cfg.node.map_path == str(path) and cfg.encoder.name == 'npy'
