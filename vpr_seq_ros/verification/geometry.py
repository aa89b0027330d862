"""Two-view geometric verification of a place match with OpenCV local features.

A candidate (query keyframe, matched keyframe) is accepted when enough ratio-test feature
matches agree with one rigid two-view geometry:

1. local features per keyframe (:class:`FeatureExtractor`: ORB by default, SIFT or AKAZE),
2. k = 2 nearest-neighbour matching with Lowe's ratio test (Hamming distance for the binary
   ORB/AKAZE descriptors, L2 for SIFT), one-to-one,
3. RANSAC (OpenCV's USAC MAGSAC++ when available) on the essential matrix when the camera
   intrinsics are known, then ``recoverPose`` for the rotation and the translation direction;
   on the fundamental matrix otherwise (no pose then). Its iterations are bounded by what
   finding an *acceptable* model needs (:func:`ransac_iterations`): with M matches a model is
   accepted only with at least ``max(min_inliers / M, min_inlier_ratio)`` of them as inliers,
   and after ``log(1 - confidence) / log(1 - ratio^s)`` iterations (s: 5 points for the
   essential matrix, 7 for the fundamental) RANSAC has drawn an all-inlier sample of such a
   model with probability ``confidence``. A pair with few matches therefore costs few
   iterations, and a pair with fewer matches than ``min_inliers`` none,
4. thresholds on the inlier count and the inlier ratio,
5. optionally, with depth at the keypoints of either keyframe, a metric relative pose by
   PnP-RANSAC on the inliers.

Pose convention: ``rotation`` R and ``translation`` t map points from the query camera frame to
the matched keyframe's camera frame, ``X_match = R @ X_query + t`` (OpenCV camera axes: x right,
y down, z forward), i.e. (R, t) is the pose of the query camera in the matched camera's frame,
``T_match_query``. Without depth, ``t`` is a unit direction (the scale is not observable).

Covariance (6 x 6, order ``[x, y, z, rot_x, rot_y, rot_z]`` as in
``geometry_msgs/PoseWithCovariance``, metres and radians; rotations are small angles applied on
the left, ``R = exp([d_rot]x) R_hat``, ``t = t_hat + d_t``): a Gauss-Newton (Laplace)
approximation at the estimate. The Jacobian J of the inlier residuals (signed Sampson
distances in pixels for the essential matrix, reprojection errors in pixels for PnP) with
respect to the 6 perturbation parameters is taken by central differences; the residual variance
is estimated from the inliers, ``s2 = max(sum(r^2) / (n - dof), 0.5^2)`` px^2 (dof 5 for the
essential matrix, 6 for PnP; the floor keeps a handful of lucky inliers from claiming sub-pixel
precision); then ``cov = inv(J^T J / s2 + I / PRIOR_VARIANCE)``. The weak prior only matters for
directions the inliers do not constrain: without depth the translation's length (along t), with
no parallax the translation direction. Those get a variance near ``PRIOR_VARIANCE`` (1e4 m^2 or
rad^2), which a back end reads as "unknown". It is a local, first-order approximation that
assumes the RANSAC inliers are correct and the keypoint noise is isotropic and independent; it
does not account for wrong intrinsics or a wrong inlier set.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

from vpr_seq_ros.errors import ConfigError
from vpr_seq_ros.verification.errors import VerificationError
from vpr_seq_ros.verification.config import VerificationConfig

log = logging.getLogger(__name__)

PRIOR_VARIANCE = 1e4
"""Variance (m^2 or rad^2) of the weak prior: what unconstrained pose components report."""

MIN_RESIDUAL_STD_PX = 0.5
"""Floor of the residual standard deviation used in the covariance (pixels)."""

DESCRIPTOR_WIDTH = {'orb': 32, 'akaze': 61, 'sift': 128}
"""Bytes per descriptor of each feature type (SIFT values are stored as uint8)."""

BINARY_FEATURES = ('orb', 'akaze')

DISTORTION_MODELS = ('plumb_bob', 'rational_polynomial', '')


class Reason(str, enum.Enum):
    """Why a candidate was accepted or rejected (the value is what diagnostics print)."""

    ACCEPTED = 'accepted'
    TOO_FEW_FEATURES = 'too_few_features'
    TOO_FEW_MATCHES = 'too_few_matches'
    TOO_FEW_INLIERS = 'too_few_inliers'
    LOW_INLIER_RATIO = 'low_inlier_ratio'
    DEGENERATE = 'degenerate'
    MISSING_FEATURES = 'missing_features'
    INCOMPATIBLE = 'incompatible_features'
    DROPPED = 'dropped_from_queue'
    OFF_TRACK = 'weak_off_track'
    """Enough inliers for a closure continuing a verified track, not for one starting a
    track (``track_min_inliers``), and not on a track."""


class Model(str, enum.Enum):
    """Which two-view model RANSAC fitted."""

    NONE = 'none'
    ESSENTIAL = 'essential'
    FUNDAMENTAL = 'fundamental'


@dataclass(frozen=True)
class CameraIntrinsics:
    """A pinhole camera (pixels), optionally with OpenCV-ordered distortion coefficients.

    Attributes:
        fx: focal length along x, pixels.
        fy: focal length along y, pixels.
        cx: principal point x, pixels.
        cy: principal point y, pixels.
        width: image width, pixels.
        height: image height, pixels.
        distortion: ``k1 k2 p1 p2 [k3 ...]`` (plumb_bob / rational_polynomial), or empty.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not (self.fx > 0 and self.fy > 0):
            raise ConfigError(f'camera intrinsics need fx, fy > 0, got fx={self.fx}, '
                              f'fy={self.fy}: calibrate the camera or set the intrinsics')
        if self.width <= 0 or self.height <= 0:
            raise ConfigError(f'camera image size must be positive, got {self.width} x '
                              f'{self.height}')

    @classmethod
    def from_camera_info(cls, k: Sequence[float], width: int, height: int,
                         d: Sequence[float] = (), distortion_model: str = 'plumb_bob'
                         ) -> CameraIntrinsics:
        """From the fields of a ``sensor_msgs/CameraInfo`` (``k`` row-major 3 x 3, ``d``).

        Raises:
            ConfigError: an uncalibrated camera (K all zero), a K that is not 9 numbers, or a
                distortion model OpenCV's pinhole functions cannot undo (e.g. equidistant).
        """
        values = [float(v) for v in k]
        if len(values) != 9:
            raise ConfigError(f'CameraInfo K must hold 9 numbers, got {len(values)}')
        if not any(values):
            raise ConfigError('CameraInfo K is all zero (uncalibrated camera): calibrate the '
                              'camera or give the verification intrinsics as parameters')
        dist = tuple(float(v) for v in d)
        if any(dist) and distortion_model not in DISTORTION_MODELS:
            raise ConfigError(f'camera distortion model {distortion_model!r} is not supported '
                              f'(use {", ".join(m for m in DISTORTION_MODELS if m)}): publish '
                              'rectified images with a zero distortion CameraInfo')
        return cls(values[0], values[4], values[2], values[5], int(width), int(height),
                   dist if any(dist) else ())

    @classmethod
    def from_parameters(cls, values: Sequence[float], width: int, height: int,
                        distortion: Sequence[float] = ()) -> CameraIntrinsics:
        """From ``[fx, fy, cx, cy]`` (the ``intrinsics`` parameter) and the image size."""
        if len(values) != 4:
            raise ConfigError(f'intrinsics must be [fx, fy, cx, cy], got {list(values)}')
        fx, fy, cx, cy = (float(v) for v in values)
        return cls(fx, fy, cx, cy, int(width), int(height),
                   tuple(float(v) for v in distortion))

    @classmethod
    def from_config(cls, cfg: VerificationConfig, width: int, height: int
                    ) -> CameraIntrinsics | None:
        """The camera given as parameters (``camera_fx`` ...), or None when not set."""
        if not cfg.has_intrinsics:
            return None
        return cls(cfg.camera_fx, cfg.camera_fy, cfg.camera_cx, cfg.camera_cy, int(width),
                   int(height))

    @property
    def matrix(self) -> np.ndarray:
        """``(3, 3)`` float64 camera matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def undistort(self, points: np.ndarray) -> np.ndarray:
        """``(N, 2)`` pixel coordinates with the distortion removed (same K)."""
        if not self.distortion or not len(points):
            return points.astype(np.float64)
        out = cv2.undistortPoints(points.reshape(-1, 1, 2).astype(np.float64), self.matrix,
                                  np.asarray(self.distortion), P=self.matrix)
        return out.reshape(-1, 2)


@dataclass(frozen=True, eq=False)
class Features:
    """Local features of one keyframe.

    Attributes:
        feature: feature type (``orb``, ``sift``, ``akaze``).
        keypoints: ``(N, 2)`` float32 keypoint positions in pixels of the original image.
        descriptors: ``(N, D)`` uint8 descriptors (D: 32 ORB, 61 AKAZE, 128 SIFT).
        image_size: ``(width, height)`` of the original image, pixels.
        depth_m: ``(N,)`` float32 depth at each keypoint in metres (NaN: none), or None.
    """

    feature: str
    keypoints: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int]
    depth_m: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])


@dataclass(frozen=True, eq=False)
class Verification:
    """The outcome of verifying one candidate.

    Attributes:
        accepted: the geometry supports the match.
        reason: why it was accepted or rejected.
        num_features_query: keypoints of the query keyframe.
        num_features_match: keypoints of the matched keyframe.
        num_matches: ratio-test matches.
        num_inliers: RANSAC inliers (the verification score).
        inlier_ratio: ``num_inliers / num_matches`` (0 without matches).
        model: the two-view model RANSAC fitted.
        rotation: ``(3, 3)`` float64 R of ``X_match = R @ X_query + t``, or None (no
            intrinsics, or rejected before a model was fitted).
        translation: ``(3,)`` float64 t: unit direction, or metres when ``metric``; or None.
        metric: ``translation`` is in metres (PnP with depth).
        covariance: ``(6, 6)`` float64 covariance of ``[x, y, z, rot_x, rot_y, rot_z]`` (see
            the module docstring for how), or None without a pose.
        num_pnp_inliers: PnP-RANSAC inliers (0 when PnP was not run or failed).
        elapsed_ms: wall time of the verification (matching, RANSAC, covariance), ms.
    """

    accepted: bool
    reason: Reason
    num_features_query: int = 0
    num_features_match: int = 0
    num_matches: int = 0
    num_inliers: int = 0
    inlier_ratio: float = 0.0
    model: Model = Model.NONE
    rotation: np.ndarray | None = None
    translation: np.ndarray | None = None
    metric: bool = False
    covariance: np.ndarray | None = None
    num_pnp_inliers: int = 0
    elapsed_ms: float = 0.0

    @property
    def score(self) -> int:
        """The verification score: RANSAC inliers."""
        return self.num_inliers

    @property
    def information(self) -> np.ndarray | None:
        """``(6, 6)`` information matrix (inverse covariance, e.g. RTAB-Map's
        ``Link.information``), or None without a pose."""
        if self.covariance is None:
            return None
        info = np.linalg.inv(self.covariance)
        return (info + info.T) / 2

    @property
    def rotation_angle_deg(self) -> float | None:
        """Angle of ``rotation`` in degrees, or None without a pose."""
        if self.rotation is None:
            return None
        return math.degrees(rotation_angle(self.rotation))


def rotation_angle(rotation: np.ndarray) -> float:
    """Angle (radians) of a ``(3, 3)`` rotation matrix."""
    return float(np.linalg.norm(cv2.Rodrigues(np.asarray(rotation, np.float64))[0]))


def rotation_to_quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """``(x, y, z, w)`` unit quaternion of a ``(3, 3)`` rotation (the ROS message order)."""
    rvec = cv2.Rodrigues(np.asarray(rotation, np.float64))[0].ravel()
    angle = float(np.linalg.norm(rvec))
    if angle < 1e-12:
        return 0.0, 0.0, 0.0, 1.0
    axis = rvec / angle
    s = math.sin(angle / 2)
    return float(axis[0] * s), float(axis[1] * s), float(axis[2] * s), math.cos(angle / 2)


# ------------------------------------------------------------------------------- features


def _detector(feature: str, max_features: int) -> cv2.Feature2D:
    if feature == 'orb':
        return cv2.ORB_create(nfeatures=max_features)
    if feature == 'sift':
        return cv2.SIFT_create(nfeatures=max_features)
    if feature == 'akaze':
        create = getattr(cv2, 'AKAZE_create', None)
        if create is None:
            raise ConfigError(f'this OpenCV build ({cv2.__version__}) has no AKAZE (OpenCV 5 '
                              'moved it out of the main package): use feature orb or sift, '
                              'or an OpenCV 4.x build')
        return create()
    raise ConfigError(f'unknown feature {feature!r}; valid: orb, sift, akaze')


def _grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        grey = image
    elif image.ndim == 3 and image.shape[2] == 3:
        grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    elif image.ndim == 3 and image.shape[2] == 1:
        grey = image[:, :, 0]
    else:
        raise VerificationError(f'expected an (H, W) or (H, W, 3) image, got shape '
                                f'{image.shape}')
    if grey.dtype != np.uint8:
        raise VerificationError(f'expected a uint8 image, got {grey.dtype}: convert it first')
    return np.ascontiguousarray(grey)


def _depth_at(depth: np.ndarray, points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Depth in metres at ``(N, 2)`` pixel positions (NaN where missing)."""
    width, height = size
    if depth.shape[:2] != (height, width):
        raise VerificationError(f'the depth image is {depth.shape[1]} x {depth.shape[0]}, the '
                                f'image {width} x {height}: the depth must be aligned with '
                                'the image (same size)')
    values = depth.astype(np.float32)
    if depth.dtype == np.uint16:  # ROS 16UC1 depth is millimetres
        values = values / 1000.0
    cols = np.clip(np.rint(points[:, 0]).astype(int), 0, width - 1)
    rows = np.clip(np.rint(points[:, 1]).astype(int), 0, height - 1)
    out = values[rows, cols]
    out[~np.isfinite(out) | (out <= 0)] = np.nan
    return out.astype(np.float32)


