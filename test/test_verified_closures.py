"""Loop closures verified geometrically inside the node core, as replay and the node run it."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip('cv2')

from verification_scene import render, rotation_y  # noqa: E402

from vpr_seq_ros.config import load_config  # noqa: E402
from vpr_seq_ros.encoders.identity import IdentityEncoder  # noqa: E402
from vpr_seq_ros.runtime.core import NodeCore  # noqa: E402
from vpr_seq_ros.types import Frame, Pose  # noqa: E402

K = np.array([[120.0, 0, 80], [0, 120.0, 60], [0, 0, 1]])


class ThumbnailEncoder(IdentityEncoder):
    """A 16x12 thumbnail of the image as the descriptor: appearance matching that is fooled
    by a place with the same layout and another texture."""

    name = 'thumbnail'
    input_kind = 'image'

    def encode(self, batch):  # type: ignore[override]
        import cv2

        out = [cv2.resize(np.asarray(img, np.float32), (16, 12)).ravel() for img in batch]
        return np.stack(out).astype(np.float32)


def frames(places: list[tuple[float, int]]) -> list[Frame]:
    """One rendered frame per (x position, texture seed), 1 s apart."""
    out = []
    for i, (x, seed) in enumerate(places):
        grey, _ = render(rotation_y(4.0 * x), np.array([x, 0.0, 0.0]), K, (160, 120), seed)
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
        out.append(Frame(index=i, stamp_ns=(i + 1) * 10**9, image=rgb,
                         pose=Pose(x, float(seed), 0.0, 0.0)))
    return out


def slam_cfg(verify: bool):
    return load_config(overrides={
        'node.mode': 'slam', 'matching.method': 'single', 'node.loop_closure.min_streak': 1,
        'node.loop_closure.exclude_recent_s': 5.0, 'node.verification.enabled': verify,
        'node.verification.camera_fx': 120.0, 'node.verification.camera_fy': 120.0,
        'node.verification.camera_cx': 80.0, 'node.verification.camera_cy': 60.0,
        'node.verification.max_features': 500, 'node.verification.candidates': 1})


def run_core(verify: bool, seq: list[Frame]):
    core = NodeCore(slam_cfg(verify), ThumbnailEncoder())
    steps = [core.on_frame(f) for f in seq]
    return core, steps


def test_true_revisits_pass_and_a_look_alike_place_is_rejected():
    xs = [-0.6, -0.3, 0.0, 0.3, 0.6, 0.9]
    # pass one through the scene (texture 0), a look-alike scene (texture 7) with the same
    # geometry, then pass two through the first scene
    seq = frames([(x, 0) for x in xs] + [(x, 7) for x in xs] + [(x + 0.02, 0) for x in xs])
    _, plain = run_core(False, seq)
    core, verified = run_core(True, seq)
    appearance = [c for s in plain for c in s.loop_closures]
    published = [c for s in verified for c in s.loop_closures]
    rejected = [r for s in verified for r in s.rejected]
    assert len(appearance) == len(published) + len(rejected)
    # every published closure joins two views of the same scene (y is the texture seed; all
    # views of one scene overlap, so any pair of them is a true geometric match)
    poses = {i: f.pose for i, f in enumerate(seq)}
    for c in published:
        assert poses[c.query_index].y == poses[c.match_index].y
        v = c.verification
        assert v.accepted and v.num_inliers >= 20 and v.rotation.shape == (3, 3)
        assert v.covariance.shape == (6, 6)
    assert len(published) >= 4
    # the look-alike scene fools appearance but not geometry
    wrong = [c for c in appearance if poses[c.query_index].y != poses[c.match_index].y]
    assert wrong, 'the test needs appearance closures between the two scenes'
    assert all(poses[r.closure.query_index].y != poses[r.closure.match_index].y
               for r in rejected)
    assert len(rejected) >= len(wrong)
    diag = core.diagnostics.as_dict()
    assert diag['loop_closures_rejected'] == len(rejected)
    assert diag['verification.accepted'] >= len(published)


def test_descriptor_keyframes_cannot_be_verified_and_say_so(caplog):
    core = NodeCore(slam_cfg(True), IdentityEncoder())
    rng = np.random.default_rng(0)
    for i in range(3):
        core.on_frame(Frame(index=i, stamp_ns=(i + 1) * 10**9,
                            descriptor=rng.normal(size=8).astype(np.float32)))
    assert core.verification.unverifiable == 3
    assert 'needs images' in caplog.text


def test_verified_closures_in_the_messages_a_back_end_reads():
    """The table rows (verified and rejected), the LIO-SAM pair for verified ones only, and the
    relative pose with its covariance, serialised as CDR like the result bag does."""
    from rosbags.typesys import Stores, get_typestore

    from vpr_seq_ros.messages.outputs import (LOOP_COLUMNS, TOPIC_LOOP_CLOSURE,
                                              TOPIC_LOOP_CLOSURE_POSE, TOPIC_LOOP_CLOSURES,
                                              rosbags_factory, step_messages)

    xs = [-0.6, -0.3, 0.0, 0.3, 0.6, 0.9]
    seq = frames([(x, 0) for x in xs] + [(x, 7) for x in xs] + [(x + 0.02, 0) for x in xs])
    _, steps = run_core(True, seq)
    store = get_typestore(Stores.ROS2_HUMBLE)
    make = rosbags_factory(store)
    pairs = poses = rows = 0
    for step in steps:
        for out in step_messages(make, step, 'map', verifying=True):
            data = store.deserialize_cdr(store.serialize_cdr(out.msg, out.typename),
                                         out.typename)
            if out.topic == TOPIC_LOOP_CLOSURE:
                pairs += 1
            elif out.topic == TOPIC_LOOP_CLOSURE_POSE:
                poses += 1
                q = data.pose.pose.orientation
                assert abs(q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2 - 1) < 1e-6
                cov = data.pose.covariance.reshape(6, 6)
                assert np.allclose(cov, cov.T) and np.all(np.diag(cov) > 0)
            elif out.topic == TOPIC_LOOP_CLOSURES:
                table = data.data.reshape(-1, len(LOOP_COLUMNS))
                status = table[:, LOOP_COLUMNS.index('status')]
                inliers = table[:, LOOP_COLUMNS.index('inliers')]
                assert set(status) <= {0.0, 1.0}
                assert np.all(inliers[status == 1] >= 20)
                rows += len(table)
    published = sum(len(s.loop_closures) for s in steps)
    rejected = sum(len(s.rejected) for s in steps)
    assert pairs == published and poses == sum(bool(s.loop_closures) for s in steps)
    assert rows == published + rejected and rejected > 0


def test_replay_reports_closures_before_and_after_verification(tmp_path):
    """The same rendered run through replay (an image folder with poses): closure counts,
    precision and recall before and after verification, and the curve over the inliers."""
    import csv
    import json

    from PIL import Image

    from vpr_seq_ros.cli import main

    xs = [-0.6, -0.3, 0.0, 0.3, 0.6, 0.9]
    seq = frames([(x, 0) for x in xs] + [(x, 7) for x in xs] + [(x + 0.02, 0) for x in xs])
    folder = tmp_path / 'run'
    folder.mkdir()
    with open(folder / 'frames.csv', 'w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(['name', 'stamp_ns', 'x', 'y'])
        for f in seq:  # scenes 100 m apart: a closure between them is false
            Image.fromarray(f.image).save(folder / f'{f.index:03d}.png')
            writer.writerow([f'{f.index:03d}.png', f.stamp_ns, f.pose.x, 100.0 * f.pose.y])
    common = ['replay', str(folder), '--mode', 'slam', '--method', 'single', '--min-streak',
              '1', '--exclude-recent-s', '5', '--radius-m', '2', '--no-progress']
    camera = ['--config', str(tmp_path / 'cam.yaml')]
    (tmp_path / 'cam.yaml').write_text(
        'node:\n  verification: {camera_fx: 120.0, camera_fy: 120.0, camera_cx: 80.0, '
        'camera_cy: 60.0, candidates: 1, max_features: 500}\n')
    assert main(common + camera + ['--verify', '--out', str(tmp_path / 'v')]) == 0
    report = json.loads((tmp_path / 'v' / 'report.json').read_text())
    before, after = report['before_verification'], report['after_verification']
    assert report['loop_closure_candidates'] == before['closures_scored'] > 0
    assert after['false'] == 0 and before['false'] > 0
    assert after['precision'] == 1.0 and report['loop_closures_rejected'] >= before['false']
    curve = report['verification_pr_curve']
    assert curve['precision'][-1] == pytest.approx(before['precision'])  # lowest threshold
    assert curve['max_recall_at_precision_1'] >= after['recall_of_revisits']
