"""The ROS-free node core: localization, slam loop closures, gating, time jumps, map saving."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vpr_seq_ros.config import load_config, replace
from vpr_seq_ros.encoders.identity import IdentityEncoder
from vpr_seq_ros.errors import ConfigError, MapError
from vpr_seq_ros.matching.seqmatch import SeqMatchSettings, seqmatch_batch
from vpr_seq_ros.refmap import ReferenceMap, load_map, make_manifest
from vpr_seq_ros.runtime.core import NodeCore
from vpr_seq_ros.runtime.store import keyframe_bytes
from vpr_seq_ros.types import EncodedRun, Frame, Pose


def route_descriptors(n: int, d: int = 24, seed: int = 0) -> np.ndarray:
    """A smooth random walk in descriptor space: neighbouring places look alike."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(size=(n, d))
    walk = np.cumsum(steps, axis=0) / 3.0
    return walk.astype(np.float32)


def make_map(descs: np.ndarray) -> ReferenceMap:
    n = len(descs)
    poses = np.stack([np.arange(n, dtype=float), np.zeros(n), np.zeros(n), np.zeros(n)], 1)
    run = EncodedRun(descs, np.arange(n, dtype=np.int64) * 100_000_000, poses,
                     np.zeros(n, np.int64))
    return ReferenceMap(run, make_manifest({'name': 'npy'}, 5, 'test', 'float32', n,
                                           descs.shape[1]))


def cfg_for(mode='localization', **dotted):
    overrides = {'encoder.name': 'npy', 'node.mode': mode, 'sequence.length': 5,
                 'matching.top_k': 3, **dotted}
    return load_config(overrides=overrides)


def frames_of(descs, start_ns=5_000_000_000, step_ns=100_000_000):
    return [Frame(index=i, stamp_ns=start_ns + i * step_ns, descriptor=d)
            for i, d in enumerate(descs)]


def test_localization_equals_batch_seqmatch():
    ref = route_descriptors(60)
    rng = np.random.default_rng(1)
    query = ref[10:40] + 0.3 * rng.normal(size=(30, ref.shape[1])).astype(np.float32)
    core = NodeCore(cfg_for(), IdentityEncoder(), make_map(ref))
    batch = seqmatch_batch(ref, query, SeqMatchSettings(length=5), top_k=3)
    for j, frame in enumerate(frames_of(query)):
        step = core.on_frame(frame)
        assert step.keyframe
        if j < 4:
            assert step.hypothesis is None
            continue
        got = [c.ref_index for c in step.hypothesis.candidates]
        assert got == list(batch.matches.ref_indices[j])
        best = step.hypothesis.best
        assert best.pose.x == best.ref_index  # reference poses come through
        assert best.ref_stamp_ns == best.ref_index * 100_000_000
        assert best.score > 0
    assert core.diagnostics.keyframes == 30 and core.diagnostics.hypotheses == 26
    assert core.diagnostics.map_size == 60


def test_localization_needs_a_matching_map():
    with pytest.raises(ConfigError, match='map'):
        NodeCore(cfg_for(), IdentityEncoder(), None)
    refmap = make_map(route_descriptors(10))
    other = ReferenceMap(refmap.run, dataclasses.replace(refmap.manifest,
                                                        encoder={'name': 'patchnorm'}))
    with pytest.raises(MapError, match='name'):
        NodeCore(cfg_for(), IdentityEncoder(), other)
    core = NodeCore(cfg_for(), IdentityEncoder(), refmap)
    with pytest.raises(MapError, match='read-only'):
        core.save_map('x.npz')


def test_time_jump_backwards_resets_the_buffer():
    ref = route_descriptors(40)
    core = NodeCore(cfg_for(), IdentityEncoder(), make_map(ref))
    frames = frames_of(ref[:8])
    steps = [core.on_frame(f) for f in frames]
    assert steps[-1].hypothesis is not None and not any(s.reset for s in steps)
    restarted = Frame(index=0, stamp_ns=frames[0].stamp_ns - 1, descriptor=ref[0])
    step = core.on_frame(restarted)
    assert step.reset and step.hypothesis is None
    for i in range(1, 5):
        step = core.on_frame(Frame(i, restarted.stamp_ns + i, descriptor=ref[i]))
    assert step.hypothesis is not None and step.hypothesis.best.ref_index == 4
    assert core.diagnostics.resets == 1


def test_keyframe_gating_by_odometry_distance_and_by_time():
    ref = route_descriptors(40)
    core = NodeCore(cfg_for(**{'node.keyframe.min_distance_m': 2.0}), IdentityEncoder(),
                    make_map(ref))
    kept = []
    for i, f in enumerate(frames_of(ref[:20])):
        core.on_odometry(f.stamp_ns, Pose(0.5 * i, 0.0))  # 0.5 m per frame
        kept.append(core.on_frame(f).keyframe)
    assert kept == [i % 4 == 0 for i in range(20)]
    assert core.diagnostics.frames_skipped_gating == 15
    core = NodeCore(cfg_for(**{'node.keyframe.min_interval_s': 0.25}), IdentityEncoder(),
                    make_map(ref))
    kept = [core.on_frame(f).keyframe for f in frames_of(ref[:10])]  # 0.1 s apart
    assert kept == [i % 3 == 0 for i in range(10)]


