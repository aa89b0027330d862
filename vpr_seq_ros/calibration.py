"""Calibrated confidence: P(match is right) from a match's score or distance.

A calibration is fitted on a validation run whose ground truth is known (every query's top-1
match, and whether it was right) and applied to new matches. Two monotone maps:

* ``isotonic``: isotonic regression by pool-adjacent-violators, applied by linear interpolation
  between the fitted points (clamped at both ends), as scikit-learn's ``IsotonicRegression``;
* ``logistic``: ``P = 1 / (1 + exp(-(a * x + b)))``, fitted by Newton's method (maximum
  likelihood with a tiny ridge so separable data stays finite).

The feature is ``score`` (distinctiveness: standard deviations of the match's distance below the
mean over its column's sampled anchors, exactly as the node publishes it; P rises with it) or
``distance`` (P falls with it). The score has one definition, :mod:`vpr_seq_ros.matching.score`,
re-exported here as :func:`distinctiveness` (of a recorded matrix) and :func:`scores_from_stats`.
A calibration is a small JSON-able dict (:meth:`Calibration.to_dict`), for a map manifest or a
parameter file.

Quality is measured by the expected calibration error over equal-width confidence bins,
``ECE = sum_b (n_b / n) * |accuracy_b - mean confidence_b|``, and the reliability curve (per bin:
count, mean confidence, accuracy).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vpr_seq_ros.errors import ConfigError, MatchingError
from vpr_seq_ros.matching.score import column_distinctiveness as distinctiveness
from vpr_seq_ros.matching.score import scores_from_stats

log = logging.getLogger(__name__)

FEATURES = ('score', 'distance')
MODELS = ('isotonic', 'logistic')
FORMAT = 'vpr_seq_ros.calibration/1'
_STD_FLOOR = 1e-12


def pool_adjacent_violators(y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Weighted least-squares non-decreasing fit of a sequence (pool-adjacent-violators).

    Args:
        y: ``(n,)`` values in the order of the increasing feature.
        w: ``(n,)`` positive weights (default: ones).

    Returns:
        ``(n,)`` float64 fitted values, non-decreasing, minimising ``sum w (y - f)^2``.
    """
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(y) if w is None else np.asarray(w, dtype=np.float64)
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for value, weight in zip(y, w):
        means.append(float(value))
        weights.append(float(weight))
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            total = weights[-2] + weights[-1]
            merged = (means[-2] * weights[-2] + means[-1] * weights[-1]) / total
            size = sizes[-2] + sizes[-1]
            del means[-1], weights[-1], sizes[-1]
            means[-1], weights[-1], sizes[-1] = merged, total, size
    return np.repeat(np.asarray(means, dtype=np.float64), sizes)


