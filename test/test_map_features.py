"""Local features stored in a reference map by build-map, and verification of localization
hypotheses against them inside the node core (as the node and replay run it)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('cv2')

from PIL import Image  # noqa: E402
from verification_scene import relative_pose, render, rotation_y  # noqa: E402

from vpr_seq_ros.cli import main  # noqa: E402
from vpr_seq_ros.config import load_config  # noqa: E402
from vpr_seq_ros.encoders import build_encoder  # noqa: E402
from vpr_seq_ros.errors import ConfigError, MapError  # noqa: E402
from vpr_seq_ros.pipeline import build_map  # noqa: E402
from vpr_seq_ros.refmap import load_map, save_map  # noqa: E402
from vpr_seq_ros.runtime.core import NodeCore  # noqa: E402
from vpr_seq_ros.sources import open_source  # noqa: E402
from vpr_seq_ros.verification import (CameraIntrinsics, FeatureExtractor, MapFeatures,  # noqa: E402
                                      Verifier)
from vpr_seq_ros.verification.geometry import rotation_angle  # noqa: E402

K = np.array([[250.0, 0, 160], [0, 250.0, 120], [0, 0, 1]])
SIZE = (320, 240)
# a view is (yaw degrees, camera centre, texture seed); another seed is another place
MAP = [(0.0, (0.0, 0.0, 0.0), 1), (0.0, (0.0, 0.0, 0.0), 3), (0.0, (0.0, 0.0, 0.0), 5)]
# the poses of test_verification_geometry (its tolerances were measured on them), in the
# mapped place (seed 1) and in a look-alike place (same layout, texture 7) that is not mapped
POSES = [(6.0, (0.6, 0.1, 0.4)), (-10.0, (-0.8, 0.0, -0.5)), (15.0, (0.3, -0.1, 1.0))]
QUERIES = [(yaw, c, 1) for yaw, c in POSES] + [(yaw, c, 7) for yaw, c in POSES]
CAMERA = {'node.verification.camera_fx': 250.0, 'node.verification.camera_fy': 250.0,
          'node.verification.camera_cx': 160.0, 'node.verification.camera_cy': 120.0,
          'node.verification.max_features': 500}


def view(yaw: float, centre: tuple[float, float, float], seed: int) -> np.ndarray:
    grey, _ = render(rotation_y(yaw), np.asarray(centre, float), K, SIZE, seed)
    return np.repeat(grey[:, :, None], 3, axis=2)


def write_scene_run(folder: Path, views: list) -> Path:
    """One rendered frame per view, 1 s apart, with a frames.csv whose (x, y) is the camera's
    x and 100 m times the seed (another place is far away)."""
    folder.mkdir(parents=True)
    with open(folder / 'frames.csv', 'w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(['name', 'stamp_ns', 'x', 'y'])
        for i, (yaw, centre, seed) in enumerate(views):
            Image.fromarray(view(yaw, centre, seed)).save(folder / f'{i:03d}.png')
            writer.writerow([f'{i:03d}.png', (i + 1) * 10**9, centre[0], 100.0 * seed])
    return folder


def map_cfg(**extra: object):
    return load_config(overrides={'matching.method': 'single', 'sequence.length': 1,
                                  'node.verification.map_features': True, **CAMERA, **extra})


@pytest.fixture(scope='module')
def scene_map(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A map of scene 0 built with features, and its image folder."""
    tmp = tmp_path_factory.mktemp('scene_map')
    folder = write_scene_run(tmp / 'ref', MAP)
    return build_map(folder, map_cfg(), tmp / 'map.npz'), folder


