"""The RTAB-Map adapter's ROS-free part: node ids by stamp, link transform and information."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vpr_seq_ros.config import load_config
from vpr_seq_ros.errors import ConfigError
from vpr_seq_ros.runtime.outputs import LoopClosure
from vpr_seq_ros.runtime.rtabmap import (OPTICAL_IN_BASE, NodeStampTable, RtabmapConfig,
                                         RtabmapLinker, information_from_covariance,
                                         link_covariance, link_transform,
                                         quaternion_to_rotation, rotation_to_quaternion,
                                         so3_exp, so3_log)
from vpr_seq_ros.verification.geometry import Reason, Verification

REPO = Path(__file__).resolve().parents[1]
IDENTITY_IN_BASE = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
# the optical frame's axes in a REP-103 base frame, written out: z forward = base x,
# x right = base -y, y down = base -z
OPTICAL_AXES = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def verified(rotation: np.ndarray, translation: tuple[float, ...], covariance: np.ndarray,
             metric: bool = True) -> Verification:
    return Verification(accepted=True, reason=Reason.ACCEPTED, num_inliers=80,
                        rotation=np.asarray(rotation, np.float64),
                        translation=np.asarray(translation, np.float64), metric=metric,
                        covariance=covariance)


def closure(query_s: float, match_s: float, verification: Verification | None) -> LoopClosure:
    return LoopClosure(query_index=50, query_stamp_ns=int(round(query_s * 1e9)), match_index=3,
                       match_stamp_ns=int(round(match_s * 1e9)), distance=0.4, score=3.5,
                       streak=3, verification=verification)


# ------------------------------------------------------------------------------ node ids


def test_stamp_table_finds_the_nearest_node_within_the_tolerance():
    table = NodeStampTable(max_nodes=10)
    for node_id, stamp in ((1, 10.0), (2, 11.0), (3, 12.0)):
        assert table.add(node_id, stamp)
    tol = 50_000_000  # 50 ms
    assert table.lookup(11_030_000_000, tol) == 2
    assert table.lookup(10_980_000_000, tol) == 2
    assert table.lookup(11_500_000_000, tol) is None      # between nodes, far from both
    assert table.lookup(12_050_000_000, tol) == 3         # at the tolerance's edge
    assert table.lookup(12_050_000_001, tol) is None
    assert table.lookup(9_000_000_000, tol) is None
    assert table.newest_stamp_ns == 12_000_000_000
    # invalid ids and stamps are refused; a repeated id keeps its first stamp
    assert not table.add(0, 13.0) and not table.add(-4, 13.0) and not table.add(5, math.nan)
    assert table.add(2, 40.0) and table.lookup(40_000_000_000, tol) is None and len(table) == 3


def test_stamp_table_is_bounded_and_forgets_the_oldest_ids():
    table = NodeStampTable(max_nodes=3)
    for node_id in range(1, 7):  # ids in order, stamps out of order
        table.add(node_id, 100.0 - node_id)
    assert len(table) == 3 and table.evicted == 3
    assert [table.lookup(int((100 - i) * 1e9), 0) for i in range(1, 7)] == \
        [None, None, None, 4, 5, 6]


# ------------------------------------------------------------------------------ geometry


def test_rotation_helpers_round_trip():
    rng = np.random.default_rng(3)
    for _ in range(20):
        w = rng.normal(size=3)
        w *= rng.uniform(0.0, 3.0) / np.linalg.norm(w)
        r = so3_exp(w)
        assert np.allclose(r @ r.T, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(r), 1)
        assert np.allclose(so3_log(r), w, atol=1e-9)
        assert np.allclose(quaternion_to_rotation(rotation_to_quaternion(r)), r, atol=1e-9)
    assert np.allclose(quaternion_to_rotation(OPTICAL_IN_BASE[3:]), OPTICAL_AXES, atol=1e-12)


def test_link_transform_hand_computed_without_extrinsics():
    # query camera turned 90 degrees about z and 1 m along x in the matched camera
    t = link_transform(rot_z(math.pi / 2), np.array([1.0, 0.0, 0.0]), IDENTITY_IN_BASE)
    # the matched camera in the query's: the inverse, R^T and -R^T t = (0, 1, 0)
    assert np.allclose(t[:3, :3], rot_z(-math.pi / 2), atol=1e-12)
    assert np.allclose(t[:3, 3], [0.0, 1.0, 0.0], atol=1e-12)
    h = math.sqrt(0.5)
    assert np.allclose(rotation_to_quaternion(t[:3, :3]), (0.0, 0.0, -h, h), atol=1e-12)


def test_link_transform_of_a_forward_camera():
    # the query camera 2 m ahead along its optical axis, turned left (about base z) by 0.3 rad:
    # in optical axes a left turn is a rotation about -y
    yaw = 0.3
    r_optical = OPTICAL_AXES.T @ rot_z(yaw) @ OPTICAL_AXES
    t = link_transform(r_optical, np.array([0.0, 0.0, 2.0]))
    # the query base is 2 m ahead of the matched base and turned by +yaw, so the matched base
    # sits at (-2 cos yaw, 2 sin yaw) in the query base's frame, turned by -yaw
    assert np.allclose(t[:3, :3], rot_z(-yaw), atol=1e-12)
    assert np.allclose(t[:3, 3], [-2.0 * math.cos(yaw), 2.0 * math.sin(yaw), 0.0], atol=1e-12)


def spd(rng: np.random.Generator, scales: np.ndarray) -> np.ndarray:
    a = rng.normal(size=(6, 6)) * scales[:, None]
    return a @ a.T + np.diag(scales ** 2) * 0.1


def test_link_covariance_identity_case_is_the_covariance_itself():
    rng = np.random.default_rng(0)
    cov = spd(rng, np.full(6, 0.01))
    # T = identity: the inverse negates a perturbation, which leaves a covariance as it is
    out = link_covariance(np.eye(3), np.zeros(3), cov, IDENTITY_IN_BASE)
    assert np.allclose(out, cov, rtol=1e-6, atol=1e-12)
    # with the optical extrinsics the axes are renamed: optical z (forward) is base x, ...
    out = link_covariance(np.eye(3), np.zeros(3), np.diag([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    assert np.allclose(np.diag(out), [3.0, 1.0, 2.0, 6.0, 4.0, 5.0], rtol=1e-6)
    assert np.allclose(out - np.diag(np.diag(out)), 0, atol=1e-6)


def batch_exp(w: np.ndarray) -> np.ndarray:
    """``(N, 3, 3)`` rotations of ``(N, 3)`` rotation vectors (Rodrigues, vectorised)."""
    angle = np.linalg.norm(w, axis=1)[:, None, None]
    k = np.zeros((len(w), 3, 3))
    u = w / np.linalg.norm(w, axis=1)[:, None]
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -u[:, 2], u[:, 1], -u[:, 0]
    k -= k.transpose(0, 2, 1)
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def batch_log(r: np.ndarray) -> np.ndarray:
    """``(N, 3)`` rotation vectors of ``(N, 3, 3)`` rotations (angles in (0, pi))."""
    angle = np.arccos(np.clip((np.trace(r, axis1=1, axis2=2) - 1) / 2, -1, 1))
    vee = np.stack([r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1]],
                   axis=1)
    return vee * (angle / (2 * np.sin(angle)))[:, None]


def test_link_covariance_matches_sampled_perturbations():
    """First-order propagation against a seeded Monte Carlo of the same perturbations, the
    link transform recomputed in matrix form for every sample."""
    rng = np.random.default_rng(7)
    rotation = so3_exp(np.array([0.1, -0.4, 0.2]))
    translation = np.array([0.5, -0.2, 1.5])
    extrinsic = (0.3, -0.1, 0.8, *rotation_to_quaternion(so3_exp(np.array([-1.2, 0.2, -1.5]))))
    base_cam = np.eye(4)
    base_cam[:3, :3] = quaternion_to_rotation(extrinsic[3:])
    base_cam[:3, 3] = extrinsic[:3]
    cov = spd(rng, np.array([0.01, 0.01, 0.02, 0.002, 0.003, 0.002]))
    nominal = link_transform(rotation, translation, extrinsic)
    d = rng.multivariate_normal(np.zeros(6), cov, size=20000)
    moved = np.tile(np.eye(4), (len(d), 1, 1))  # T_match_query of each sample
    moved[:, :3, :3] = batch_exp(d[:, 3:]) @ rotation
    moved[:, :3, 3] = translation + d[:, :3]
    links = base_cam @ np.linalg.inv(moved) @ np.linalg.inv(base_cam)
    errors = np.concatenate([(links[:, :3, 3] - nominal[:3, 3]) @ nominal[:3, :3],
                             batch_log(nominal[:3, :3].T @ links[:, :3, :3])], axis=1)
    sampled = np.cov(errors.T)
    predicted = link_covariance(rotation, translation, cov, extrinsic)
    scale = np.sqrt(np.outer(np.diag(predicted), np.diag(predicted)))
    assert np.max(np.abs(sampled - predicted) / scale) < 0.05


def test_information_is_the_inverse_and_singular_covariances_are_refused():
    cov = np.diag([0.04, 0.04, 0.09, 0.01, 0.01, 0.0025])
    info = information_from_covariance(cov)
    assert np.allclose(np.diag(info), [25.0, 25.0, 1 / 0.09, 100.0, 100.0, 400.0])
    rng = np.random.default_rng(1)
    full = spd(rng, np.full(6, 0.1))
    assert np.allclose(information_from_covariance(full) @ full, np.eye(6), atol=1e-9)
    singular = np.diag([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    assert information_from_covariance(singular) is None
    assert information_from_covariance(np.diag([1.0, 1, 1, 1, 1, -1e-3])) is None
    assert information_from_covariance(np.diag([1.0, 1, 1, 1, 1, 1e-13])) is None
    assert information_from_covariance(np.full((6, 6), np.nan)) is None
    assert information_from_covariance(np.eye(3)) is None


# ------------------------------------------------------------------------------ the linker


def linker(**overrides: object) -> RtabmapLinker:
    return RtabmapLinker(RtabmapConfig(enabled=True, **overrides))


COV = np.diag([0.01, 0.01, 0.04, 0.001, 0.001, 0.001])


def test_linker_maps_stamps_to_ids_and_builds_the_link():
    lk = linker(camera_in_base=IDENTITY_IN_BASE)
    assert lk.add_nodes([(7, 100.0), (8, 101.0), (42, 160.02)]) == []
    [link] = lk.add_closures([closure(160.0, 101.01, verified(rot_z(0.5), (1.0, 2.0, 0.0),
                                                                 COV))])
    assert (link.from_id, link.to_id, link.type) == (42, 8, 1)
    inverse = rot_z(-0.5)
    assert np.allclose(quaternion_to_rotation(link.rotation), inverse, atol=1e-12)
    assert np.allclose(link.translation, -inverse @ np.array([1.0, 2.0, 0.0]), atol=1e-12)
    info = np.array(link.information).reshape(6, 6)
    expected = np.linalg.inv(link_covariance(rot_z(0.5), np.array([1.0, 2.0, 0.0]), COV,
                                             IDENTITY_IN_BASE))
    assert np.allclose(info, expected, rtol=1e-9) and np.allclose(info, info.T)
    assert link.metric and lk.counts['built'] == 1


def test_linker_waits_for_the_query_node_then_sends():
    lk = linker(link_type='user_closure')
    lk.add_nodes([(1, 10.0), (2, 11.0)])
    good = verified(np.eye(3), (0.0, 0.0, 1.0), COV)
    assert lk.add_closures([closure(20.0, 10.0, good)]) == []
    assert lk.counts['pending'] == 1
    assert lk.add_nodes([(3, 15.0)]) == []          # not yet
    [link] = lk.add_nodes([(4, 20.01)])             # RTAB-Map reaches the query's stamp
    assert (link.from_id, link.to_id, link.type) == (4, 1, 4)
    assert lk.counts['pending'] == 0 and lk.counts['no_node'] == 0


def test_linker_counts_what_it_cannot_send():
    lk = linker(max_pending=1)
    lk.add_nodes([(1, 10.0), (2, 30.0)])
    good = verified(np.eye(3), (0.0, 0.0, 1.0), COV)
    assert lk.add_closures([
        closure(30.0, 5.0, good),                                    # no node at the match
        closure(20.0, 10.0, good),                                   # RTAB-Map is past 20 s
        closure(30.0, 30.01, good),                                  # both stamps: one node
        closure(30.0, 10.0, None),                                   # verification off
        closure(30.0, 10.0, verified(np.eye(3), (0.0, 0.0, 1.0), COV, metric=False)),
        closure(30.0, 10.0, verified(np.eye(3), (0.0, 0.0, 1.0), np.zeros((6, 6)))),
        closure(40.0, 10.0, good), closure(41.0, 10.0, good),       # pending, one dropped
    ]) == []
    assert {k: v for k, v in lk.counts.items() if v} == {
        'no_node': 3, 'no_pose': 1, 'not_metric': 1, 'bad_covariance': 1,
        'pending_dropped': 1, 'pending': 1}
    # with metric_only off a unit-direction closure is sent
    lk = linker(metric_only=False)
    lk.add_nodes([(1, 10.0), (2, 30.0)])
    [link] = lk.add_closures([closure(30.0, 10.0, verified(np.eye(3), (0.0, 0.0, 1.0), COV,
                                                             metric=False))])
    assert not link.metric and np.allclose(link.translation, [-1.0, 0.0, 0.0], atol=1e-12)


def test_configuration_keys_are_checked():
    cfg = load_config(overrides={'node.rtabmap.enabled': True,
                                 'node.rtabmap.camera_in_base': [0, 0, 0.5, 0, 0, 0, 1],
                                 'node.rtabmap.stamp_tolerance_s': 0.1})
    assert cfg.node.rtabmap.enabled and cfg.node.rtabmap.camera_in_base[2] == 0.5
    assert not load_config().node.rtabmap.enabled  # off by default
    for key, value, words in (('link_type', 'loop', 'not one of'),
                              ('camera_in_base', [0, 0, 0, 0, 0, 0, 2], 'unit quaternion'),
                              ('camera_in_base', [0, 0, 0, 1], 'unit quaternion'),
                              ('stamp_tolerance_s', -1.0, '>= 0'),
                              ('max_nodes', 0, '>= 1')):
        with pytest.raises(ConfigError, match=words):
            load_config(overrides={f'node.rtabmap.{key}': value})


def test_the_adapter_core_imports_no_ros():
    code = ('import sys, vpr_seq_ros.config, vpr_seq_ros.runtime.rtabmap; '
            'print(sorted(m for m in sys.modules if m.split(".")[0] in '
            '("rclpy", "rtabmap_msgs") or m == "vpr_seq_ros.ros.rtabmap"))')
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == '[]'
