"""Sequence-method plugins: one registry; streaming (node core) equals batch for every method,
and for a toy method registered inside the test."""

from __future__ import annotations

import dataclasses

import re
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vpr_seq_ros.config import load_config
from vpr_seq_ros.encoders.identity import IdentityEncoder
from vpr_seq_ros.errors import ConfigError, MatchingError
from vpr_seq_ros.matching import method_class, method_names, register_method, unregister_method
from vpr_seq_ros.matching.methods import build_method, match_runs
from vpr_seq_ros.matching.methods.base import (MatchOutput, References, SequenceMethod,
                                               StreamingMatcher)
from vpr_seq_ros.matching.windows import window_starts
from vpr_seq_ros.pipeline import evaluate_encoded
from vpr_seq_ros.refmap import ReferenceMap, load_map, make_manifest, save_map
from vpr_seq_ros.runtime.core import NodeCore
from vpr_seq_ros.types import EncodedRun, Frame, Matches

PACKAGE = Path(__file__).resolve().parents[1] / 'vpr_seq_ros'


def walk(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    """A smooth random walk in descriptor space, folded positive (SeqGeM clamps at 1e-6)."""
    rng = np.random.default_rng(seed)
    return np.abs(np.cumsum(rng.normal(size=(n, d)), axis=0) / 3.0).astype(np.float32)


def make_map(descs: np.ndarray, segments: np.ndarray | None = None) -> ReferenceMap:
    n = len(descs)
    poses = np.stack([np.arange(n, dtype=float), np.zeros(n), np.zeros(n), np.zeros(n)], 1)
    run = EncodedRun(descs, np.arange(n, dtype=np.int64) * 100_000_000, poses,
                     np.zeros(n, np.int64) if segments is None else segments)
    return ReferenceMap(run, make_manifest({'name': 'npy'}, 4, 'test', 'float32', n,
                                           descs.shape[1]))


def query_run(descs: np.ndarray) -> EncodedRun:
    n = len(descs)
    return EncodedRun(descs, 10**10 + np.arange(n, dtype=np.int64) * 10**8, None,
                      np.zeros(n, np.int64))


def frames_of(descs: np.ndarray, start_ns: int = 10**10,
              step_ns: int = 10**8) -> list[Frame]:
    return [Frame(index=i, stamp_ns=start_ns + i * step_ns, descriptor=d)
            for i, d in enumerate(descs)]


def cfg_for(method: str, mode: str = 'localization', **dotted: Any):
    return load_config(overrides={'encoder.name': 'npy', 'node.mode': mode,
                                  'matching.method': method, 'sequence.length': 4,
                                  'matching.top_k': 5, **dotted})


def assert_stream_equals_batch(steps: list, batch: Matches) -> None:
    """Node-core hypotheses equal the batch trailing top-K: same indices, same distances."""
    assert len(steps) == len(batch.valid)
    for j, step in enumerate(steps):
        if not batch.valid[j]:
            assert step.hypothesis is None, j
            continue
        cands = step.hypothesis.candidates
        finite = np.isfinite(batch.distances[j])
        assert [c.ref_index for c in cands] == list(batch.ref_indices[j][finite]), j
        np.testing.assert_allclose([c.distance for c in cands], batch.distances[j][finite],
                                   rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------ a toy method
class MeanPoolCosine(SequenceMethod):
    """Toy: mean of the window's frame descriptors, cosine distance (1 - cos)."""

    name = 'toy-meanpool'

    def __init__(self, length: int) -> None:
        self.length = length

    @classmethod
    def from_config(cls, cfg, learnt_seqgem_p=None) -> MeanPoolCosine:
        return cls(cfg.sequence.length)

    @property
    def window_length(self) -> int:
        return self.length

    def pooled(self, frames: np.ndarray, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        starts, valid = window_starts(segments, self.length, 'trailing')
        out = np.zeros(frames.shape, np.float64)
        for i in np.flatnonzero(valid):
            out[i] = frames[starts[i]:i + 1].mean(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12), valid

    def batch(self, ref: EncodedRun, query: EncodedRun, top_k: int,
              keep_matrix: bool) -> MatchOutput:
        r, r_valid = self.pooled(ref.descriptors, ref.segments)
        q, q_valid = self.pooled(query.descriptors, query.segments)
        dist = 1.0 - r @ q.T
        dist[~r_valid] = np.inf
        dist[:, ~q_valid] = np.inf
        order = np.argsort(dist, axis=0, kind='stable')[:top_k].T
        values = np.take_along_axis(dist.T, order, axis=1)
        order[~np.isfinite(values)] = -1
        return MatchOutput(Matches(order, values, q_valid.copy()), r_valid,
                           dist if keep_matrix else None)

    def stream(self, references: References) -> StreamingMatcher:
        return MeanPoolStream(self, references)


class MeanPoolStream(StreamingMatcher):
    """Reads the references from the store at every push (no state of its own)."""

    def __init__(self, method: MeanPoolCosine, references: References) -> None:
        self.method, self.refs = method, references
        self.window: list[np.ndarray] = []
        self.segment: int | None = None

    @property
    def num_frames(self) -> int:
        return len(self.window)

    def reset(self) -> None:
        self.window, self.segment = [], None

    def push(self, descriptor: np.ndarray, segment: int = 0) -> np.ndarray | None:
        if segment != self.segment:
            self.reset()
        self.segment = segment
        self.window = (self.window + [descriptor])[-self.method.length:]
        if len(self.window) < self.method.length:
            return None
        r, r_valid = self.method.pooled(self.refs.descriptors, self.refs.segments)
        q = np.mean(self.window, axis=0)
        dist = 1.0 - r @ (q / np.linalg.norm(q))
        dist[~r_valid] = np.inf
        return dist


@pytest.fixture
def toy_method():
    register_method(MeanPoolCosine.name, MeanPoolCosine)
    yield MeanPoolCosine.name
    unregister_method(MeanPoolCosine.name)


def test_a_toy_method_runs_through_evaluate_and_the_node_core(toy_method):
    assert toy_method in method_names()
    ref = walk(60, seed=1)
    ref_segments = np.repeat([0, 1], [35, 25])
    refmap = make_map(ref, ref_segments)
    rng = np.random.default_rng(2)
    query = ref + 0.2 * rng.normal(size=ref.shape).astype(np.float32)
    cfg = cfg_for(toy_method, **{'evaluation.recall_at': [1, 5]})
    evaluation = evaluate_encoded(refmap, query_run(query), cfg)
    assert evaluation.report['method'] == toy_method and evaluation.report['seq_len'] == 4
    assert evaluation.metrics.recall_at[1] > 0.8  # same-index ground truth
    batch = evaluation.output.matches
    assert not batch.valid[:3].any() and batch.valid[3:].all()
    core = NodeCore(cfg, IdentityEncoder(), refmap)
    assert_stream_equals_batch([core.on_frame(f) for f in frames_of(query)], batch)
    # and in slam mode, over its own growing keyframe store: a second lap closes the loop
    lap = walk(40, seed=3)
    slam = NodeCore(cfg_for(toy_method, 'slam', **{'node.loop_closure.exclude_recent_s': 1.0,
                                                   'node.loop_closure.min_score': 2.0}),
                    IdentityEncoder())
    laps = np.concatenate([lap, lap + 0.05 * rng.normal(size=lap.shape).astype(np.float32)])
    closures = [c for f in frames_of(laps) for c in slam.on_frame(f).loop_closures]
    assert closures and all(c.query_index - c.match_index == 40 for c in closures)


def test_a_toy_method_runs_through_replay_as_in_batch(toy_method, two_runs, tmp_path):
    from vpr_seq_ros.bagwrite import images_to_bag
    from vpr_seq_ros.encoders import build_encoder
    from vpr_seq_ros.pipeline import build_map, encode_run
    from vpr_seq_ros.replay import replay
    from vpr_seq_ros.sources import open_source

    ref, query = two_runs
    cfg = load_config(overrides={'source.image_topic': '/camera/image_raw',
                                 'matching.method': toy_method, 'sequence.length': 4,
                                 'matching.top_k': 5})
    refmap = load_map(build_map(ref, cfg, tmp_path / 'map.npz'))
    bag = images_to_bag(query, tmp_path / 'query_bag')
    result = replay(bag, cfg, refmap)
    assert result.report['method'] == toy_method and result.report['seq_len'] == 4
    encoded = encode_run(open_source(bag, cfg.source), build_encoder(cfg.encoder))
    batch = evaluate_encoded(refmap, encoded, cfg).output.matches
    assert_stream_equals_batch(result.steps, batch)
    assert batch.valid.sum() == 27


def test_the_configuration_validates_methods_against_the_registry(toy_method):
    assert load_config(overrides={'matching.method': toy_method}).matching.method == toy_method
    assert method_class(toy_method) is MeanPoolCosine
    with pytest.raises(ConfigError, match='already registered'):
        register_method('seqgem', MeanPoolCosine)
    unregister_method(toy_method)
    with pytest.raises(ConfigError, match='single, seqmatch, seqgem'):
        load_config(overrides={'matching.method': toy_method})


# ------------------------------------------------------------------------------ every method
VARIANTS = [(name, {}) for name in method_names()] + [
    ('seqmatch', {'matching.distance': 'sad', 'matching.contrast.enabled': True,
                  'matching.contrast.window': 5}),
    ('seqmatch', {'matching.slopes': [0.5, 1.0, 2.0]}),
    ('single', {'matching.distance': 'sad'}),
    ('seqgem', {'matching.seqgem_p': 1.5}),
]


@pytest.mark.parametrize('method, changes', VARIANTS,
                         ids=[f'{m}-{i}' for i, (m, _) in enumerate(VARIANTS)])
def test_localization_stream_equals_batch_for_every_method(method, changes):
    ref = walk(70, seed=4)
    refmap = make_map(ref, np.repeat([0, 1, 2], [30, 3, 37]))  # a segment shorter than L
    rng = np.random.default_rng(5)
    query = ref[20:65] + 0.3 * rng.normal(size=(45, ref.shape[1])).astype(np.float32)
    cfg = cfg_for(method, **changes)
    batch = match_runs(refmap.run, query_run(query), cfg).matches
    core = NodeCore(cfg, IdentityEncoder(), refmap)
    assert core.diagnostics.sequence_length == build_method(cfg).window_length
    assert_stream_equals_batch([core.on_frame(f) for f in frames_of(query)], batch)


@pytest.mark.parametrize('method', method_names())
def test_slam_stream_equals_batch_against_the_keyframes_so_far(method):
    # With no exclusion, keyframe j is matched against keyframes 0 .. j-1: the batch match of
    # the run so far against the keyframes before it.
    descs = walk(40, seed=6)
    cfg = cfg_for(method, 'slam', **{'node.loop_closure.exclude_recent_s': 0.0})
    core = NodeCore(cfg, IdentityEncoder())
    steps = [core.on_frame(f) for f in frames_of(descs)]
    window = core.window_length
    for j in (window + 1, 17, 39):
        batch = match_runs(query_run(descs[:j]), query_run(descs[:j + 1]), cfg).matches
        assert_stream_equals_batch(steps[j:j + 1], Matches(batch.ref_indices[j:j + 1],
                                                           batch.distances[j:j + 1],
                                                           batch.valid[j:j + 1]))
    # keyframes are stored once: one buffer holds the descriptors, whoever owns it
    np.testing.assert_array_equal(core.store.descriptors, descs)
    copies = frame_buffers((core.store, core.matcher), descs)
    assert len(copies) == 1 and np.shares_memory(copies[0], core.store.descriptors)


def frame_buffers(roots: tuple, frames: np.ndarray) -> list[np.ndarray]:
    """Distinct arrays reachable from ``roots`` whose first rows are ``frames``."""
    found: list[np.ndarray] = []
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            if obj.ndim == 2 and obj.shape[0] >= len(frames) and \
                    obj.shape[1] == frames.shape[1] and \
                    np.array_equal(obj[:len(frames)], frames) and \
                    not any(np.shares_memory(obj, other) for other in found):
                found.append(obj)
        elif isinstance(obj, (list, tuple, deque)):
            todo.extend(obj)
        elif isinstance(obj, dict):
            todo.extend(obj.values())
        elif type(obj).__module__.startswith(('vpr_seq_ros', __name__)):
            todo.extend(vars(obj).values())
    return found


def test_seqgem_uses_the_stored_sequence_descriptors_only_when_they_fit(tmp_path):
    ref = walk(50, seed=7)
    refmap = make_map(ref)
    method = build_method(cfg_for('seqgem'))
    pre = method.precompute(refmap.run)
    assert pre.info == {'method': 'seqgem', 'length': 4, 'p': 3.0, 'window': 'trailing'}
    extra = {**refmap.manifest.extra, 'sequence_descriptors': pre.info}
    manifest = dataclasses.replace(refmap.manifest, extra=extra)
    marked = pre.descriptors.copy()
    marked[10] += 5.0  # a stored row that differs from the recomputed one
    path = save_map(ReferenceMap(refmap.run, manifest, marked), tmp_path / 'm.npz')
    loaded = load_map(path)
    query = frames_of(ref[7:11])
    core = NodeCore(cfg_for('seqgem'), IdentityEncoder(), loaded)
    dist_fit = [core.on_frame(f) for f in query][-1].hypothesis
    other = NodeCore(cfg_for('seqgem', **{'matching.seqgem_p': 2.0}), IdentityEncoder(),
                     loaded)
    dist_refit = [other.on_frame(f) for f in query][-1].hypothesis
    assert dist_fit.best.ref_index != 10  # the marked stored row was used ...
    assert dist_refit.best.ref_index == 10  # ... and recomputed when p differs
    assert method.fits(pre) and not build_method(cfg_for('seqgem', **{
        'matching.seqgem_p': 2.0})).fits(pre)
    assert build_method(cfg_for('seqgem'), learnt_seqgem_p=3.5).parameters()['p'] == 3.5


def test_errors_name_the_configuration_key_not_a_flag():
    run = query_run(walk(3))
    for method in method_names():
        cfg = cfg_for(method, **{'sequence.length': 5})
        if build_method(cfg).window_length <= 3:
            continue
        with pytest.raises(MatchingError, match='sequence.length') as info:
            match_runs(run, run, cfg)
        assert '--' not in str(info.value)
    for folder in ('matching', 'runtime'):
        for path in (PACKAGE / folder).rglob('*.py'):
            text = path.read_text()
            assert not re.search(r"f?'[^'\n]*--[a-z][a-z-]+", text), path


def test_no_module_outside_the_methods_compares_method_names():
    pattern = re.compile(r"method\s*(==|!=|\bin\b)|(==|!=)\s*'(single|seqmatch|seqgem)'")
    offenders = []
    for path in PACKAGE.rglob('*.py'):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(('matching/', 'training/')):
            continue  # the plugins themselves; training's loss distances are another setting
        offenders += [f'{rel}: {line.strip()}' for line in path.read_text().splitlines()
                      if pattern.search(line)]
    assert not offenders, offenders


def test_the_configuration_imports_no_method_module():
    import subprocess
    import sys

    code = ('import sys, vpr_seq_ros.config\n'
            'heavy = [m for m in sys.modules if m == "numpy" or m.startswith('
            '"vpr_seq_ros.matching.")]\n'
            'print(heavy); sys.exit(1 if heavy else 0)')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
