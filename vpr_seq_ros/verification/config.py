"""Configuration of geometric verification (``node.verification`` in the main schema).

Field types are plain ``str``/``int``/``float``/``bool``/``tuple[float, ...]`` so the main
schema's loader (YAML, command-line overrides, ROS parameters) can coerce them; closed sets are
checked here and listed in the error.
"""

from __future__ import annotations

from dataclasses import dataclass

from vpr_seq_ros.checks import check_bound, check_choice
from vpr_seq_ros.errors import ConfigError

FEATURES = ('orb', 'sift', 'akaze')
EVICTIONS = ('thin', 'oldest')

_SECTION = 'node.verification'


def _check(name: str, ok: bool, value: object, bound: str) -> None:
    check_bound(_SECTION, name, value, ok, bound)


@dataclass(frozen=True)
class VerificationConfig:
    """Geometric verification of loop-closure candidates and place hypotheses.

    ``enabled`` defaults to False: verification needs the camera images of both keyframes,
    which runs fed from precomputed descriptor files (``npy`` encoder) and maps built without
    features do not have, and it changes which closures are published. The slam launch
    configuration turns it on. In localization mode it verifies the best candidate of each
    place hypothesis against the local features stored in the reference map (a map built
    with ``map_features``); the verdict is evidence published with the hypothesis.

    Attributes:
        enabled: verify candidates before they are published.
        feature: local feature, ``orb`` (fast, binary), ``sift`` or ``akaze`` (binary; needs an
            OpenCV build that has it, e.g. OpenCV 4.x).
        max_features: keypoints kept per keyframe (strongest first).
        max_image_width: images wider than this are downscaled (aspect kept) before feature
            extraction; keypoints are stored in the original image's pixels (0: never resize).
        ratio: Lowe's ratio test: a match is kept when its descriptor distance is below this
            fraction of the second-best distance (0 < ratio < 1).
        min_matches: ratio-test matches needed to try RANSAC (>= 8; RANSAC is not tried
            with fewer matches than ``min_inliers`` either).
        min_inliers: RANSAC inliers needed to accept.
        min_inlier_ratio: inliers / ratio-test matches needed to accept (0 to 1).
        ransac_threshold_px: RANSAC epipolar (Sampson) / reprojection threshold in pixels of
            the original image.
        ransac_confidence: RANSAC confidence (0 < c < 1).
        ransac_max_iters: bound on RANSAC iterations (bounds the cost of hopeless pairs);
            fewer are run when fewer suffice to find, with ``ransac_confidence``, a model
            with the inlier ratio acceptance needs (``max(min_inliers / matches,
            min_inlier_ratio)``).
        min_pnp_inliers: PnP-RANSAC inliers needed for a metric pose when depth is given.
        max_per_second: verification budget: at most this many verifications per second (of
            data time by default), in a burst of at most ``burst`` (0: no budget).
        burst: verifications allowed back to back before the rate applies.
        queue_depth: candidates waiting for verification; the oldest are dropped beyond it.
        max_keyframes: keyframes whose features are kept (bounded memory).
        eviction: which keyframe's features go when the store is full: ``thin`` (keep the
            whole trajectory at a uniform, decreasing density: drop the keyframe whose
            neighbours are closest) or ``oldest``.
        keep_recent: the newest keyframes never evicted (they are the queries in flight).
        max_index_offset: a candidate whose keyframe was evicted is verified against the
            nearest stored keyframe within this many keyframe indices (0: exact only).
        camera_fx: focal length x (pixels) of rectified images when no
            ``sensor_msgs/CameraInfo`` is available (0: use the CameraInfo topic, or the
            fundamental matrix without one; a camera with distortion needs CameraInfo).
        camera_fy: focal length y, pixels (0: not set).
        camera_cx: principal point x, pixels.
        camera_cy: principal point y, pixels.
        candidates: candidates of a loop closure's hypothesis verified, best appearance first;
            the first that passes is published.
        track_min_inliers: loop closures: RANSAC inliers that are enough for a candidate that
            continues a verified track, i.e. whose keyframe offset (query index - match index)
            is within ``track_tolerance`` of that of a closure published in the last
            ``track_window`` keyframes; a closure that starts a track needs ``min_inliers``.
            The robot moves continuously, so during a revisit the offset changes slowly, while
            a false closure (an aliased place) jumps off the track. 0: off (every closure
            needs ``min_inliers``); otherwise between 5 and ``min_inliers``.
        track_window: keyframes back in which a published closure makes a track (>= 1).
        track_tolerance: keyframes the offset of a continuing closure may differ from the
            track's (>= 0; keep it within the place radius you count as the same place).
        map_features: ``build-map`` stores each map frame's local features (``feature``,
            ``max_features``, ``max_image_width`` of this section) in the map, so localization
            against it can verify its hypotheses (ORB, 1000 keypoints: about 36 kB per frame).
    """

    enabled: bool = False
    feature: str = 'orb'
    max_features: int = 1000
    max_image_width: int = 640
    ratio: float = 0.8
    min_matches: int = 15
    min_inliers: int = 20
    min_inlier_ratio: float = 0.3
    ransac_threshold_px: float = 1.0
    ransac_confidence: float = 0.999
    ransac_max_iters: int = 2000
    min_pnp_inliers: int = 12
    max_per_second: float = 10.0
    burst: int = 5
    queue_depth: int = 8
    max_keyframes: int = 2000
    eviction: str = 'thin'
    keep_recent: int = 16
    max_index_offset: int = 2
    camera_fx: float = 0.0
    camera_fy: float = 0.0
    camera_cx: float = 0.0
    camera_cy: float = 0.0
    candidates: int = 5
    track_min_inliers: int = 0
    track_window: int = 10
    track_tolerance: int = 2
    map_features: bool = False

    def __post_init__(self) -> None:
        check_choice(_SECTION, 'feature', self.feature, FEATURES)
        check_choice(_SECTION, 'eviction', self.eviction, EVICTIONS)
        _check('max_features', self.max_features >= 8, self.max_features, '>= 8')
        _check('max_image_width', self.max_image_width >= 0, self.max_image_width, '>= 0')
        _check('ratio', 0 < self.ratio < 1, self.ratio, 'in (0, 1)')
        _check('min_matches', self.min_matches >= 8, self.min_matches, '>= 8')
        _check('min_inliers', self.min_inliers >= 5, self.min_inliers, '>= 5')
        _check('min_inlier_ratio', 0 <= self.min_inlier_ratio <= 1, self.min_inlier_ratio,
               'in [0, 1]')
        _check('ransac_threshold_px', self.ransac_threshold_px > 0, self.ransac_threshold_px,
               '> 0')
        _check('ransac_confidence', 0 < self.ransac_confidence < 1, self.ransac_confidence,
               'in (0, 1)')
        _check('ransac_max_iters', self.ransac_max_iters > 0, self.ransac_max_iters, '> 0')
        _check('min_pnp_inliers', self.min_pnp_inliers >= 4, self.min_pnp_inliers, '>= 4')
        _check('max_per_second', self.max_per_second >= 0, self.max_per_second, '>= 0')
        _check('burst', self.burst >= 1, self.burst, '>= 1')
        _check('queue_depth', self.queue_depth >= 1, self.queue_depth, '>= 1')
        _check('max_keyframes', self.max_keyframes >= 2, self.max_keyframes, '>= 2')
        _check('keep_recent', 0 <= self.keep_recent < self.max_keyframes, self.keep_recent,
               '>= 0 and below max_keyframes')
        _check('max_index_offset', self.max_index_offset >= 0, self.max_index_offset, '>= 0')
        _check('candidates', self.candidates >= 1, self.candidates, '>= 1')
        _check('track_min_inliers', self.track_min_inliers == 0 or
               5 <= self.track_min_inliers <= self.min_inliers, self.track_min_inliers,
               '0 (off) or between 5 and min_inliers')
        _check('track_window', self.track_window >= 1, self.track_window, '>= 1')
        _check('track_tolerance', self.track_tolerance >= 0, self.track_tolerance, '>= 0')
        focal = (self.camera_fx, self.camera_fy)
        if min(focal) < 0 or (max(focal) > 0 and min(focal) == 0):
            raise ConfigError(f'{_SECTION}.camera_fx and camera_fy must both be > 0 (or both 0: '
                              f'intrinsics from CameraInfo), got {focal}')

    @property
    def tracking(self) -> bool:
        """Whether closures that continue a verified track need only ``track_min_inliers``."""
        return self.track_min_inliers > 0

    @property
    def has_intrinsics(self) -> bool:
        """Whether camera intrinsics are given as parameters."""
        return self.camera_fx > 0 and self.camera_fy > 0