class FeatureExtractor:
    """Local features of keyframes, as :class:`VerificationConfig` asks.

    Args:
        cfg: verification settings (feature, max_features, max_image_width).

    Raises:
        ConfigError: a feature this OpenCV build lacks.
    """

    def __init__(self, cfg: VerificationConfig) -> None:
        self.feature = cfg.feature
        self.max_features = cfg.max_features
        self.max_image_width = cfg.max_image_width
        self._detector = _detector(cfg.feature, cfg.max_features)

    def extract(self, image: np.ndarray, depth: np.ndarray | None = None) -> Features:
        """Features of one image.

        Args:
            image: ``(H, W, 3)`` uint8 RGB or ``(H, W)`` uint8 grey image.
            depth: optional ``(H, W)`` depth aligned with the image: float metres or uint16
                millimetres (0 or NaN: no depth).

        Returns:
            :class:`Features` with at most ``max_features`` keypoints, strongest first.

        Raises:
            VerificationError: an image or depth of the wrong shape or type.
        """
        grey = _grey(image)
        height, width = grey.shape
        scale = 1.0
        if self.max_image_width and width > self.max_image_width:
            scale = self.max_image_width / width
            size = (self.max_image_width, max(1, int(round(height * scale))))
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        keypoints, descriptors = self._detector.detectAndCompute(grey, None)
        dim = DESCRIPTOR_WIDTH[self.feature]
        if descriptors is None or not keypoints:
            points = np.zeros((0, 2), np.float32)
            descriptors = np.zeros((0, dim), np.uint8)
        else:
            order = np.argsort([-k.response for k in keypoints], kind='stable')
            order = order[:self.max_features]
            points = np.array([keypoints[i].pt for i in order], np.float32).reshape(-1, 2)
            points /= scale
            descriptors = descriptors[order]
            if descriptors.dtype != np.uint8:  # SIFT: integer values in [0, 255] as float
                descriptors = np.clip(np.rint(descriptors), 0, 255).astype(np.uint8)
        depth_m = _depth_at(depth, points, (width, height)) if depth is not None else None
        return Features(self.feature, points, np.ascontiguousarray(descriptors),
                        (int(width), int(height)), depth_m)