def test_features_round_trip_through_build_map_and_load_map(scene_map, tmp_path):
    path, folder = scene_map
    refmap = load_map(path)
    assert refmap.features is not None
    assert isinstance(refmap.features['descriptors'], np.memmap)  # read in place
    features = refmap.map_features()
    assert isinstance(features, MapFeatures) and features.feature == 'orb'
    assert features.indices.tolist() == list(range(len(MAP)))
    cfg = map_cfg()
    extractor = FeatureExtractor(cfg.node.verification)
    for frame in open_source(folder, cfg.source):
        stored = features.get(frame.index)
        fresh = extractor.extract(frame.image)
        assert 0 < len(stored) == len(fresh) <= 500
        assert np.array_equal(stored.descriptors, fresh.descriptors)
        # keypoints are stored in 1/8 pixel
        assert np.max(np.abs(stored.keypoints - fresh.keypoints)) <= 1 / 16 + 1e-6
        assert stored.image_size == SIZE
    entry = refmap.manifest.get('features')
    assert entry['feature'] == 'orb' and entry['frames'] == len(MAP)
    assert entry['bytes'] == features.nbytes == features.num_keypoints * (2 * 2 + 32)
    assert entry['bytes_per_frame'] == pytest.approx(features.nbytes / len(MAP), abs=0.1)
    # written again (atomically) it stays the same; a map without features still loads
    again = load_map(save_map(refmap, tmp_path / 'copy.npz'))
    assert np.array_equal(again.features['keypoints_q8'], refmap.features['keypoints_q8'])
    plain = build_map(folder, map_cfg(**{'node.verification.map_features': False}),
                      tmp_path / 'plain.npz')
    bare = load_map(plain)
    assert bare.features is None and bare.map_features() is None
    assert bare.manifest.get('features') is None


