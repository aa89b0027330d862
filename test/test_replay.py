"""Replay through the node's code path, on bags written in tmp_path (images-to-bag + rosbags)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import place_image, write_run
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from vpr_seq_ros.bagwrite import images_to_bag
from vpr_seq_ros.cli import main
from vpr_seq_ros.config import load_config
from vpr_seq_ros.errors import SourceError
from vpr_seq_ros.pipeline import build_map
from vpr_seq_ros.refmap import load_map
from vpr_seq_ros.replay import replay

STORE = get_typestore(Stores.ROS2_HUMBLE)


@pytest.fixture
def mapped_route(tmp_path, two_runs):
    """A map built from a reference bag, and the query run as a bag."""
    ref, query = two_runs
    ref_bag = images_to_bag(ref, tmp_path / 'ref_bag')
    query_bag = images_to_bag(query, tmp_path / 'query_bag', compressed=True)
    cfg = load_config(overrides={'source.image_topic': '/camera/image_raw',
                                 'source.pose_topic': '/odom', 'sequence.length': 4})
    map_path = build_map(ref_bag, cfg, tmp_path / 'map.npz')
    return load_map(map_path), query_bag, cfg


def read_bag(path):
    with AnyReader([path], default_typestore=STORE) as reader:
        return [(c.topic, c.msgtype, reader.deserialize(raw, c.msgtype), t)
                for c, t, raw in reader.messages()]


def test_localization_replay_and_result_bag(mapped_route, tmp_path):
    refmap, query_bag, cfg = mapped_route
    cfg = load_config(overrides={**{'source.image_topic': '/camera/image_raw/compressed',
                                    'source.pose_topic': '/odom', 'sequence.length': 4,
                                    'evaluation.radius_m': 1.5, 'evaluation.gt': 'radius'}})
    result = replay(query_bag, cfg, refmap, tmp_path / 'out')
    assert len(result.keyframes) == 30
    assert result.metrics is not None and result.metrics.recall_at[1] >= 0.9
    assert result.metrics.num_queries_without_window == 3
    messages = read_bag(result.result_bag)
    topics = {t for t, *_ in messages}
    assert {'/vpr_seq_node/matched_pose', '/vpr_seq_node/place_matches',
            '/vpr_seq_node/markers', '/diagnostics'} <= topics
    poses = [m for t, _, m, _ in messages if t == '/vpr_seq_node/matched_pose']
    assert len(poses) == 27
    # stamps are the query frames' stamps; poses are reference poses in the map frame
    first = poses[0]
    assert first.header.frame_id == 'map'
    assert first.header.stamp.sec * 10**9 + first.header.stamp.nanosec == result.keyframes[3]
    assert abs(first.pose.pose.position.x - 6.0) <= 1.5  # query frame 3 is at x = 6 m


def test_replay_drops_malformed_frames_and_resets_on_time_jump(tmp_path, mapped_route):
    refmap, _, _ = mapped_route
    rng = np.random.default_rng(0)
    bag = tmp_path / 'odd_bag'
    stamps = [10**9 + i * 10**8 for i in range(12)]
    stamps[8:] = [10**9 + i * 10**8 for i in range(4)]  # the bag restarted after 8 frames
    with Writer(bag, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection('/cam', 'sensor_msgs/msg/Image', typestore=STORE)
        for i, stamp in enumerate(stamps):
            img = place_image(3.0 + i, rng)
            header = STORE.types['std_msgs/msg/Header'](
                stamp=STORE.types['builtin_interfaces/msg/Time'](sec=stamp // 10**9,
                                                                  nanosec=stamp % 10**9),
                frame_id='cam')
            step = img.shape[1] * 3 if i != 5 else 7  # frame 5: step too small
            msg = STORE.types['sensor_msgs/msg/Image'](
                header=header, height=img.shape[0], width=img.shape[1], encoding='rgb8',
                is_bigendian=0, step=step, data=img.reshape(-1))
            writer.write(conn, 5 * 10**9 + i, STORE.serialize_cdr(msg, msg.__msgtype__))
    cfg = load_config(overrides={'source.image_topic': '/cam', 'sequence.length': 4})
    result = replay(bag, cfg, refmap, tmp_path / 'out')
    diag = result.report['diagnostics']
    assert diag['frames_dropped_malformed'] == 1 and diag['resets'] == 1
    assert len(result.keyframes) == 11
    reset_steps = [s for s in result.steps if s.reset]
    assert len(reset_steps) == 1 and reset_steps[0].hypothesis is None
    # same-index ground truth follows each keyframe's frame index in the bag, which counts the
    # dropped frame 5
    assert result.frame_indices == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert result.report['ground_truth'] == {'type': 'same-index', 'tolerance_frames': 0}
    radius = load_config(overrides={'source.image_topic': '/cam', 'sequence.length': 4,
                                    'evaluation.gt': 'radius'})
    unscored = replay(bag, radius, refmap, None)
    assert unscored.metrics is None and 'needs poses' in unscored.report['note']


def test_odometry_gating_in_replay(mapped_route, tmp_path):
    refmap, query_bag, _ = mapped_route
    cfg = load_config(overrides={'source.image_topic': '/camera/image_raw/compressed',
                                 'source.pose_topic': '/odom', 'sequence.length': 4,
                                 'node.keyframe.min_distance_m': 2.0})
    result = replay(query_bag, cfg, refmap, None)
    assert len(result.keyframes) == 15  # 30 frames 1 m apart
    assert result.result_bag is None


def test_slam_replay_closes_the_loop(tmp_path):
    places = np.concatenate([np.arange(0.0, 30.0), np.arange(0.0, 30.0)])
    folder = write_run(tmp_path / 'loop', places, seed=3, noise=12.0)
    bag = images_to_bag(folder, tmp_path / 'loop_bag')  # frames.csv: 0.1 s apart
    cfg = load_config(overrides={'source.image_topic': '/camera/image_raw',
                                 'source.pose_topic': '/odom', 'node.mode': 'slam',
                                 'sequence.length': 4, 'evaluation.radius_m': 1.5,
                                 'evaluation.gt': 'radius',
                                 'node.loop_closure.exclude_recent_s': 1.0,
                                 'node.loop_closure.max_distance': 38.0,
                                 'node.loop_closure.exclude_recent_m': 0.0,
                                 # 38.0 is on the scale of raw patchnorm descriptors
                                 'encoder.patchnorm.normalize': 'none'})
    result = replay(bag, cfg, None, tmp_path / 'out')
    assert result.report['loop_closures'] >= 15
    assert result.report['loop_closure_precision'] >= 0.9
    pairs = [m for t, _, m, _ in read_bag(result.result_bag)
             if t == '/vpr_seq_node/loop_closure']
    assert len(pairs) == result.report['loop_closures']
    assert all(p.data[0] > p.data[1] for p in pairs)  # [t_query, t_match]


def test_replay_cli_and_errors(mapped_route, tmp_path, capsys):
    refmap, query_bag, _ = mapped_route
    out = tmp_path / 'cli_out'
    code = main(['replay', str(query_bag), '--map', str(refmap.path), '--image-topic',
                 '/camera/image_raw/compressed', '--pose-topic', '/odom', '--radius-m', '1.5',
                 '--out', str(out), '--no-progress'])
    assert code == 0
    report = json.loads((out / 'report.json').read_text())
    assert report['recall_at']['1'] >= 0.9 and (out / 'plot.png').is_file()
    assert main(['replay', str(query_bag), '--map', str(refmap.path), '--image-topic',
                 '/nope', '--out', str(tmp_path / 'x'), '--no-progress']) == 2
    assert '/camera/image_raw/compressed' in capsys.readouterr().err
    with pytest.raises(SourceError, match='does not exist'):
        replay(tmp_path / 'missing', load_config(overrides={'source.image_topic': '/c'}),
               refmap)
