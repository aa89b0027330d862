"""Tracks of verified loop closures: a closure needs ``min_inliers`` to start a track and
``track_min_inliers`` to continue one (hand-computed cases through the gate's decision)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from vpr_seq_ros.errors import ConfigError
from vpr_seq_ros.runtime.outputs import Candidate, LoopClosure, PlaceHypothesis
from vpr_seq_ros.runtime.verify import VerificationGate
from vpr_seq_ros.verification.config import VerificationConfig
from vpr_seq_ros.verification.geometry import Reason, Verification
from vpr_seq_ros.verification.worker import VerificationResult

TRACKS = VerificationConfig(min_inliers=30, track_min_inliers=10, track_window=10,
                            track_tolerance=2)


@dataclass
class ScriptedStage:
    """A stage whose verdicts are given per (query, match) pair as RANSAC inliers: accepted
    from the stage's bar (the weak one with tracks), as the real stage does."""

    cfg: VerificationConfig
    inliers: dict[tuple[int, int], int]
    results: list[VerificationResult] = field(default_factory=list)

    def submit(self, request) -> bool:  # noqa: ANN001 - a VerificationRequest
        n = self.inliers.get((request.query_index, request.match_index), 0)
        ok = n >= self.cfg.min_inliers
        verdict = Verification(ok, Reason.ACCEPTED if ok else Reason.TOO_FEW_INLIERS,
                               num_inliers=n)
        self.results.append(VerificationResult(request, verdict, request.match_index))
        return True

    def poll(self) -> list[VerificationResult]:
        out, self.results = self.results, []
        return out


def gate_for(cfg: VerificationConfig, inliers: dict[tuple[int, int], int],
             top_k: int = 1) -> VerificationGate:
    stage_cfg = VerificationConfig(min_inliers=cfg.track_min_inliers or cfg.min_inliers,
                                   track_min_inliers=0)
    return VerificationGate(ScriptedStage(stage_cfg, inliers), top_k, cfg)


def closure(query: int, matches: list[int]) -> tuple[LoopClosure, PlaceHypothesis]:
    cands = tuple(Candidate(m, m * 10**9, 1.0, 3.0) for m in matches)
    return (LoopClosure(query, query * 10**9, matches[0], matches[0] * 10**9, 1.0, 3.0, 1),
            PlaceHypothesis(query, query * 10**9, cands))


def run(gate: VerificationGate, closures: list[tuple[int, list[int]]]):
    published, rejected = [], []
    for query, matches in closures:
        gate.submit(*closure(query, matches))
        ok, bad = gate.collect()
        published += [(c.query_index, c.match_index) for c in ok]
        rejected += [(r.closure.query_index, r.reasons) for r in bad]
    return published, rejected


def test_a_track_starts_strong_and_continues_weak():
    inliers = {(100, 0): 35, (101, 1): 12, (102, 3): 11, (103, 3): 10, (104, 4): 9}
    published, rejected = run(gate_for(TRACKS, inliers),
                              [(q, [m]) for q, m in inliers])
    # 101 and 102 continue the track of 100 (offsets 100 and 99 against 100); 103 continues
    # 102's (offset 100); 104 is below the weak bar
    assert published == [(100, 0), (101, 1), (102, 3), (103, 3)]
    assert rejected == [(104, ('too_few_inliers',))]


def test_weak_consistent_closures_cannot_start_a_track():
    # a run of mutually consistent weak closures (an aliased stretch): none is published
    inliers = {(200, 150): 25, (201, 151): 26, (202, 152): 24}
    published, rejected = run(gate_for(TRACKS, inliers), [(q, [m]) for q, m in inliers])
    assert published == []
    assert [r for _, (r,) in rejected] == ['weak_off_track'] * 3


def test_jumping_off_the_track_and_the_window():
    inliers = {(10, 0): 40, (13, 0): 20, (15, 5): 20, (26, 16): 20}
    published, _ = run(gate_for(TRACKS, inliers), [(q, [m]) for q, m in inliers])
    # 13 -> 0 jumps 3 keyframes off the offset 10 (tolerance 2); 15 -> 5 continues it; 26 is
    # 11 keyframes after the last published closure (15), beyond the window of 10
    assert published == [(10, 0), (15, 5)]


def test_the_first_candidate_that_is_strong_or_on_track_is_published():
    inliers = {(10, 0): 40, (11, 7): 12, (11, 1): 11, (12, 9): 31, (12, 2): 15}
    published, _ = run(gate_for(TRACKS, inliers, top_k=2),
                       [(10, [0]), (11, [7, 1]), (12, [9, 2])])
    # 11: candidate 7 is weak and off track, candidate 1 is weak on track; 12: candidate 9 is
    # strong (a new track), published before the weaker on-track candidate 2
    assert published == [(10, 0), (11, 1), (12, 9)]


def test_without_tracks_every_closure_needs_min_inliers():
    plain = VerificationConfig(min_inliers=30)
    inliers = {(10, 0): 40, (11, 1): 29, (12, 2): 30}
    published, rejected = run(gate_for(plain, inliers), [(q, [m]) for q, m in inliers])
    assert published == [(10, 0), (12, 2)]
    assert rejected == [(11, ('too_few_inliers',))]


def test_track_settings_are_checked():
    with pytest.raises(ConfigError, match='track_min_inliers'):
        VerificationConfig(min_inliers=20, track_min_inliers=25)
    with pytest.raises(ConfigError, match='track_min_inliers'):
        VerificationConfig(track_min_inliers=3)
    with pytest.raises(ConfigError, match='track_window'):
        VerificationConfig(track_min_inliers=10, track_window=0)
    assert not VerificationConfig().tracking and TRACKS.tracking


def test_the_node_core_verifies_from_the_weak_bar_and_decides_on_tracks():
    pytest.importorskip('cv2')
    from vpr_seq_ros.config import load_config
    from vpr_seq_ros.encoders.identity import IdentityEncoder
    from vpr_seq_ros.runtime.core import NodeCore

    cfg = load_config(overrides={'node.mode': 'slam', 'node.verification.enabled': True,
                                 'node.verification.min_inliers': 30,
                                 'node.verification.track_min_inliers': 10})
    gate = NodeCore(cfg, IdentityEncoder()).verification
    assert gate.stage.cfg.min_inliers == 10 and gate.min_inliers == 30 and gate.tracking