def test_slam_finds_the_loop_and_respects_exclusions(tmp_path):
    # Drive a 50-place loop twice: the second lap must close onto the first, and no candidate
    # may come from the last 30 s (recent keyframes are the most similar ones).
    loop = route_descriptors(50, seed=3)
    rng = np.random.default_rng(4)
    lap2 = loop + 0.2 * rng.normal(size=loop.shape).astype(np.float32)
    descs = np.concatenate([loop, lap2])
    cfg = cfg_for('slam', **{'node.loop_closure.exclude_recent_s': 3.0,
                             'node.loop_closure.min_streak': 3,
                             'node.loop_closure.max_distance': 3.0})
    core = NodeCore(cfg, IdentityEncoder())
    closures = []
    for f in frames_of(descs):
        step = core.on_frame(f)
        if step.hypothesis is not None:
            for c in step.hypothesis.candidates:
                assert step.stamp_ns - c.ref_stamp_ns >= 3_000_000_000
        closures.extend(step.loop_closures)
    assert len(closures) >= 40
    assert all(c.query_index - c.match_index == 50 for c in closures)
    assert all(c.streak >= 3 for c in closures)
    first = min(c.query_index for c in closures)
    assert 50 + 4 + 2 <= first <= 50 + 10  # needs a full window, then a streak of 3
    path = core.save_map(tmp_path / 'slam.npz')
    saved = load_map(path)
    assert len(saved) == 100 and saved.manifest.source == 'slam'


def test_slam_threshold_rejects_far_matches():
    descs = route_descriptors(80, seed=5)  # never revisits a place
    cfg = cfg_for('slam', **{'node.loop_closure.exclude_recent_s': 1.0,
                             'node.loop_closure.max_distance': 0.5})
    core = NodeCore(cfg, IdentityEncoder())
    assert not any(core.on_frame(f).loop_closures for f in frames_of(descs))


@pytest.mark.parametrize('method', ['single', 'seqgem'])
def test_other_methods_stream(method):
    ref = np.abs(route_descriptors(40, seed=6))
    core = NodeCore(cfg_for(**{'matching.method': method}), IdentityEncoder(), make_map(ref))
    steps = [core.on_frame(f) for f in frames_of(ref[10:30])]
    first = 0 if method == 'single' else 4
    assert steps[first].hypothesis is not None
    hits = [s.hypothesis.best.ref_index == 10 + i for i, s in enumerate(steps) if s.hypothesis]
    assert np.mean(hits) > 0.9


def test_slam_min_score_and_metres_exclusion_without_odometry():
    loop = route_descriptors(50, seed=3)
    rng = np.random.default_rng(4)
    descs = np.concatenate([loop, loop + 0.2 * rng.normal(size=loop.shape).astype(np.float32)])
    counts = {}
    for min_score in (0.0, 2.0):
        # exclude_recent_m is set but no odometry arrives: it must not mask every candidate
        cfg = cfg_for('slam', **{'node.loop_closure.exclude_recent_s': 3.0,
                                 'node.loop_closure.exclude_recent_m': 30.0,
                                 'node.loop_closure.min_score': min_score})
        core = NodeCore(cfg, IdentityEncoder())
        closures = [c for f in frames_of(descs) for c in core.on_frame(f).loop_closures]
        assert all(c.score >= min_score for c in closures)
        counts[min_score] = closures
    assert len(counts[0.0]) > len(counts[2.0]) > 0
    assert all(c.query_index - c.match_index == 50 for c in counts[2.0])


def test_slam_a_run_played_twice_closes_onto_its_first_pass():
    # A bag played twice in a row: the second pass restarts time. The first pass's keyframes
    # belong to an earlier session and stay matchable although their stamps are "recent";
    # within the second session the time exclusion still holds.
    lap = route_descriptors(60, seed=8)
    cfg = cfg_for('slam', **{'node.loop_closure.exclude_recent_s': 3.0,
                             'node.loop_closure.max_distance': 3.0})
    core = NodeCore(cfg, IdentityEncoder())
    frames = frames_of(lap)
    first = [core.on_frame(f) for f in frames]
    assert not any(s.loop_closures for s in first) and not any(s.reset for s in first)
    second = [core.on_frame(f) for f in frames]
    assert second[0].reset and core.diagnostics.sessions == 2
    closures = [c for s in second for c in s.loop_closures]
    assert len(closures) >= 50
    assert all(c.query_index - c.match_index == 60 for c in closures)
    assert all(c.query_stamp_ns == c.match_stamp_ns for c in closures)
    for step in second:
        for c in step.hypothesis.candidates if step.hypothesis else ():
            if c.ref_index >= 60:  # a keyframe of the current session
                assert step.stamp_ns - c.ref_stamp_ns >= 3_000_000_000
    assert core.num_keyframes == 120 and core.diagnostics.map_size == 120


