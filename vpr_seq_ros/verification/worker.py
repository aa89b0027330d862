"""The verification stage: keyframe features in, candidates verified off the image callback.

How the node core uses it (the same calls in replay and live)::

    vcfg = cfg.node.verification
    stage = VerificationStage(vcfg, CameraIntrinsics.from_config(vcfg, width, height),
                              reference=map_features_or_None, threaded=live)
    # CameraInfo arrived: stage.set_intrinsics(CameraIntrinsics.from_camera_info(
    #     msg.k, msg.width, msg.height, msg.d, msg.distortion_model))
    stage.add_keyframe(kf_index, image, depth)          # every keyframe, same index as the map
    stage.submit(VerificationRequest(kf_index, match_index, stamp_ns, match_stamp_ns,
                                     score, tag=closure))  # False: refused by the budget
    for result in stage.poll():                         # each step (replay: right away)
        v = result.verification                         # accepted, reason, R, t, covariance
        publish(result.request.tag, v) if result.accepted else report(result.request, v.reason)
    stage.diagnostics()                                 # flat verification.* counters
    stage.close()                                       # shutdown (threaded)

Two modes:

* synchronous (``threaded=False``, replay and tests): ``add_keyframe`` extracts and ``submit``
  verifies at once; ``poll`` returns the results in submission order. Deterministic.
* threaded (live node): one daemon worker thread extracts features and verifies; the caller
  never waits on OpenCV. Keyframe extraction runs before any candidate, so a candidate's query
  features are stored by the time it is verified. Both queues are bounded (candidates by
  ``queue_depth``, keyframes waiting for extraction by ``max(queue_depth, keep_recent)``):
  beyond it the oldest entry is dropped and counted (a dropped candidate is still reported,
  with reason ``dropped_from_queue``; a dropped keyframe has no features).

Budget: at most ``max_per_second`` verifications per second in bursts of at most ``burst``
(a token bucket), checked at ``submit``; a refused candidate is counted and gets no result.
The budget's clock is, by default, the data: the query keyframe's stamp, so a replay refuses
exactly the candidates the live node refused (as long as the live queue never overflowed, which
``counters.dropped_queue`` shows). An injectable ``clock`` (seconds) replaces it, e.g. a fake
clock in tests or ``time.monotonic`` to bound wall-clock CPU use.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from vpr_seq_ros.verification.config import VerificationConfig
from vpr_seq_ros.verification.geometry import (CameraIntrinsics, FeatureExtractor, Reason,
                                               Verification, Verifier)
from vpr_seq_ros.verification.store import FeatureStore, MapFeatures

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerificationRequest:
    """A candidate to verify.

    Attributes:
        query_index: keyframe index of the query (its features must have been added).
        match_index: keyframe index of the candidate (own keyframes in slam mode, reference
            map frames when the stage has a reference store).
        query_stamp_ns: stamp of the query keyframe (the budget's default clock).
        match_stamp_ns: stamp of the candidate keyframe (carried through).
        appearance_score: the appearance score of the candidate (carried through).
        tag: anything the caller wants back with the result (e.g. its LoopClosure).
    """

    query_index: int
    match_index: int
    query_stamp_ns: int
    match_stamp_ns: int = 0
    appearance_score: float = 0.0
    tag: Any = None


@dataclass(frozen=True)
class VerificationResult:
    """A verified (or dropped) request.

    Attributes:
        request: what was submitted.
        verification: the outcome (reason ``dropped_from_queue`` or ``missing_features`` when
            no geometry was run).
        verified_match_index: the stored keyframe actually compared (the nearest stored one
            within ``max_index_offset`` when the requested one was evicted), or -1.
    """

    request: VerificationRequest
    verification: Verification
    verified_match_index: int = -1

    @property
    def accepted(self) -> bool:
        """The candidate is geometrically verified."""
        return self.verification.accepted


@dataclass
class VerificationCounters:
    """What the stage did since start-up (for diagnostics)."""

    keyframes_added: int = 0
    keyframes_dropped: int = 0
    keyframes_evicted: int = 0
    submitted: int = 0
    refused_budget: int = 0
    dropped_queue: int = 0
    verified: int = 0
    accepted: int = 0
    rejected: int = 0
    last_ms: float = 0.0
    total_ms: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        """Flat name -> value mapping (``verification.`` prefixed keys for diagnostics)."""
        out = {f'verification.{k}': float(v) for k, v in vars(self).items() if k != 'reasons'}
        out.update({f'verification.reason.{k}': float(v) for k, v in self.reasons.items()})
        return out


class RateBudget:
    """Token bucket: at most ``rate`` events per second, ``burst`` back to back.

    Args:
        rate: tokens per second (0: unlimited).
        burst: bucket size.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None

    def allow(self, now_s: float) -> bool:
        """Take a token at time ``now_s`` (seconds) if one is available."""
        if self.rate <= 0:
            return True
        if self._last is not None:
            elapsed = max(now_s - self._last, 0.0)  # time going backwards refills nothing
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._last = now_s if self._last is None else max(self._last, now_s)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


_Keyframe = tuple[int, np.ndarray, 'np.ndarray | None']


class VerificationStage:
    """Feature store, budget, bounded queue and verifier in one stage.

    Args:
        cfg: verification settings.
        intrinsics: the camera; None until known (fundamental matrix, no pose). See
            :meth:`set_intrinsics`.
        reference: features of a reference map (localization mode): candidates' match indices
            are looked up there, and the stage's own store keeps only the query keyframes
            that can still be waiting for verification (the oldest go first); None in slam
            mode (own keyframes, ``max_keyframes`` of them).
        clock: seconds for the budget; None uses the query keyframe's stamp (data time).
        threaded: verify on a background thread (live node) instead of synchronously.
    """

    def __init__(self, cfg: VerificationConfig, intrinsics: CameraIntrinsics | None = None,
                 reference: FeatureStore | MapFeatures | None = None,
                 clock: Callable[[], float] | None = None, threaded: bool = False) -> None:
        self.cfg = cfg
        if reference is None:
            self.store = FeatureStore.from_config(cfg)
        else:  # queries only: those waiting in both bounded queues, and a margin
            bound = max(cfg.queue_depth, cfg.keep_recent) + cfg.queue_depth + 2
            self.store = FeatureStore(cfg.feature, bound, 'oldest')
        self.reference = reference
        self.counters = VerificationCounters()
        self._extractor = FeatureExtractor(cfg)
        self._verifier = Verifier(cfg, intrinsics)
        self._budget = RateBudget(cfg.max_per_second, cfg.burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._keyframes: collections.deque[_Keyframe] = collections.deque()
        self._pending: collections.deque[VerificationRequest] = collections.deque()
        self._results: list[VerificationResult] = []
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name='verification', daemon=True)
            self._thread.start()

    @property
    def threaded(self) -> bool:
        """Whether a worker thread verifies."""
        return self._thread is not None

    def set_intrinsics(self, intrinsics: CameraIntrinsics | None) -> None:
        """Use this camera from now on (e.g. the first ``CameraInfo`` arrived)."""
        with self._lock:
            self._verifier = Verifier(self.cfg, intrinsics)

    # ------------------------------------------------------------------------ inputs
    def add_keyframe(self, index: int, image: np.ndarray, depth: np.ndarray | None = None
                     ) -> None:
        """Extract and store a keyframe's features (on the worker when threaded).

        Args:
            index: keyframe index (increasing).
            image: ``(H, W, 3)`` uint8 RGB or ``(H, W)`` uint8 grey image.
            depth: optional depth aligned with the image (float metres or uint16 mm).
        """
        if self._thread is None:
            self._store_keyframe(index, image, depth)
            return
        with self._wake:
            if len(self._keyframes) >= max(self.cfg.queue_depth, self.cfg.keep_recent):
                self._keyframes.popleft()
                self.counters.keyframes_dropped += 1
            self._keyframes.append((index, image, depth))
            self._wake.notify()

    def submit(self, request: VerificationRequest) -> bool:
        """Queue a candidate for verification.

        Returns:
            True when it will be verified (or reported dropped if the queue overflows);
            False when the budget refused it (counted, no result).
        """
        now = self._clock() if self._clock is not None else request.query_stamp_ns * 1e-9
        with self._wake:
            if not self._budget.allow(now):
                self.counters.refused_budget += 1
                return False
            self.counters.submitted += 1
            if self._thread is not None:
                if len(self._pending) >= self.cfg.queue_depth:
                    dropped = self._pending.popleft()
                    self.counters.dropped_queue += 1
                    self._finish(VerificationResult(dropped,
                                                    Verification(False, Reason.DROPPED)))
                self._pending.append(request)
                self._wake.notify()
                return True
        result = self._verify(request)
        with self._lock:
            self._finish(result)
        return True

    def poll(self) -> list[VerificationResult]:
        """Results finished since the last call, in the order they finished."""
        with self._lock:
            out, self._results = self._results, []
        return out

    def diagnostics(self) -> dict[str, float]:
        """Counters and feature-store size as flat ``verification.*`` keys (thread-safe)."""
        with self._lock:
            out = self.counters.as_dict()
            summary = self.store.summary()
            out['verification.queue'] = float(len(self._pending))
        for key in ('keyframes', 'bytes', 'bytes_per_keyframe', 'keypoints_per_keyframe'):
            out[f'verification.store.{key}'] = float(summary[key])
        return out

    def store_arrays(self) -> tuple[dict[str, np.ndarray] | None, dict[str, Any]]:
        """The own store's features as arrays for a map (None when empty) and its summary
        (thread-safe)."""
        with self._lock:
            if not len(self.store):
                return None, self.store.summary()
            return self.store.to_arrays(), self.store.summary()

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Block until the worker has nothing left to do (replay end, tests).

        Returns:
            False when ``timeout_s`` passed first.
        """
        if self._thread is None:
            return True
        with self._wake:
            return self._wake.wait_for(
                lambda: not (self._keyframes or self._pending or self._busy), timeout_s)

    def close(self) -> None:
        """Stop the worker thread (pending work is abandoned)."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    # ------------------------------------------------------------------------ work
    def _store_keyframe(self, index: int, image: np.ndarray, depth: np.ndarray | None) -> None:
        features = self._extractor.extract(image, depth)
        with self._lock:
            evicted = self.store.add(index, features)
            self.counters.keyframes_added += 1
            self.counters.keyframes_evicted += len(evicted)

    def _verify(self, request: VerificationRequest) -> VerificationResult:
        with self._lock:  # the worker adds keyframes; readers take the lock too
            query = self.store.get(request.query_index)
            source = self.reference if self.reference is not None else self.store
            match_index = source.nearest(request.match_index, self.cfg.max_index_offset)
            match = source.get(match_index) if match_index is not None else None
        if query is None or match is None:
            return VerificationResult(request, Verification(False, Reason.MISSING_FEATURES))
        return VerificationResult(request, self._verifier.verify(query, match), match_index)

    def _finish(self, result: VerificationResult) -> None:
        """Count a result and hand it to :meth:`poll` (caller holds the lock)."""
        c = self.counters
        v = result.verification
        c.reasons[v.reason.value] = c.reasons.get(v.reason.value, 0) + 1
        if v.reason is not Reason.DROPPED:
            c.verified += 1
            c.accepted += v.accepted
            c.rejected += not v.accepted
            c.last_ms = v.elapsed_ms
            c.total_ms += v.elapsed_ms
        self._results.append(result)

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._closed or bool(self._keyframes or
                                                                 self._pending))
                if self._closed:
                    return
                keyframe = self._keyframes.popleft() if self._keyframes else None
                request = self._pending.popleft() if keyframe is None else None
                self._busy = True
            try:
                if keyframe is not None:
                    self._store_keyframe(*keyframe)
                elif request is not None:
                    result = self._verify(request)
                    with self._lock:
                        self._finish(result)
            except Exception:  # noqa: BLE001 - the worker must survive one bad input
                log.exception('verification failed; continuing')
            finally:
                with self._wake:
                    self._busy = False
                    self._wake.notify_all()