def match_features(query: Features, match: Features, ratio: float) -> np.ndarray:
    """One-to-one ratio-test matches between two keyframes.

    Args:
        query: features of the query keyframe.
        match: features of the matched keyframe.
        ratio: Lowe's ratio (a match's distance must be below ``ratio`` times the second
            nearest's).

    Returns:
        ``(M, 2)`` int64 pairs ``[query keypoint, match keypoint]``; when several query
        keypoints pick the same match keypoint only the closest is kept.
    """
    if len(query) < 2 or len(match) < 2:
        return np.zeros((0, 2), np.int64)
    binary = query.feature in BINARY_FEATURES
    norm = cv2.NORM_HAMMING if binary else cv2.NORM_L2
    dq, dm = query.descriptors, match.descriptors
    if not binary:
        dq, dm = dq.astype(np.float32), dm.astype(np.float32)
    knn = cv2.BFMatcher(norm).knnMatch(dq, dm, k=2)
    best: dict[int, tuple[float, int]] = {}
    for pair in knn:
        if len(pair) < 2:
            continue
        first, second = pair
        if first.distance < ratio * second.distance:
            kept = best.get(first.trainIdx)
            if kept is None or first.distance < kept[0]:
                best[first.trainIdx] = (first.distance, first.queryIdx)
    pairs = sorted((q, m) for m, (_, q) in best.items())
    return np.array(pairs, np.int64).reshape(-1, 2)