def test_inspect_shows_the_features_size_per_frame(scene_map, tmp_path, capsys):
    path, folder = scene_map
    features = load_map(path).map_features()
    assert main(['inspect', str(path), '--json']) == 0
    summary = json.loads(capsys.readouterr().out)['features']
    assert summary['feature'] == 'orb' and summary['frames'] == len(MAP)
    assert summary['bytes'] == features.nbytes
    assert summary['bytes_per_frame'] == pytest.approx(features.nbytes / len(MAP))
    assert summary['keypoints'] == features.num_keypoints and summary['max_features'] == 500
    assert main(['inspect', str(path)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith('features:'))
    assert 'orb' in line and 'per frame' in line and 'at most 500 per frame' in line
    plain = build_map(folder, map_cfg(**{'node.verification.map_features': False}),
                      tmp_path / 'plain.npz')
    assert main(['inspect', str(plain)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith('features:'))
    assert 'none' in line and 'map_features' in line


def test_build_map_cli_stores_features_on_request(tmp_path, capsys):
    folder = write_scene_run(tmp_path / 'ref', MAP[:2])
    assert main(['build-map', str(folder), '-o', str(tmp_path / 'm'), '--method', 'single',
                 '--seq-len', '1', '--map-features', '--no-progress']) == 0
    assert 'local features: orb' in capsys.readouterr().out
    assert len(load_map(tmp_path / 'm').map_features()) == 2


def test_features_need_images(tmp_path):
    np.save(tmp_path / 'ref.npy', np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32))
    cfg = map_cfg(**{'encoder.name': 'npy'})
    with pytest.raises(ConfigError, match='needs an image source'):
        build_map(tmp_path / 'ref.npy', cfg, tmp_path / 'm.npz')
    assert not (tmp_path / 'm.npz').exists()


def localization_core(path: Path, **extra: object) -> NodeCore:
    cfg = map_cfg(**{'node.mode': 'localization', 'node.verification.enabled': True,
                     'node.verification.map_features': False, **extra})
    return NodeCore(cfg, build_encoder(cfg.encoder), load_map(path))


def expected_pose(query: tuple, mapped: tuple) -> tuple[np.ndarray, np.ndarray]:
    """``(R, t)`` of ``X_map = R X_query + t`` for two views."""
    r_q, t_q = relative_pose(rotation_y(query[0]), np.asarray(query[1], float))
    r_m, t_m = relative_pose(rotation_y(mapped[0]), np.asarray(mapped[1], float))
    rotation = r_m @ r_q.T
    return rotation, t_m - rotation @ t_q


def run_queries(core: NodeCore, views: list) -> list:
    from vpr_seq_ros.types import Frame

    return [core.on_frame(Frame(index=i, stamp_ns=(i + 1) * 10**9, image=view(*v)))
            for i, v in enumerate(views)]


def test_localization_hypotheses_are_verified_against_the_map_features(scene_map):
    """Inside the node core, the best candidate of each hypothesis is verified against the
    map frame's stored features: accepted exactly when it is the same place, with the right
    relative pose; the look-alike place is rejected."""
    path, _ = scene_map
    core = localization_core(path)
    steps = run_queries(core, QUERIES)
    features = load_map(path).map_features()
    verifier = Verifier(core.cfg.node.verification, CameraIntrinsics(250, 250, 160, 120, *SIZE))
    accepted = rejected = 0
    for step_index, (query, step) in enumerate(zip(QUERIES, steps)):
        check = step.hypothesis.verification
        assert check is not None and check.ref_index == step.hypothesis.best.ref_index
        assert step.hypothesis_checks == (check,)
        mapped = MAP[check.compared_index]
        if mapped[2] != query[2]:  # another place: appearance was fooled, geometry is not
            assert not check.accepted, check.verification.reason
            rejected += 1
            continue
        v = check.verification
        assert check.accepted and v.num_inliers >= 20
        # the verdict is the verifier's on the stored features of both keyframes
        direct = verifier.verify(core.hypothesis_verification.stage.store.get(step_index),
                                 features.get(check.compared_index))
        assert direct.num_inliers == v.num_inliers
        assert np.allclose(direct.rotation, v.rotation)
        assert np.allclose(direct.translation, v.translation)
        # in the published convention, X_map = R X_query + t: closer to the true relative
        # pose than to its inverse (the accuracy of the geometry itself is measured in
        # test_verification_geometry; here 1/8 pixel storage of both sides moves it a little)
        rotation, translation = expected_pose(query, mapped)
        error = np.degrees(rotation_angle(v.rotation @ rotation.T))
        assert error < abs(query[0]) <= np.degrees(rotation_angle(v.rotation @ rotation))
        inverse = -rotation.T @ translation
        assert v.translation @ translation / np.linalg.norm(translation) > \
            v.translation @ inverse / np.linalg.norm(inverse)
        assert v.covariance.shape == (6, 6) and np.all(np.diag(v.covariance) > 0)
        accepted += 1
    assert accepted >= 2 and rejected >= 3  # the three look-alike queries at least
    diag = core.diagnostics.as_dict()
    assert diag['verification.accepted'] == accepted
    assert diag['verification.rejected'] == rejected
    assert diag['verification.store.keyframes'] == len(QUERIES)  # the queries, bounded


def test_query_features_are_bounded_in_localization(scene_map):
    path, _ = scene_map
    core = localization_core(path, **{'node.verification.queue_depth': 1,
                                      'node.verification.keep_recent': 1})
    run_queries(core, QUERIES + QUERIES)
    # what can still wait in the two bounded queues, and a margin: 1 + 1 + 2
    assert core.diagnostics.extra['verification.store.keyframes'] == 4
    assert core.diagnostics.extra['verification.keyframes_evicted'] == 2 * len(QUERIES) - 4


def test_verified_hypotheses_in_the_messages(scene_map):
    from rosbags.typesys import Stores, get_typestore

    from vpr_seq_ros.messages.outputs import (PLACE_COLUMNS, TOPIC_MATCH_RELATIVE_POSE,
                                              TOPIC_PLACE_MATCHES, rosbags_factory,
                                              step_messages)
    from vpr_seq_ros.types import Frame

    path, _ = scene_map
    core = localization_core(path)
    store = get_typestore(Stores.ROS2_HUMBLE)
    make = rosbags_factory(store)
    seen = {}
    for i, query in enumerate([POSES[1] + (1,), POSES[1] + (7,)]):
        step = core.on_frame(Frame(index=i, stamp_ns=(i + 1) * 10**9, image=view(*query)))
        msgs = {o.topic: store.deserialize_cdr(store.serialize_cdr(o.msg, o.typename),
                                               o.typename)
                for o in step_messages(make, step, 'map')}
        table = msgs[TOPIC_PLACE_MATCHES].data.reshape(-1, len(PLACE_COLUMNS))
        seen[query[2]] = (table, msgs.get(TOPIC_MATCH_RELATIVE_POSE))
    table, pose = seen[1]
    status = table[:, PLACE_COLUMNS.index('status')]
    assert status[0] == 1 and np.all(status[1:] == -1)
    assert table[0, PLACE_COLUMNS.index('inliers')] >= 20
    assert pose is not None and pose.header.stamp.sec == 1
    assert pose.header.frame_id == 'matched_map_camera'
    table, pose = seen[7]
    assert table[0, PLACE_COLUMNS.index('status')] == 0 and pose is None


def test_verification_on_against_a_map_without_features_says_how_to_rebuild(scene_map,
                                                                             tmp_path):
    _, folder = scene_map
    plain = build_map(folder, map_cfg(**{'node.verification.map_features': False}),
                      tmp_path / 'plain.npz')
    with pytest.raises(MapError, match='stores no local features') as err:
        localization_core(plain)
    assert 'node.verification.map_features' in str(err.value)
    assert 'node.verification.enabled off' in str(err.value)
    path, _ = scene_map
    with pytest.raises(MapError, match='stores orb features'):
        localization_core(path, **{'node.verification.feature': 'sift'})


def test_replay_counts_verified_hypotheses(scene_map, tmp_path, capsys):
    path, _ = scene_map
    query = write_scene_run(tmp_path / 'query', QUERIES)
    (tmp_path / 'cam.yaml').write_text(
        'node:\n  verification: {camera_fx: 250.0, camera_fy: 250.0, camera_cx: 160.0, '
        'camera_cy: 120.0, max_features: 500}\n')
    common = ['replay', str(query), '--map', str(path), '--mode', 'localization',
              '--radius-m', '1.5', '--no-progress', '--config', str(tmp_path / 'cam.yaml')]
    assert main(common + ['--verify', '--out', str(tmp_path / 'v')]) == 0
    assert 'verified hypotheses: 6 of 6' in capsys.readouterr().out
    report = json.loads((tmp_path / 'v' / 'report.json').read_text())
    counts = report['hypothesis_verification']
    # the same verdicts as the node core gives
    verdicts = [s.hypothesis.verification for s in run_queries(localization_core(path),
                                                                QUERIES)]
    assert counts['hypotheses'] == counts['verified'] == len(QUERIES)
    assert counts['accepted'] == sum(c.accepted for c in verdicts)
    assert counts['rejected'] == sum(not c.accepted for c in verdicts)
    # the mapped place (within 1.5 m) is right; the look-alike place has no right answer
    right = sum(c.accepted and MAP[c.ref_index][2] == 1 for c in verdicts)
    assert counts['accepted_right'] == right >= 2 and counts['accepted_wrong'] == 0
    assert counts['precision_of_accepted'] == 1.0
    assert sum(counts['reasons'].values()) == len(QUERIES)
    plain = build_map(write_scene_run(tmp_path / 'ref2', MAP),
                      map_cfg(**{'node.verification.map_features': False}),
                      tmp_path / 'plain.npz')
    capsys.readouterr()
    code = main(['replay', str(query), '--map', str(plain), '--mode', 'localization',
                 '--verify', '--no-progress', '--out', str(tmp_path / 'p')])
    assert code != 0
    assert 'stores no local features' in capsys.readouterr().err


def test_live_node_verifies_hypotheses_on_a_worker_with_the_same_verdicts(scene_map):
    """Live, verdicts arrive on later steps (``hypothesis_checks``), never blocking a frame;
    they are the replay's."""
    path, _ = scene_map
    sync = [s.hypothesis.verification for s in run_queries(localization_core(path), QUERIES)]
    core = localization_core(path)
    core.verify_in_background()
    gate = core.hypothesis_verification
    assert gate.stage.threaded
    try:
        checks = [c for s in run_queries(core, QUERIES) for c in s.hypothesis_checks]
        assert gate.stage.wait_idle(30.0)
        checks += list(gate.collect())
    finally:
        gate.stage.close()
    assert [c.query_index for c in checks] == list(range(len(QUERIES)))
    assert [(c.ref_index, c.accepted, c.verification.num_inliers) for c in checks] == \
        [(c.ref_index, c.accepted, c.verification.num_inliers) for c in sync]


def test_a_slam_map_keeps_the_features_of_its_keyframes(tmp_path):
    """A map saved in slam mode with verification on holds its keyframes' features, so
    localization against it can verify."""
    cfg = map_cfg(**{'node.mode': 'slam', 'node.verification.enabled': True,
                     'node.verification.map_features': False})
    core = NodeCore(cfg, build_encoder(cfg.encoder))
    run_queries(core, QUERIES)
    refmap = load_map(core.save_map(tmp_path / 'slam.npz'))
    features = refmap.map_features()
    assert features.indices.tolist() == list(range(len(QUERIES)))
    assert refmap.manifest.get('features')['frames'] == len(QUERIES)
    stored = core.verification.stage.store.get(2)
    assert np.array_equal(features.get(2).descriptors, stored.descriptors)
    assert np.array_equal(features.get(2).keypoints, stored.keypoints)
    localization_core(refmap.path)  # accepted: the map has features


def test_no_verdict_is_not_a_rejection_in_the_messages():
    """A hypothesis whose check was dropped or found no features near the map frame stays
    'not verified' (-1) and keeps its covariance; a rejection inflates it to the least
    confident one."""
    from rosbags.typesys import Stores, get_typestore

    from vpr_seq_ros.messages.outputs import (PLACE_COLUMNS, matched_pose, place_matches,
                                              rosbags_factory)
    from vpr_seq_ros.runtime.outputs import Candidate, PlaceHypothesis
    from vpr_seq_ros.runtime.verify import HypothesisCheck
    from vpr_seq_ros.types import Pose
    from vpr_seq_ros.verification.geometry import Reason, Verification

    make = rosbags_factory(get_typestore(Stores.ROS2_HUMBLE))
    best = Candidate(4, 4 * 10**9, 1.0, 3.0, Pose(1.0, 2.0))
    status = PLACE_COLUMNS.index('status')
    variances = {}
    for reason in (Reason.MISSING_FEATURES, Reason.DROPPED, Reason.TOO_FEW_INLIERS, None):
        check = None if reason is None else HypothesisCheck(
            7, 7 * 10**9, 4, 4 * 10**9, Verification(False, reason, num_inliers=3))
        hyp = PlaceHypothesis(7, 7 * 10**9, (best,), check)
        row = place_matches(make, hyp).data
        variances[reason] = matched_pose(make, hyp, 'map').pose.covariance[0]
        expected = 0.0 if reason is Reason.TOO_FEW_INLIERS else -1.0
        assert row[status] == expected
    assert variances[Reason.MISSING_FEATURES] == variances[Reason.DROPPED] == variances[None]
    # a confident match (score 3): 2 m; contradicted by geometry: 20 times that
    assert variances[None] == pytest.approx(4.0)
    assert variances[Reason.TOO_FEW_INLIERS] == pytest.approx(4.0 * 20 ** 2)
