"""The verification stage: budget with a fake clock, bounded queue, sync vs threaded."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from verification_scene import render, rotation_y
from vpr_seq_ros.verification import (CameraIntrinsics, FeatureExtractor, FeatureStore,
                                      RateBudget, Reason, VerificationConfig,
                                      VerificationRequest, VerificationStage)

K = np.array([[250.0, 0.0, 160.0], [0.0, 250.0, 120.0], [0.0, 0.0, 1.0]])
SIZE = (320, 240)
CAM = CameraIntrinsics.from_camera_info(K.ravel().tolist(), *SIZE)


def _cfg(**changes) -> VerificationConfig:
    base = {'enabled': True, 'max_features': 400, 'max_image_width': 0, 'max_per_second': 0.0,
            'queue_depth': 2, 'max_keyframes': 10, 'keep_recent': 2}
    return VerificationConfig(**{**base, **changes})


@pytest.fixture(scope='module')
def images():
    """Keyframe 0: a place; 1: elsewhere; 2: the first place again, moved and turned."""
    place, _ = render(np.eye(3), np.zeros(3), K, SIZE, seed=1)
    other, _ = render(np.eye(3), np.zeros(3), K, SIZE, seed=7)
    back, _ = render(rotation_y(6.0), np.array([0.5, 0.0, 0.3]), K, SIZE, seed=1)
    return [place, other, back]


class FakeClock:
    """Seconds, advanced by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_budget_token_bucket():
    budget = RateBudget(rate=2.0, burst=2)
    assert [budget.allow(0.0) for _ in range(3)] == [True, True, False]
    assert budget.allow(0.25) is False  # half a token
    assert budget.allow(0.5) is True  # one token refilled at 2 / s
    assert budget.allow(0.5) is False
    assert [budget.allow(10.0) for _ in range(3)] == [True, True, False]  # capped at burst
    assert budget.allow(9.0) is False  # time going backwards refills nothing
    assert all(RateBudget(0.0, 1).allow(0.0) for _ in range(100))  # 0: unlimited


def test_sync_stage_verifies_in_order_under_a_fake_clock_budget(images):
    clock = FakeClock()
    stage = VerificationStage(_cfg(max_per_second=1.0, burst=1), CAM, clock=clock)
    for i, img in enumerate(images):
        stage.add_keyframe(i, img)
    assert stage.submit(VerificationRequest(2, 0, 0, tag='true')) is True
    assert stage.submit(VerificationRequest(2, 1, 0, tag='refused')) is False
    clock.now = 0.5
    assert stage.submit(VerificationRequest(2, 1, 0, tag='refused too')) is False
    clock.now = 1.0
    assert stage.submit(VerificationRequest(2, 1, 0, tag='false')) is True
    results = stage.poll()
    assert [r.request.tag for r in results] == ['true', 'false']
    assert results[0].accepted and results[0].verification.num_inliers >= 20
    assert results[0].verified_match_index == 0
    assert not results[1].accepted
    assert results[1].verification.reason in (Reason.TOO_FEW_MATCHES, Reason.TOO_FEW_INLIERS)
    assert stage.poll() == []
    c = stage.counters
    assert (c.keyframes_added, c.submitted, c.refused_budget, c.verified, c.accepted,
            c.rejected) == (3, 2, 2, 2, 1, 1)
    diag = stage.diagnostics()
    assert diag['verification.refused_budget'] == 2.0
    assert diag['verification.reason.accepted'] == 1.0
    assert diag['verification.store.keyframes'] == 3.0
    assert diag['verification.store.bytes_per_keyframe'] == \
        pytest.approx(diag['verification.store.keypoints_per_keyframe'] * 36)


def test_default_budget_clock_is_the_data_stamp(images):
    stage = VerificationStage(_cfg(max_per_second=2.0, burst=1), CAM)
    for i, img in enumerate(images):
        stage.add_keyframe(i, img)
    stamps = [0, 100_000_000, 400_000_000, 500_000_000, 1_000_000_000]  # ns
    taken = [stage.submit(VerificationRequest(2, 0, s)) for s in stamps]
    assert taken == [True, False, False, True, True]


