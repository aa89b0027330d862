"""Geometric verification of place matches and loop closures (ROS-free).

* :mod:`.geometry`: local features, ratio-test matching, RANSAC on the essential / fundamental
  matrix, PnP with depth, the :class:`Verification` result and its covariance.
* :mod:`.store`: bounded per-keyframe feature store and its ``.npz`` form.
* :mod:`.worker`: :class:`VerificationStage`: budget, bounded queue, synchronous or threaded.
* :mod:`.evaluate`: precision / recall of closures against ground truth.
* :mod:`.config`: :class:`VerificationConfig` (``node.verification``).
"""

from __future__ import annotations

from vpr_seq_ros.verification.config import VerificationConfig
from vpr_seq_ros.verification.errors import VerificationError
from vpr_seq_ros.verification.geometry import (CameraIntrinsics, FeatureExtractor, Features,
                                               Model, Reason, Verification, Verifier,
                                               rotation_to_quaternion)
from vpr_seq_ros.verification.store import FeatureStore, load_features, save_features
from vpr_seq_ros.verification.worker import (RateBudget, VerificationCounters,
                                             VerificationRequest, VerificationResult,
                                             VerificationStage)

__all__ = ['CameraIntrinsics', 'FeatureExtractor', 'FeatureStore', 'Features', 'Model',
           'RateBudget', 'Reason', 'Verification', 'VerificationConfig',
           'VerificationCounters', 'VerificationError', 'VerificationRequest',
           'VerificationResult', 'VerificationStage', 'Verifier', 'load_features',
           'rotation_to_quaternion', 'save_features']