@dataclass(frozen=True)
class Calibration:
    """A fitted monotone map from a match feature to P(match is right).

    Attributes:
        feature: ``'score'`` (P non-decreasing in it) or ``'distance'`` (non-increasing).
        model: ``'isotonic'`` or ``'logistic'``.
        x: isotonic: ``(K,)`` increasing feature values of the fitted points; logistic: empty.
        p: isotonic: ``(K,)`` probabilities at ``x``; logistic: empty.
        coef: logistic ``(a, b)`` of ``sigmoid(a * x + b)``; isotonic: empty.
        num_samples: validation matches it was fitted on.
        accuracy: fraction of those that were right.
    """

    feature: Literal['score', 'distance']
    model: Literal['isotonic', 'logistic']
    x: tuple[float, ...] = ()
    p: tuple[float, ...] = ()
    coef: tuple[float, ...] = ()
    num_samples: int = 0
    accuracy: float = 0.0

    def __post_init__(self) -> None:
        if self.feature not in FEATURES:
            raise ConfigError(f'calibration feature {self.feature!r} is unknown; valid: '
                              f'{", ".join(FEATURES)}')
        if self.model not in MODELS:
            raise ConfigError(f'calibration model {self.model!r} is unknown; valid: '
                              f'{", ".join(MODELS)}')
        if self.model == 'isotonic':
            x, p = np.asarray(self.x, float), np.asarray(self.p, float)
            if len(x) == 0 or len(x) != len(p) or not np.all(np.isfinite(x)):
                raise ConfigError('an isotonic calibration needs equally long, non-empty, '
                                  'finite x and p lists; fit it again on a validation run')
            if np.any(np.diff(x) < 0) or np.any((p < 0) | (p > 1)):
                raise ConfigError('isotonic calibration x must increase and p lie in [0, 1]; '
                                  'fit it again on a validation run')
            step = np.diff(p)
            if np.any(step < -1e-12 if self.feature == 'score' else step > 1e-12):
                raise ConfigError('isotonic calibration p is not monotone in the feature; fit '
                                  'it again on a validation run')
        elif len(self.coef) != 2 or not np.all(np.isfinite(self.coef)):
            raise ConfigError('a logistic calibration needs coef = [a, b] (finite); fit it '
                              'again on a validation run')

    def __call__(self, values: np.ndarray | float) -> np.ndarray:
        """P(match is right) of feature values: any shape -> same shape, float64 in [0, 1].

        Non-finite values (no match) give 0.
        """
        v = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(v)
        out = np.zeros(v.shape, dtype=np.float64)
        if self.model == 'isotonic':
            out[finite] = np.interp(v[finite], self.x, self.p)
        else:
            a, b = self.coef
            out[finite] = _sigmoid(a * v[finite] + b)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (lists of floats), the inverse of :meth:`from_dict`."""
        return {'format': FORMAT, 'feature': self.feature, 'model': self.model,
                'x': [float(v) for v in self.x], 'p': [float(v) for v in self.p],
                'coef': [float(v) for v in self.coef], 'num_samples': int(self.num_samples),
                'accuracy': float(self.accuracy)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'Calibration':
        """Read :meth:`to_dict` output.

        Raises:
            ConfigError: another format, unknown or missing keys, or invalid values.
        """
        if not isinstance(data, dict):
            raise ConfigError('a calibration must be a mapping (as written by to_dict)')
        data = dict(data)
        fmt = data.pop('format', FORMAT)
        if fmt != FORMAT:
            raise ConfigError(f'calibration format {fmt!r} is not {FORMAT!r}; fit it again '
                              'with this version')
        known = {'feature', 'model', 'x', 'p', 'coef', 'num_samples', 'accuracy'}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f'unknown calibration keys {unknown}; valid: {sorted(known)}')
        for key in ('feature', 'model'):
            if key not in data:
                raise ConfigError(f'the calibration has no {key!r}; fit it again')
        try:
            return cls(feature=data['feature'], model=data['model'],
                       x=tuple(float(v) for v in data.get('x', ())),
                       p=tuple(float(v) for v in data.get('p', ())),
                       coef=tuple(float(v) for v in data.get('coef', ())),
                       num_samples=int(data.get('num_samples', 0)),
                       accuracy=float(data.get('accuracy', 0.0)))
        except (TypeError, ValueError) as err:
            raise ConfigError(f'calibration values are not numbers: {err}; fit it again') \
                from err


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _clean(values: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64).ravel()
    c = np.asarray(correct, dtype=bool).ravel()
    if v.shape != c.shape:
        raise MatchingError(f'{len(v)} feature values but {len(c)} correctness labels')
    keep = np.isfinite(v)
    if not keep.any():
        raise MatchingError('no finite match feature to fit a calibration on; use a validation '
                            'run longer than one sequence window')
    return v[keep], c[keep]


def fit_isotonic(values: np.ndarray, correct: np.ndarray,
                 feature: Literal['score', 'distance'] = 'score') -> Calibration:
    """Fit an isotonic map (pool-adjacent-violators) on validation matches.

    Args:
        values: ``(n,)`` feature of every validation match (non-finite ones are ignored).
        correct: ``(n,)`` bool, whether each match was right.
        feature: ``'score'`` (P non-decreasing) or ``'distance'`` (P non-increasing).

    Returns:
        The fitted :class:`Calibration`; only the end points of constant runs are kept.
    """
    if feature not in FEATURES:
        raise ConfigError(f'calibration feature {feature!r} is unknown; valid: '
                          f'{", ".join(FEATURES)}')
    v, c = _clean(values, correct)
    sign = 1.0 if feature == 'score' else -1.0
    s = sign * v
    uniq, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    hits = np.bincount(inverse, weights=c.astype(np.float64), minlength=len(uniq))
    fitted = pool_adjacent_violators(hits / counts, counts.astype(np.float64))
    # keep the first and last point of every constant run (interpolation is unchanged)
    change = np.flatnonzero(np.diff(fitted) != 0)
    keep = np.unique(np.concatenate([[0, len(uniq) - 1], change, change + 1]))
    x, p = sign * uniq[keep], fitted[keep]
    if sign < 0:
        x, p = x[::-1], p[::-1]
    return Calibration(feature, 'isotonic', tuple(float(a) for a in x),
                       tuple(float(np.clip(b, 0.0, 1.0)) for b in p), (), len(v),
                       float(c.mean()))


def fit_logistic(values: np.ndarray, correct: np.ndarray,
                 feature: Literal['score', 'distance'] = 'score', ridge: float = 1e-6,
                 iterations: int = 100) -> Calibration:
    """Fit ``P = sigmoid(a * x + b)`` by Newton's method on validation matches.

    Args:
        values: ``(n,)`` feature of every validation match (non-finite ones are ignored).
        correct: ``(n,)`` bool, whether each match was right.
        feature: which feature ``values`` holds (its sign is not forced).
        ridge: L2 penalty on ``a`` and ``b`` (keeps separable data finite).
        iterations: maximum Newton steps.
    """
    v, c = _clean(values, correct)
    y = c.astype(np.float64)
    centre, scale = float(v.mean()), max(float(v.std()), _STD_FLOOR)
    x = np.stack([(v - centre) / scale, np.ones_like(v)], axis=1)
    theta = np.zeros(2)
    for _ in range(iterations):
        prob = _sigmoid(x @ theta)
        grad = x.T @ (prob - y) + ridge * theta
        hess = (x * (prob * (1 - prob))[:, None]).T @ x + ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    a = theta[0] / scale
    b = theta[1] - theta[0] * centre / scale
    return Calibration(feature, 'logistic', (), (), (float(a), float(b)), len(v),
                       float(c.mean()))


def fit_calibration(values: np.ndarray, correct: np.ndarray,
                    feature: Literal['score', 'distance'] = 'score',
                    model: Literal['isotonic', 'logistic'] = 'isotonic') -> Calibration:
    """Fit a calibration by name (see :func:`fit_isotonic`, :func:`fit_logistic`)."""
    fits = {'isotonic': fit_isotonic, 'logistic': fit_logistic}
    if model not in fits:
        raise ConfigError(f'calibration model {model!r} is unknown; valid: {", ".join(MODELS)}')
    return fits[model](values, correct, feature)


@dataclass(frozen=True, eq=False)
class Reliability:
    """A reliability curve over equal-width confidence bins.

    Attributes:
        edges: ``(B + 1,)`` bin edges over [0, 1].
        counts: ``(B,)`` int64, matches per bin.
        confidence: ``(B,)`` mean predicted probability per bin (nan where empty).
        accuracy: ``(B,)`` fraction right per bin (nan where empty).
        ece: expected calibration error.
    """

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    ece: float


def reliability(prob: np.ndarray, correct: np.ndarray, bins: int = 10) -> Reliability:
    """Reliability curve and expected calibration error.

    A probability ``p`` falls in bin ``min(floor(p * bins), bins - 1)`` (so 1.0 is in the last).

    Args:
        prob: ``(n,)`` predicted P(right) in [0, 1].
        correct: ``(n,)`` bool outcomes.
        bins: number of equal-width bins.
    """
    p = np.asarray(prob, dtype=np.float64).ravel()
    c = np.asarray(correct, dtype=np.float64).ravel()
    if p.shape != c.shape:
        raise MatchingError(f'{len(p)} probabilities but {len(c)} outcomes')
    if bins < 1:
        raise MatchingError(f'reliability needs at least one bin, got {bins}')
    which = np.minimum(np.floor(np.clip(p, 0.0, 1.0) * bins).astype(np.int64), bins - 1)
    counts = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=p, minlength=bins)
    acc_sum = np.bincount(which, weights=c, minlength=bins)
    with np.errstate(invalid='ignore', divide='ignore'):
        confidence = np.where(counts > 0, conf_sum / counts, np.nan)
        accuracy = np.where(counts > 0, acc_sum / counts, np.nan)
    n = max(len(p), 1)
    ece = float(np.sum(np.abs(acc_sum - conf_sum)) / n)
    return Reliability(np.linspace(0.0, 1.0, bins + 1), counts.astype(np.int64), confidence,
                       accuracy, ece)


def expected_calibration_error(prob: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """``sum_b (n_b / n) * |accuracy_b - mean confidence_b|`` over equal-width bins."""
    return reliability(prob, correct, bins).ece


def save_calibration(calibration: Calibration, path: str | Path) -> Path:
    """Write a calibration as JSON; returns the path."""
    from vpr_seq_ros.writing import atomic_write

    text = (json.dumps(calibration.to_dict(), indent=1) + '\n').encode()
    return atomic_write(Path(path), lambda handle: handle.write(text))


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration JSON file.

    Raises:
        ConfigError: missing, unreadable or invalid file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f'cannot read calibration {path}: {err}; give a file written by '
                          'vpr-seq evaluate or replay --fit-calibration') from err
    return Calibration.from_dict(data)


def calibration_report(calibration: Calibration, distances: np.ndarray,
                       scores: np.ndarray | None, correct: np.ndarray,
                       bins: int = 10) -> dict[str, Any]:
    """How well a calibration predicts the matches of a run (held-out when it was fitted on
    another): ECE and the reliability curve, JSON-ready.

    Args:
        calibration: the calibration.
        distances: ``(n,)`` top-1 distances of the counted queries.
        scores: ``(n,)`` their scores (needed when the calibration maps scores).
        correct: ``(n,)`` whether each top-1 is right.
    """
    if calibration.feature == 'score' and scores is None:
        raise MatchingError('this calibration maps scores, which this run did not record; '
                            'fit one on distances')
    values = scores if calibration.feature == 'score' else distances
    curve = reliability(calibration(np.asarray(values)), correct, bins)
    return {'feature': calibration.feature, 'model': calibration.model, 'ece': curve.ece,
            'num_matches': int(len(correct)), 'accuracy': float(np.mean(correct))
            if len(correct) else 0.0,
            'bins': [{'from': float(lo), 'to': float(hi), 'count': int(n),
                      'confidence': None if np.isnan(c) else float(c),
                      'accuracy': None if np.isnan(a) else float(a)}
                     for lo, hi, n, c, a in zip(curve.edges[:-1], curve.edges[1:], curve.counts,
                                                curve.confidence, curve.accuracy)]}


__all__ = ['Calibration', 'Reliability', 'calibration_report', 'distinctiveness',
           'expected_calibration_error', 'fit_calibration', 'fit_isotonic', 'fit_logistic',
           'load_calibration', 'pool_adjacent_violators', 'reliability', 'save_calibration',
           'scores_from_stats']