def test_slam_path_exclusion_across_a_restart_ignores_the_jump_back():
    lap = route_descriptors(40, seed=9)
    cfg = cfg_for('slam', **{'node.loop_closure.exclude_recent_s': 0.0,
                             'node.loop_closure.exclude_recent_m': 30.0,
                             'node.loop_closure.max_distance': 3.0})
    core = NodeCore(cfg, IdentityEncoder())
    closures = []
    for _ in range(2):
        for i, f in enumerate(frames_of(lap)):
            core.on_odometry(f.stamp_ns, Pose(float(i), 0.0))  # 1 m per frame
            step = core.on_frame(f)
            closures += step.loop_closures
            for c in step.hypothesis.candidates if step.hypothesis else ():
                assert core.store.path_m[step.hypothesis.query_index] - \
                    core.store.path_m[c.ref_index] >= 30.0
    # 39 m per pass; the jump back to the start pose is not path
    np.testing.assert_allclose(core.store.path_m[[39, 40, 79]], [39.0, 39.0, 78.0])
    assert len(closures) >= 30 and all(c.query_index - c.match_index == 40 for c in closures)


def test_slam_keyframe_bound_stops_storing_but_keeps_matching(caplog, tmp_path):
    loop = route_descriptors(50, seed=3)
    rng = np.random.default_rng(4)
    descs = np.concatenate([loop, loop + 0.2 * rng.normal(size=loop.shape).astype(np.float32)])
    cfg = cfg_for('slam', **{'node.loop_closure.exclude_recent_s': 3.0,
                             'node.loop_closure.max_distance': 1.5,
                             'node.keyframe.max_keyframes': 30})
    core = NodeCore(cfg, IdentityEncoder())
    with caplog.at_level('WARNING', logger='vpr_seq_ros.runtime.store'):
        closures = [c for f in frames_of(descs) for c in core.on_frame(f).loop_closures]
    assert len(core.store) == 30 and core.diagnostics.map_size == 30
    assert core.diagnostics.keyframes_not_stored == 70 and core.num_keyframes == 100
    assert sum('max_keyframes' in r.getMessage() for r in caplog.records) == 1
    # the second lap still closes onto the stored first 30 places; indices keep their meaning
    assert len(closures) >= 20
    assert all(c.query_index - c.match_index == 50 and c.match_index < 30 for c in closures)
    np.testing.assert_array_equal(load_map(core.save_map(tmp_path / 'm.npz')).run.descriptors,
                                  descs[:30])
    d = descs.shape[1]
    assert core.store.nbytes == 30 * keyframe_bytes(d) == 30 * (4 * d + 61)
    core.cfg = replace(cfg, **{'node.keyframe.max_keyframes': 0})  # a run-time change
    core.on_frame(Frame(100, 20_000_000_000, descriptor=descs[0]))
    assert len(core.store) == 31


def test_slam_search_radius_keeps_only_candidates_near_the_pose():
    # A street whose second half repeats its first (places k and k + 25 look alike), driven
    # twice with poses x = place (metres): appearance alone closes onto the look-alike half too;
    # with a 5 m search radius every candidate, and so every closure, is within 5 m.
    half = route_descriptors(25, seed=11)
    rng = np.random.default_rng(12)
    street = np.concatenate([half, half + 0.05 * rng.normal(size=half.shape).astype(np.float32)])
    lap2 = street + 0.05 * rng.normal(size=street.shape).astype(np.float32)
    descs = np.concatenate([street, lap2])
    place = np.concatenate([np.arange(50.0), np.arange(50.0)])
    results = {}
    for radius in (0.0, 5.0):
        cfg = cfg_for('slam', **{'node.loop_closure.exclude_recent_s': 3.0,
                                 'node.loop_closure.min_streak': 1,
                                 'node.loop_closure.search_radius_m': radius})
        core = NodeCore(cfg, IdentityEncoder())
        closures = []
        for f, x in zip(frames_of(descs), place):
            core.on_odometry(f.stamp_ns, Pose(float(x), 0.0))
            step = core.on_frame(f)
            for c in step.hypothesis.candidates if radius and step.hypothesis else ():
                assert abs(c.pose.x - x) <= 5.0
            closures += step.loop_closures
        results[radius] = [abs(place[c.query_index] - place[c.match_index]) for c in closures]
    assert max(results[0.0]) >= 20, 'the look-alike half should fool appearance alone'
    assert len(results[5.0]) >= 40 and max(results[5.0]) <= 5.0


def test_slam_search_radius_ignores_keyframes_without_a_pose():
    loop = route_descriptors(30, seed=13)
    descs = np.concatenate([loop, loop])
    cfg = cfg_for('slam', **{'node.loop_closure.exclude_recent_s': 3.0,
                             'node.loop_closure.min_streak': 1,
                             'node.loop_closure.search_radius_m': 1.0})
    core = NodeCore(cfg, IdentityEncoder())  # no odometry, frames without poses
    closures = [c for f in frames_of(descs) for c in core.on_frame(f).loop_closures]
    assert len(closures) >= 20 and {c.query_index - c.match_index for c in closures} == {30}
