"""Geometric verification of place matches and loop closures (ROS-free).

* :mod:`.geometry`: local features, ratio-test matching, RANSAC on the essential / fundamental
  matrix, PnP with depth, the :class:`Verification` result and its covariance.
* :mod:`.store`: bounded per-keyframe feature store, its ``.npz`` form, and the features a
  reference map stores (:class:`MapFeatures`).
* :mod:`.worker`: :class:`VerificationStage`: budget, bounded queue, synchronous or threaded.
* :mod:`.evaluate`: precision / recall of closures against ground truth.
* :mod:`.config`: :class:`VerificationConfig` (``node.verification``).

Names are imported lazily, so the configuration schema can import :mod:`.config` without
loading OpenCV.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    'VerificationConfig': 'config',
    'VerificationError': 'errors',
    'CameraIntrinsics': 'geometry', 'FeatureExtractor': 'geometry', 'Features': 'geometry',
    'Model': 'geometry', 'Reason': 'geometry', 'Verification': 'geometry',
    'Verifier': 'geometry', 'rotation_to_quaternion': 'geometry',
    'FeatureStore': 'store', 'MapFeatures': 'store', 'build_feature_store': 'store',
    'load_features': 'store', 'save_features': 'store',
    'RateBudget': 'worker', 'VerificationCounters': 'worker', 'VerificationRequest': 'worker',
    'VerificationResult': 'worker', 'VerificationStage': 'worker',
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(f'{__name__}.{module}'), name)


__all__ = sorted(_EXPORTS)