# ------------------------------------------------------------------------------- geometry


SAMPLE_SIZE = {'essential': 5, 'fundamental': 7}
"""Correspondences in a minimal RANSAC sample of each model (OpenCV's 5- and 7-point
solvers)."""


def ransac_iterations(needed_ratio: float, sample: int, confidence: float, cap: int) -> int:
    """RANSAC iterations after which, with probability ``confidence``, at least one minimal
    sample was drawn from the inliers of a model that has an inlier ratio of at least
    ``needed_ratio`` (the standard bound ``log(1 - confidence) / log(1 - ratio^sample)``).

    Args:
        needed_ratio: the smallest inlier ratio of a model that would be accepted (0, 1].
        sample: points in a minimal sample.
        confidence: probability of success (0 < confidence < 1).
        cap: upper bound (``ransac_max_iters``).

    Returns:
        Iterations, between 1 and ``cap``.
    """
    if needed_ratio >= 1.0:
        return 1
    hit = needed_ratio ** sample
    if hit <= 0.0:
        return cap
    bound = math.log(1.0 - confidence) / math.log1p(-hit)
    return int(max(1, min(cap, math.ceil(bound))))


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def _perturb(rotation: np.ndarray, translation: np.ndarray, delta: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """``R = exp([d_rot]x) R_hat``, ``t = t_hat + d_t`` for ``delta = [d_t, d_rot]``."""
    return cv2.Rodrigues(delta[3:].reshape(3, 1))[0] @ rotation, translation + delta[:3]


def sampson_residuals(rotation: np.ndarray, translation: np.ndarray, k: np.ndarray,
                      query_px: np.ndarray, match_px: np.ndarray) -> np.ndarray:
    """Signed Sampson distances (pixels) of correspondences to the epipolar geometry.

    Args:
        rotation: ``(3, 3)`` R of ``X_match = R X_query + t``.
        translation: ``(3,)`` t.
        k: ``(3, 3)`` camera matrix (both views).
        query_px: ``(N, 2)`` undistorted query pixels.
        match_px: ``(N, 2)`` undistorted matched pixels.

    Returns:
        ``(N,)`` float64.
    """
    k_inv = np.linalg.inv(k)
    fundamental = k_inv.T @ _skew(translation) @ rotation @ k_inv
    xq = np.column_stack([query_px, np.ones(len(query_px))])
    xm = np.column_stack([match_px, np.ones(len(match_px))])
    fq = xq @ fundamental.T
    fm = xm @ fundamental
    numerator = np.sum(xm * fq, axis=1)
    denominator = np.sqrt(fq[:, 0] ** 2 + fq[:, 1] ** 2 + fm[:, 0] ** 2 + fm[:, 1] ** 2)
    return numerator / np.maximum(denominator, 1e-12)


def _jacobian(residual_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
              rotation: np.ndarray, translation: np.ndarray, step: float) -> np.ndarray:
    """``(M, 6)`` central-difference Jacobian of the residuals at ``(R, t)``."""
    columns = []
    for i in range(6):
        delta = np.zeros(6)
        delta[i] = step
        plus = residual_fn(*_perturb(rotation, translation, delta))
        minus = residual_fn(*_perturb(rotation, translation, -delta))
        columns.append((plus - minus) / (2 * step))
    return np.stack(columns, axis=1)


def gauss_newton_covariance(residual_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
                            rotation: np.ndarray, translation: np.ndarray, dof: int,
                            step: float = 1e-6) -> np.ndarray:
    """Laplace approximation of the pose covariance from the inlier residuals.

    Args:
        residual_fn: ``(R, t) -> (M,)`` residuals in pixels.
        rotation: ``(3, 3)`` estimate.
        translation: ``(3,)`` estimate.
        dof: degrees of freedom the model fits (subtracted from M for the variance).
        step: central-difference step (metres / radians).

    Returns:
        ``(6, 6)`` covariance of ``[x, y, z, rot_x, rot_y, rot_z]`` (see the module docstring).
    """
    residuals = residual_fn(rotation, translation)
    jacobian = _jacobian(residual_fn, rotation, translation, step)
    redundancy = max(len(residuals) - dof, 1)
    variance = max(float(residuals @ residuals) / redundancy, MIN_RESIDUAL_STD_PX ** 2)
    information = jacobian.T @ jacobian / variance + np.eye(6) / PRIOR_VARIANCE
    covariance = np.linalg.inv(information)
    return (covariance + covariance.T) / 2


def _project(points: np.ndarray, k: np.ndarray) -> np.ndarray:
    z = np.where(np.abs(points[:, 2]) < 1e-9, 1e-9, points[:, 2])
    return np.column_stack([k[0, 0] * points[:, 0] / z + k[0, 2],
                            k[1, 1] * points[:, 1] / z + k[1, 2]])


def _backproject(pixels: np.ndarray, depth_m: np.ndarray, k: np.ndarray) -> np.ndarray:
    x = (pixels[:, 0] - k[0, 2]) / k[0, 0] * depth_m
    y = (pixels[:, 1] - k[1, 2]) / k[1, 1] * depth_m
    return np.column_stack([x, y, depth_m])


class Verifier:
    """Geometric verification of candidate pairs of keyframes.

    Args:
        cfg: thresholds and RANSAC settings.
        intrinsics: the camera (same for both keyframes); None fits the fundamental matrix
            and reports no pose.
    """

    def __init__(self, cfg: VerificationConfig, intrinsics: CameraIntrinsics | None = None
                 ) -> None:
        self.cfg = cfg
        self.intrinsics = intrinsics
        self._method = getattr(cv2, 'USAC_MAGSAC', cv2.RANSAC)

    def verify(self, query: Features, match: Features) -> Verification:
        """Verify that two keyframes see the same place.

        Args:
            query: features of the query (newest) keyframe.
            match: features of the candidate keyframe.

        Returns:
            A :class:`Verification` (accepted or rejected with the reason).
        """
        started = time.perf_counter()
        result = self._verify(query, match)
        elapsed = 1e3 * (time.perf_counter() - started)
        return Verification(**{**result, 'elapsed_ms': elapsed})

    def _verify(self, query: Features, match: Features) -> dict:
        cfg = self.cfg
        out: dict = {'accepted': False, 'reason': Reason.ACCEPTED,
                     'num_features_query': len(query), 'num_features_match': len(match)}
        if query.feature != match.feature or \
                query.descriptors.shape[1] != match.descriptors.shape[1]:
            return {**out, 'reason': Reason.INCOMPATIBLE}
        if min(len(query), len(match)) < cfg.min_matches:
            return {**out, 'reason': Reason.TOO_FEW_FEATURES}
        pairs = match_features(query, match, cfg.ratio)
        out['num_matches'] = len(pairs)
        if len(pairs) < max(cfg.min_matches, cfg.min_inliers):  # cannot reach min_inliers
            return {**out, 'reason': Reason.TOO_FEW_MATCHES}
        qi, mi = pairs[:, 0], pairs[:, 1]
        cam = self.intrinsics
        q_px = cam.undistort(query.keypoints[qi]) if cam else query.keypoints[qi].astype(float)
        m_px = cam.undistort(match.keypoints[mi]) if cam else match.keypoints[mi].astype(float)
        out['model'] = Model.FUNDAMENTAL if cam is None else Model.ESSENTIAL
        needed = max(cfg.min_inliers / len(pairs), cfg.min_inlier_ratio)
        iterations = ransac_iterations(needed, SAMPLE_SIZE[out['model'].value],
                                       cfg.ransac_confidence, cfg.ransac_max_iters)
        try:
            if cam is None:
                model, mask = cv2.findFundamentalMat(
                    q_px, m_px, self._method, cfg.ransac_threshold_px, cfg.ransac_confidence,
                    iterations)
            else:
                model, mask = cv2.findEssentialMat(
                    q_px, m_px, cam.matrix, self._method, cfg.ransac_confidence,
                    cfg.ransac_threshold_px, iterations)
        except cv2.error as err:  # e.g. USAC asserting on a degenerate point set
            log.debug('RANSAC failed: %s', err)
            return {**out, 'reason': Reason.DEGENERATE}
        if model is None or mask is None or model.shape[0] < 3:
            return {**out, 'reason': Reason.DEGENERATE}
        inliers = mask.ravel().astype(bool)
        num_inliers = int(inliers.sum())
        out['num_inliers'] = num_inliers
        out['inlier_ratio'] = num_inliers / len(pairs)
        if num_inliers < cfg.min_inliers:
            return {**out, 'reason': Reason.TOO_FEW_INLIERS}
        if out['inlier_ratio'] < cfg.min_inlier_ratio:
            return {**out, 'reason': Reason.LOW_INLIER_RATIO}
        if cam is not None:
            pose = self._pose(model[:3], q_px[inliers], m_px[inliers], cam)
            if pose is None:
                return {**out, 'reason': Reason.DEGENERATE}
            out.update(pose)
            metric = self._metric_pose(query, match, qi[inliers], mi[inliers],
                                       q_px[inliers], m_px[inliers], cam)
            if metric is not None:
                out.update(metric)
        return {**out, 'accepted': True, 'reason': Reason.ACCEPTED}

    def _pose(self, essential: np.ndarray, q_px: np.ndarray, m_px: np.ndarray,
              cam: CameraIntrinsics) -> dict | None:
        k = cam.matrix
        try:
            _, rotation, translation, _ = cv2.recoverPose(essential, q_px, m_px, k)
        except cv2.error as err:  # pragma: no cover - OpenCV rejects a malformed E
            log.debug('recoverPose failed: %s', err)
            return None
        translation = translation.ravel()
        norm = float(np.linalg.norm(translation))
        if not np.all(np.isfinite(rotation)) or norm < 1e-9:
            return None
        translation = translation / norm

        def residuals(r: np.ndarray, t: np.ndarray) -> np.ndarray:
            return sampson_residuals(r, t, k, q_px, m_px)

        covariance = gauss_newton_covariance(residuals, rotation, translation, 5)
        return {'rotation': rotation, 'translation': translation, 'covariance': covariance}

    def _metric_pose(self, query: Features, match: Features, qi: np.ndarray, mi: np.ndarray,
                     q_px: np.ndarray, m_px: np.ndarray, cam: CameraIntrinsics) -> dict | None:
        """PnP-RANSAC on the inliers with depth from the query or else the matched keyframe."""
        k = cam.matrix
        for side in ('query', 'match'):
            feats, idx = (query, qi) if side == 'query' else (match, mi)
            if feats.depth_m is None:
                continue
            depth = feats.depth_m[idx].astype(np.float64)
            valid = np.isfinite(depth)
            if int(valid.sum()) < self.cfg.min_pnp_inliers:
                continue
            src_px, dst_px = (q_px, m_px) if side == 'query' else (m_px, q_px)
            points = _backproject(src_px[valid], depth[valid], k)
            try:
                ok, rvec, tvec, pnp_inliers = cv2.solvePnPRansac(
                    points, dst_px[valid], k, None, iterationsCount=self.cfg.ransac_max_iters,
                    reprojectionError=2.0 * self.cfg.ransac_threshold_px,
                    confidence=self.cfg.ransac_confidence)
            except cv2.error as err:
                log.debug('PnP-RANSAC failed: %s', err)
                continue
            count = 0 if pnp_inliers is None else len(pnp_inliers)
            if not ok or count < self.cfg.min_pnp_inliers:
                continue
            rotation = cv2.Rodrigues(rvec)[0]
            translation = tvec.ravel()
            if side == 'match':  # solved T_query_match; invert to T_match_query
                rotation, translation = rotation.T, -rotation.T @ translation
            keep = pnp_inliers.ravel()
            pts, obs = points[keep], dst_px[valid][keep]

            def residuals(r: np.ndarray, t: np.ndarray, pts: np.ndarray = pts,
                          obs: np.ndarray = obs, side: str = side) -> np.ndarray:
                moved = pts @ r.T + t if side == 'query' else (pts - t) @ r
                return (_project(moved, k) - obs).ravel()

            covariance = gauss_newton_covariance(residuals, rotation, translation, 6)
            return {'rotation': rotation, 'translation': translation, 'metric': True,
                    'covariance': covariance, 'num_pnp_inliers': count}
        return None