def test_missing_and_evicted_keyframes(images):
    stage = VerificationStage(_cfg(max_index_offset=1), CAM)
    stage.add_keyframe(0, images[0])
    stage.add_keyframe(5, images[2])
    stage.submit(VerificationRequest(5, 1, 0))  # 0 is within 1 of 1
    stage.submit(VerificationRequest(5, 3, 0))  # nothing within 1 of 3
    stage.submit(VerificationRequest(9, 0, 0))  # unknown query
    first, second, third = stage.poll()
    assert first.accepted and first.verified_match_index == 0
    assert second.verification.reason is Reason.MISSING_FEATURES
    assert third.verification.reason is Reason.MISSING_FEATURES


def test_reference_store_for_localization(images):
    cfg = _cfg()
    extractor = FeatureExtractor(cfg)
    reference = FeatureStore('orb', max_keyframes=2)
    reference.add(100, extractor.extract(images[0]))
    reference.add(101, extractor.extract(images[1]))
    stage = VerificationStage(cfg, CAM, reference=reference)
    stage.add_keyframe(0, images[2])
    stage.submit(VerificationRequest(0, 100, 0))
    stage.submit(VerificationRequest(0, 101, 0))
    good, bad = stage.poll()
    assert good.accepted and not bad.accepted
    assert 100 not in stage.store  # map features are not copied into the own store


def test_threaded_queue_drops_oldest_and_counts(images):
    stage = VerificationStage(_cfg(queue_depth=2), CAM, threaded=True)
    try:
        for i, img in enumerate(images):
            stage.add_keyframe(i, img)
            assert stage.wait_idle(30.0)
        entered, release = threading.Event(), threading.Event()
        original = stage._verifier.verify

        def blocking(query, match):
            if not entered.is_set():
                entered.set()
                release.wait(30.0)
            return original(query, match)

        stage._verifier.verify = blocking
        stage.submit(VerificationRequest(2, 0, 0, tag=0))
        assert entered.wait(30.0)  # the worker holds request 0
        for tag in range(1, 6):
            assert stage.submit(VerificationRequest(2, 1, 0, tag=tag)) is True
        release.set()
        assert stage.wait_idle(30.0)
        results = stage.poll()
        dropped = [r.request.tag for r in results if r.verification.reason is Reason.DROPPED]
        done = [r.request.tag for r in results if r.verification.reason is not Reason.DROPPED]
        assert dropped == [1, 2, 3]
        assert done == [0, 4, 5]
        assert results[[r.request.tag for r in results].index(0)].accepted
        c = stage.counters
        assert (c.submitted, c.dropped_queue, c.verified) == (6, 3, 3)
        assert c.reasons['dropped_from_queue'] == 3
    finally:
        stage.close()


def test_threaded_keyframe_queue_is_bounded(images):
    stage = VerificationStage(_cfg(queue_depth=2), CAM, threaded=True)
    try:
        entered, release = threading.Event(), threading.Event()
        original = stage._extractor.extract

        def blocking(image, depth=None):
            entered.set()
            release.wait(30.0)
            return original(image, depth)

        stage._extractor.extract = blocking
        stage.add_keyframe(0, images[0])
        assert entered.wait(30.0)
        for i in range(1, 6):
            stage.add_keyframe(i, images[i % 3])
        release.set()
        assert stage.wait_idle(30.0)
        assert stage.counters.keyframes_dropped == 3
        assert stage.store.indices.tolist() == [0, 4, 5]
    finally:
        stage.close()


def test_threaded_gives_the_same_answers_as_sync(images):
    requests = [VerificationRequest(2, 0, 0), VerificationRequest(2, 1, 0),
                VerificationRequest(1, 0, 0)]
    answers = []
    for threaded in (False, True):
        stage = VerificationStage(_cfg(queue_depth=8), CAM, threaded=threaded)
        try:
            for i, img in enumerate(images):
                stage.add_keyframe(i, img)
                assert stage.wait_idle(30.0)
            for r in requests:
                stage.submit(r)
            assert stage.wait_idle(30.0)
            answers.append([(r.accepted, r.verification.reason, r.verification.num_inliers,
                             r.verification.num_matches) for r in stage.poll()])
        finally:
            stage.close()
    assert answers[0] == answers[1]
    assert [a[0] for a in answers[0]] == [True, False, False]
