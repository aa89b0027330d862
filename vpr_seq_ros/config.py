"""One configuration schema for the whole pipeline.

Frozen, nested dataclasses that follow the data flow (source -> encoder -> sequence -> matching
-> map -> evaluation). The offline tools load it from named presets (``config/presets/*.yaml``),
a YAML file and command-line overrides; the ROS node declares its parameters as the dotted
projection of the same schema (:func:`flatten`). Unknown keys are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from vpr_seq_ros.errors import ConfigError
from vpr_seq_ros.checks import check_choice, check_positive
from vpr_seq_ros.runtime.rtabmap_config import RtabmapConfig
from vpr_seq_ros.verification.config import VerificationConfig
from vpr_seq_ros.matching import method_names

RUNTIMES = ('torch', 'onnx')
SCORE_SAMPLE = 1024
"""Default ``matching.score_sample``: the cached rows of an approximate seqmatch's sample
(about ``4 S L D`` bytes, 16 MiB for L = 10, D = 512) stay in the processor's cache; at 4096
they do not, and the score costs about ten times as much per keyframe for half the error."""
DEVICES = ('cpu', 'cuda', 'auto')
PRECISIONS = ('fp32', 'bf16', 'fp16', 'int8', 'auto')
PATCHNORM_NORMALIZE = ('auto', 'l2', 'none')
METHODS = method_names()
"""The built-in matching methods (kept for the CLI; validation uses :func:`method_names`,
which also knows methods registered at run time)."""
WINDOWS = ('trailing', 'centred')
DISTANCES = ('euclidean', 'sad')
VELOCITY_KERNELS = ('rounded', 'interpolated')
SLOPE_SCORES = ('standardised', 'raw')
MAP_DTYPES = ('float32', 'float16')
GROUND_TRUTHS = ('same-index', 'radius')
NODE_MODES = ('localization', 'slam')
IMAGE_TRANSPORTS = ('raw', 'compressed')


_choice = check_choice
_positive = check_positive


@dataclass(frozen=True)
class SourceConfig:
    """How frames are read.

    Attributes:
        rate_hz: frame rate used to synthesise stamps for image folders whose frames carry no
            stamps.
        poses: CSV of per-frame stamps/poses/segments for an image folder (columns ``name`` and
            any of ``stamp_ns, x, y, z, yaw, segment``); default ``<folder>/frames.csv`` if
            present.
        image_topic: image topic of a bag source.
        pose_topic: pose topic of a bag source.
        keyframe_distance_m: keep a frame only once the robot moved this far (0 keeps all).
        decode_workers: worker processes that decode images while the offline tools encode
            (image folders and bags): ``auto`` (min(usable cores - 1, 4) when that is at
            least 2, else 0), or a count; 0 decodes in-process on the read-ahead thread. The
            frames are the same either way.
    """

    rate_hz: float = 10.0
    poses: str | None = None
    image_topic: str | None = None
    pose_topic: str | None = None
    keyframe_distance_m: float = 0.0
    decode_workers: str = 'auto'

    def __post_init__(self) -> None:
        _positive('source', 'rate_hz', self.rate_hz)
        _positive('source', 'keyframe_distance_m', self.keyframe_distance_m, allow_zero=True)
        text = str(self.decode_workers).strip().lower()
        if text != 'auto' and not (text.isdigit()):
            raise ConfigError(f'source.decode_workers = {self.decode_workers!r} must be auto or '
                              'an integer >= 0 (0 decodes images in-process)')


@dataclass(frozen=True)
class PatchNormConfig:
    """SeqSLAM's patch-normalised greyscale thumbnail.

    Attributes:
        width: thumbnail width in pixels.
        height: thumbnail height in pixels.
        patch_size: side of the square patches normalised to zero mean, unit std.
        normalize: ``l2`` scales every descriptor to unit length (what Euclidean distance
            needs: raw norms vary about threefold across frames, and the official SeqMatchNet
            baseline normalises); ``none`` keeps SeqSLAM's raw patch-normalised values (what
            SAD with contrast enhancement was made for); ``auto`` (default) is ``l2`` when
            ``matching.distance`` is ``euclidean`` and ``none`` when it is ``sad``, resolved
            when the whole :class:`Config` is built (alone, an :class:`EncoderConfig` takes
            ``auto`` as ``l2``). The encoder settings record the resolved value.
    """

    width: int = 64
    height: int = 32
    patch_size: int = 8
    normalize: str = 'auto'

    def __post_init__(self) -> None:
        _choice('encoder.patchnorm', 'normalize', self.normalize, PATCHNORM_NORMALIZE)
        for name in ('width', 'height', 'patch_size'):
            _positive('encoder.patchnorm', name, getattr(self, name))
        if self.width % self.patch_size or self.height % self.patch_size:
            raise ConfigError(
                f'encoder.patchnorm: width {self.width} and height {self.height} must be '
                f'multiples of patch_size {self.patch_size}')


@dataclass(frozen=True)
class TransformConfig:
    """Optional learnt transform after the frame encoder.

    Attributes:
        name: ``none`` or a registered transform (:mod:`vpr_seq_ros.encoders.registry`):
            ``seqmatchnet`` (y = L2norm(W x + b)).
        weights: checkpoint of the transform (SeqMatchNet layout or this project's).
        random_init: allow a seeded random transform (tests only; reported).
    """

    name: str = 'none'
    weights: str | None = None
    random_init: bool = False

    def __post_init__(self) -> None:
        from vpr_seq_ros.encoders.registry import transform_names  # torch-free, no cycle

        _choice('encoder.transform', 'name', self.name, ('none', *transform_names()))


@dataclass(frozen=True)
class EncoderConfig:
    """Per-frame descriptor.

    Attributes:
        name: a registered encoder (:mod:`vpr_seq_ros.encoders.registry`): ``patchnorm``
            (training-free), ``npy`` (precomputed descriptors, identity) or ``jist-r18``
            (JIST's ResNet-18 frame encoder).
        weights: checkpoint path of a learnt encoder, or an ONNX model card.
        random_init: allow seeded random weights (tests and benchmarks only; reported).
        runtime: ``torch`` or ``onnx``.
        device: ``cpu``, ``cuda`` or ``auto``.
        precision: numeric precision of a learnt encoder: ``fp32``, ``bf16`` (torch),
            ``fp16`` (torch on CUDA), ``int8`` (onnx, a card exported with int8) or ``auto``
            (the fastest path here whose parity with fp32 holds); see
            :mod:`vpr_seq_ros.encoders.precision`.
        calibration_run: image folder or bag of the user's run; frames spread over it calibrate
            int8 export and the parity gate of reduced precisions (None: seeded synthetic
            images).
        calibration_frames: number of calibration frames (>= 3).
        batch_size: frames per encoder call in offline tools.
        input_height: model input height in pixels.
        input_width: model input width in pixels.
    """

    name: str = 'patchnorm'
    weights: str | None = None
    random_init: bool = False
    runtime: str = 'torch'
    device: str = 'cpu'
    precision: str = 'fp32'
    calibration_run: str | None = None
    calibration_frames: int = 16
    batch_size: int = 16
    input_height: int = 480
    input_width: int = 640
    patchnorm: PatchNormConfig = field(default_factory=PatchNormConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)

    def __post_init__(self) -> None:
        from vpr_seq_ros.encoders.registry import encoder_names  # torch-free, no cycle

        _choice('encoder', 'name', self.name, encoder_names())
        _choice('encoder', 'runtime', self.runtime, RUNTIMES)
        _choice('encoder', 'device', self.device, DEVICES)
        _choice('encoder', 'precision', self.precision, PRECISIONS)
        if self.calibration_frames < 3:
            raise ConfigError(f'encoder.calibration_frames = {self.calibration_frames!r} must '
                              'be >= 3 (the parity check compares top-1 matches among them)')
        for name in ('batch_size', 'input_height', 'input_width'):
            _positive('encoder', name, getattr(self, name))


@dataclass(frozen=True)
class SequenceConfig:
    """Sequence windows.

    Attributes:
        length: L, frames per sequence.
        window: ``trailing`` (the last L frames, what a robot has seen) or ``centred`` (the
            official SeqMatchNet test protocol, shifted inward at the ends of a run).
    """

    length: int = 5
    window: str = 'trailing'

    def __post_init__(self) -> None:
        _positive('sequence', 'length', self.length)
        _choice('sequence', 'window', self.window, WINDOWS)


@dataclass(frozen=True)
class ContrastConfig:
    """SeqSLAM local contrast enhancement of each frame-distance column.

    Attributes:
        enabled: normalise every distance by the mean and std of its reference neighbourhood.
        window: half-width of that neighbourhood, in reference frames.
    """

    enabled: bool = False
    window: int = 10

    def __post_init__(self) -> None:
        _positive('matching.contrast', 'window', self.window)


INDEX_KINDS = ('exact', 'ivf-flat', 'ivf-pq', 'hnsw')


@dataclass(frozen=True)
class IndexConfig:
    """Nearest-neighbour search over the map (faiss), for large maps.

    ``exact`` scans the whole map for every frame. The approximate kinds are trained by
    ``build-map`` and stored in the map: for ``single`` and ``seqgem`` they are the retrieval;
    for ``seqmatch`` they propose candidate anchors whose sequence distance is then computed
    exactly (identity kernel, no contrast enhancement).

    Attributes:
        kind: ``exact``, ``ivf-flat``, ``ivf-pq`` or ``hnsw``.
        nlist: IVF cells (0: 4 sqrt(N)); build time.
        nprobe: IVF cells visited per search; search time.
        pq_m: IVF-PQ sub-quantisers (must divide D); build time.
        hnsw_m: HNSW graph degree; build time.
        ef_search: HNSW search beam; search time.
        candidates: nearest reference frames asked of the index per query frame (seqmatch),
            or per query (single, seqgem: at least ``matching.top_k``).
    """

    kind: str = 'exact'
    nlist: int = 0
    nprobe: int = 16
    pq_m: int = 64
    hnsw_m: int = 32
    ef_search: int = 128
    candidates: int = 32

    def __post_init__(self) -> None:
        _choice('matching.index', 'kind', self.kind, INDEX_KINDS)
        for name in ('nprobe', 'pq_m', 'hnsw_m', 'ef_search', 'candidates'):
            _positive('matching.index', name, getattr(self, name))
        _positive('matching.index', 'nlist', self.nlist, allow_zero=True)


@dataclass(frozen=True)
class MatchingConfig:
    """How queries are matched against the map.

    Attributes:
        method: a registered method (``vpr_seq_ros.matching.method_names()``): ``single``
            (nearest frame), ``seqmatch`` (mean aligned frame distance) or ``seqgem``
            (generalized-mean sequence descriptor, nearest neighbour).
        distance: frame distance for ``seqmatch``: ``euclidean`` or ``sad`` (sum of absolute
            differences, SeqSLAM).
        top_k: candidates kept per query.
        contrast: local contrast enhancement of distance columns (``seqmatch``).
        slopes: velocity search: reference frames advanced per query frame; 1.0 alone is the
            identity kernel.
        seqgem_p: SeqGeM exponent when the encoder does not provide a learnt one.
        velocity_kernel: velocity search kernels: ``rounded`` (each query frame on the nearest
            reference frame) or ``interpolated`` (between the two nearest).
        slope_scores: how slopes compete: ``standardised`` (each slope's scores of a query are
            standardised over the map first) or ``raw``.
        slope_penalty: constant-speed prior, in standard deviations per unit ``|ln slope|``,
            added to a slope's standardised score (0: none).
        index: nearest-neighbour search over the map (exact, or approximate for large maps).
        score_sample: S, the most reference anchors sampled (evenly spaced) for the mean and
            standard deviation behind a match's ``score``; every anchor when the map has at most
            S, so the score is then the full-scan one. The anchors around the best match are
            always counted exactly (see ``vpr_seq_ros.matching.score``). Exact and approximate
            search score alike; approximate search computes the sample's distances, S x L x D
            work per keyframe (lower S for speed, at an error growing as 1 / sqrt(S)).
    """

    method: str = 'seqmatch'
    distance: str = 'euclidean'
    top_k: int = 20
    contrast: ContrastConfig = field(default_factory=ContrastConfig)
    slopes: tuple[float, ...] = (1.0,)
    seqgem_p: float = 3.0
    velocity_kernel: str = 'rounded'
    slope_scores: str = 'standardised'
    slope_penalty: float = 3.0
    index: IndexConfig = field(default_factory=IndexConfig)
    score_sample: int = SCORE_SAMPLE

    def __post_init__(self) -> None:
        _choice('matching', 'method', self.method, method_names())
        _positive('matching', 'score_sample', self.score_sample)
        _choice('matching', 'distance', self.distance, DISTANCES)
        _positive('matching', 'top_k', self.top_k)
        if not self.slopes:
            raise ConfigError('matching.slopes must hold at least one slope')
        for slope in self.slopes:
            _positive('matching', 'slopes', slope)
        _positive('matching', 'seqgem_p', self.seqgem_p)
        _choice('matching', 'velocity_kernel', self.velocity_kernel, VELOCITY_KERNELS)
        _choice('matching', 'slope_scores', self.slope_scores, SLOPE_SCORES)
        _positive('matching', 'slope_penalty', self.slope_penalty, allow_zero=True)


@dataclass(frozen=True)
class MapConfig:
    """Reference map storage.

    Attributes:
        dtype: descriptor storage type, ``float32`` or ``float16`` (half the size).
    """

    dtype: str = 'float32'

    def __post_init__(self) -> None:
        _choice('map', 'dtype', self.dtype, MAP_DTYPES)


@dataclass(frozen=True)
class EvaluationConfig:
    """Ground truth and metrics.

    Attributes:
        gt: ``same-index`` (traverses aligned by frame index) or ``radius`` (metres, from
            poses).
        tolerance_frames: same-index tolerance, in frames.
        radius_m: positive radius for ``radius`` ground truth.
        recall_at: the K of Recall@K.
    """

    gt: str = 'same-index'
    tolerance_frames: int = 0
    radius_m: float = 25.0
    recall_at: tuple[int, ...] = (1, 5, 10, 20)

    def __post_init__(self) -> None:
        _choice('evaluation', 'gt', self.gt, GROUND_TRUTHS)
        _positive('evaluation', 'tolerance_frames', self.tolerance_frames, allow_zero=True)
        _positive('evaluation', 'radius_m', self.radius_m)
        if not self.recall_at:
            raise ConfigError('evaluation.recall_at must hold at least one K')
        for k in self.recall_at:
            _positive('evaluation', 'recall_at', k)


@dataclass(frozen=True)
class KeyframeConfig:
    """Which incoming frames are kept (encoded and matched).

    Attributes:
        min_distance_m: with odometry, keep a frame once the robot moved this far since the
            last kept frame (0 keeps all).
        min_interval_s: without odometry, keep a frame once this much time passed (0 keeps
            all).
        max_keyframes: slam mode: at most this many keyframes are stored (0: unbounded). Once
            reached, later keyframes are still matched (and can close loops onto the stored
            ones) but not stored; the node warns once and counts them in diagnostics
            (``keyframes_not_stored``). Each stored keyframe takes ``4 D + 61`` bytes plus the
            method's per-reference state (see ``vpr_seq_ros.runtime.store``).
    """

    min_distance_m: float = 0.0
    min_interval_s: float = 0.0
    max_keyframes: int = 0

    def __post_init__(self) -> None:
        _positive('node.keyframe', 'min_distance_m', self.min_distance_m, allow_zero=True)
        _positive('node.keyframe', 'min_interval_s', self.min_interval_s, allow_zero=True)
        _positive('node.keyframe', 'max_keyframes', self.max_keyframes, allow_zero=True)


@dataclass(frozen=True)
class LoopClosureConfig:
    """Loop-closure candidates in ``slam`` mode.

    Attributes:
        exclude_recent_s: never match the keyframes of the last this many seconds of the
            current time session (a backwards time jump, e.g. a bag played again, starts a new
            session; keyframes of earlier sessions stay matchable).
        exclude_recent_m: never match keyframes within this path length (odometry) of now.
        min_streak: publish only after this many consecutive keyframes matched consistently.
        streak_tolerance: consecutive matches are consistent when the matched index advanced
            by 1 +- this many keyframes.
        max_distance: candidates farther than this sequence distance are rejected (0: no
            threshold; the scale depends on the encoder, see vpr-seq replay).
        min_score: candidates must lie this many standard deviations below the mean distance
            to all past keyframes (encoder-independent; 0 disables).
        min_confidence: candidates must have at least this calibrated probability of being
            right (needs ``node.calibration``; 0 disables).
        search_radius_m: with poses (odometry, GPS, a run's frames.csv), only keyframes within
            this distance (metres) of the query keyframe's pose are candidates, like
            RTAB-Map's ``RGBD/LocalRadius`` with ``Rtabmap/LoopGPS``; keyframes without a pose
            stay candidates. Set it above the pose drift a loop can accumulate (0: no limit).
            The score is still computed over every non-recent keyframe.
    """

    exclude_recent_s: float = 30.0
    exclude_recent_m: float = 0.0
    min_streak: int = 3
    streak_tolerance: int = 2
    max_distance: float = 0.0
    min_score: float = 0.0
    min_confidence: float = 0.0
    search_radius_m: float = 0.0

    def __post_init__(self) -> None:
        _positive('node.loop_closure', 'exclude_recent_s', self.exclude_recent_s,
                  allow_zero=True)
        _positive('node.loop_closure', 'search_radius_m', self.search_radius_m,
                  allow_zero=True)
        _positive('node.loop_closure', 'exclude_recent_m', self.exclude_recent_m,
                  allow_zero=True)
        _positive('node.loop_closure', 'min_streak', self.min_streak)
        _positive('node.loop_closure', 'streak_tolerance', self.streak_tolerance,
                  allow_zero=True)
        _positive('node.loop_closure', 'max_distance', self.max_distance, allow_zero=True)
        _positive('node.loop_closure', 'min_score', self.min_score, allow_zero=True)
        if not 0 <= self.min_confidence <= 1:
            raise ConfigError(f'node.loop_closure.min_confidence = {self.min_confidence!r} '
                              'must be in [0, 1]')


@dataclass(frozen=True)
class NodeConfig:
    """The localization / loop-closure node (live and in replay).

    Attributes:
        mode: ``localization`` (match against a fixed map, opened read-only) or ``slam``
            (match against the robot's own past keyframes).
        map_path: reference map for ``localization``; where ``~/save_map`` writes in ``slam``.
        map_frame: frame id of published poses.
        image_transport: ``raw`` (``image``) or ``compressed`` (``image/compressed``).
        queue_depth: frames waiting for inference; the stalest are dropped beyond it.
        max_distance: hypotheses farther than this distance are not published as a pose
            (0: publish every best match).
        publish_markers: publish ``~/markers``.
        keyframe: keyframe gating.
        loop_closure: loop-closure candidates.
        verification: geometric verification of loop-closure candidates (slam mode).
        rtabmap: verified loop closures sent to RTAB-Map's ``add_link`` service (slam mode).
        calibration: a calibration file (``vpr-seq evaluate/replay --fit-calibration``) that
            maps each match's score to the probability it is right: published as
            ``confidence``, it scales the pose covariance and can gate loop closures ('':
            none).
    """

    mode: str = 'localization'
    map_path: str = ''
    map_frame: str = 'map'
    image_transport: str = 'raw'
    queue_depth: int = 2
    max_distance: float = 0.0
    publish_markers: bool = True
    keyframe: KeyframeConfig = field(default_factory=KeyframeConfig)
    loop_closure: LoopClosureConfig = field(default_factory=LoopClosureConfig)
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    rtabmap: RtabmapConfig = field(default_factory=RtabmapConfig)
    calibration: str = ''

    def __post_init__(self) -> None:
        _choice('node', 'mode', self.mode, NODE_MODES)
        _choice('node', 'image_transport', self.image_transport, IMAGE_TRANSPORTS)
        _positive('node', 'queue_depth', self.queue_depth)
        _positive('node', 'max_distance', self.max_distance, allow_zero=True)


@dataclass(frozen=True)
class Config:
    """The whole pipeline's configuration."""

    source: SourceConfig = field(default_factory=SourceConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    matching: MatchingConfig = field(default_factory=MatchingConfig)
    map: MapConfig = field(default_factory=MapConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    node: NodeConfig = field(default_factory=NodeConfig)

    def __post_init__(self) -> None:
        patchnorm = self.encoder.patchnorm
        if patchnorm.normalize == 'auto':  # normalise where the distance needs it
            resolved = 'l2' if self.matching.distance == 'euclidean' else 'none'
            object.__setattr__(self, 'encoder', dataclasses.replace(
                self.encoder, patchnorm=dataclasses.replace(patchnorm, normalize=resolved)))
        if self.sequence.window == 'centred' and tuple(self.matching.slopes) != (1.0,):
            raise ConfigError(
                'sequence.window = centred reproduces the official SeqMatchNet protocol, which '
                'has no velocity search: use matching.slopes = [1.0] or sequence.window = '
                'trailing')


# --------------------------------------------------------------------------- dict conversion


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(path: str, tp: Any, value: Any) -> Any:
    """Convert a YAML/CLI value to the declared field type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if _is_dataclass_type(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f'{path} must be a mapping, got {value!r}')
        return _from_dict(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(path, inner[0], value)
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f'{path} must be a list, got {value!r}')
        return tuple(_coerce(f'{path}[{i}]', item_tp, v) for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ('true', 'false', '1', '0', 'yes', 'no'):
            return value.lower() in ('true', '1', 'yes')
        raise ConfigError(f'{path} must be true or false, got {value!r}')
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f'{path} must be an integer, got {value!r}')
        try:
            return int(value)
        except ValueError as err:
            raise ConfigError(f'{path} must be an integer, got {value!r}') from err
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f'{path} must be a number, got {value!r}')
        try:
            return float(value)
        except ValueError as err:
            raise ConfigError(f'{path} must be a number, got {value!r}') from err
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f'{path} must be a string, got {value!r}')
        return str(value)
    raise ConfigError(f'{path}: unsupported type {tp!r}')  # pragma: no cover


def _from_dict(cls: type, data: Mapping[str, Any], prefix: str = '') -> Any:
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = f'{prefix}.' if prefix else ''
        raise ConfigError(
            f'unknown configuration key {where}{unknown[0]!s}; valid keys here: '
            f'{", ".join(where + n for n in names)}')
    kwargs = {}
    for name, value in data.items():
        path = f'{prefix}.{name}' if prefix else name
        kwargs[name] = _coerce(path, hints[name], value)
    try:
        return cls(**kwargs)
    except TypeError as err:  # pragma: no cover - all fields have defaults
        raise ConfigError(str(err)) from err


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Build a :class:`Config` from a nested mapping; unknown keys are errors."""
    return _from_dict(Config, data)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain-Python dict of a config (tuples become lists), YAML/JSON-ready."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def flatten(cfg: Any, prefix: str = '') -> dict[str, Any]:
    """Dotted projection of a config (``{'matching.top_k': 20, ...}``), as ROS parameters."""
    flat: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f'{prefix}{f.name}'
        if dataclasses.is_dataclass(value):
            flat.update(flatten(value, key + '.'))
        else:
            flat[key] = list(value) if isinstance(value, tuple) else value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten`: ``{'a.b': 1}`` -> ``{'a': {'b': 1}}``."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        parts = key.split('.')
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f'configuration key {key} clashes with {part}')
            node = child
        node[parts[-1]] = value
    return nested


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``override`` wins."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------- presets and files


def preset_dirs() -> list[Path]:
    """Folders searched for ``<preset>.yaml``: the source tree, then installed share dirs."""
    here = Path(__file__).resolve().parent
    dirs = [here.parent / 'config' / 'presets',
            Path(sys.prefix) / 'share' / 'vpr_seq_ros' / 'config' / 'presets']
    try:  # an installed ROS package
        from ament_index_python.packages import get_package_share_directory  # type: ignore

        dirs.append(Path(get_package_share_directory('vpr_seq_ros')) / 'config' / 'presets')
    except Exception:  # noqa: BLE001 - ament is optional
        pass
    return dirs


def available_presets() -> list[str]:
    """Names of all presets found."""
    names = set()
    for d in preset_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob('*.yaml'))
    return sorted(names)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f'cannot read configuration file {path}: {err}') from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f'configuration file {path} is not valid YAML: {err}') from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f'configuration file {path} must hold a mapping at its top level')
    return data


ROS_PARAMETER_KEYS = ('preset', 'config_file', 'use_sim_time')
"""Keys a node parameter file may hold under ``ros__parameters`` besides the schema."""


@dataclass(frozen=True)
class ConfigFile:
    """A configuration file as read: the schema part, and the preset a node file names.

    Attributes:
        data: nested mapping of (part of) the schema.
        preset: the ``preset`` parameter of a node parameter file ('' or None: none).
        is_node_file: whether it was a ROS parameter file (``<node>: ros__parameters:``).
    """

    data: dict[str, Any]
    preset: str | None = None
    is_node_file: bool = False


def read_config_file(path: str | Path) -> ConfigFile:
    """Read a schema YAML file, or a node parameter file of ``vpr_seq_node``.

    A node parameter file (``vpr_seq_node: ros__parameters: ...``, ``/**: ros__parameters:``,
    or a namespaced node name) holds the schema under ``ros__parameters``, nested or with
    dotted keys, plus the node's own ``preset``/``config_file``/``use_sim_time`` parameters.
    So thresholds tuned offline with ``vpr-seq replay`` are exactly the node's file.

    Raises:
        ConfigError: unreadable, not YAML, or a node file without a ``vpr_seq_node`` section.
    """
    path = Path(path)
    raw = _read_yaml(path)
    sections = {k: v for k, v in raw.items()
                if isinstance(v, Mapping) and 'ros__parameters' in v}
    if not sections:
        return ConfigFile(raw)
    ours = [k for k in sections
            if k == '/**' or str(k).rstrip('/').split('/')[-1] == 'vpr_seq_node']
    if not ours:
        raise ConfigError(f'{path} is a ROS parameter file without a vpr_seq_node or /** '
                          f'section (it has {", ".join(map(str, sections))})')
    params: dict[str, Any] = {}
    for key in sorted(ours, key=lambda k: k != '/**'):  # the node's own section wins
        params = merge(params, _nested(sections[key]['ros__parameters'] or {}))
    preset = params.pop('preset', None)
    config_file = params.pop('config_file', None)
    params.pop('use_sim_time', None)
    data: dict[str, Any] = {}
    if config_file:
        included = read_config_file(config_file)
        data, preset = included.data, preset or included.preset
    return ConfigFile(merge(data, params), str(preset) if preset else None, True)


def _nested(params: Mapping[str, Any]) -> dict[str, Any]:
    """ROS parameters may be nested or dotted (``matching.top_k: 5``): make them nested."""
    flat: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            name = f'{prefix}{key}'
            if isinstance(value, Mapping):
                walk(value, name + '.')
            else:
                flat[name] = value

    walk(params, '')
    return unflatten(flat)


def preset_dict(name: str) -> dict[str, Any]:
    """The raw mapping of a named preset."""
    for d in preset_dirs():
        path = d / f'{name}.yaml'
        if path.is_file():
            return _read_yaml(path)
    raise ConfigError(
        f'unknown preset {name!r}; available presets: {", ".join(available_presets()) or "none"}')


LAYERS = ('default', 'map', 'preset', 'file', 'flags')
"""Configuration layers, lowest first: each overrides the ones before it."""


@dataclass(frozen=True)
class ResolvedConfig:
    """A configuration and where each setting came from.

    Attributes:
        config: the resolved configuration.
        origin: dotted key -> the layer that set it last (one of :data:`LAYERS`); keys not
            listed keep the schema default.
        preset: the preset applied, if any.
        file: the configuration file applied, if any.
    """

    config: Config
    origin: dict[str, str]
    preset: str | None = None
    file: str | None = None

    def origin_of(self, key: str) -> str:
        """The layer a dotted key (or any key under a dotted prefix) came from."""
        if key in self.origin:
            return self.origin[key]
        under = [v for k, v in self.origin.items() if k.startswith(key + '.')]
        return max(under, key=LAYERS.index) if under else 'default'

    def from_map_only(self, prefix: str = '') -> list[str]:
        """Dotted keys (under ``prefix``) whose value comes from the map's configuration."""
        return sorted(k for k, v in self.origin.items()
                      if v == 'map' and k.startswith(prefix))


def _flat_keys(data: Mapping[str, Any], prefix: str = '') -> list[str]:
    keys = []
    for key, value in data.items():
        name = f'{prefix}{key}'
        if isinstance(value, Mapping) and value:
            keys.extend(_flat_keys(value, name + '.'))
        else:
            keys.append(name)
    return keys


def resolve_config(map_config: Mapping[str, Any] | None = None, preset: str | None = None,
                   file: str | Path | None = None,
                   overrides: Mapping[str, Any] | None = None) -> ResolvedConfig:
    """The one configuration resolution of the node, ``evaluate`` and ``replay``.

    Layers, each overriding the last: schema defaults < ``map_config`` (what a map was built
    with) < ``preset`` < ``file`` (schema YAML or a node parameter file, whose ``preset``
    parameter applies when no preset is given) < ``overrides`` (dotted keys: command-line
    flags or ROS parameters; None values are ignored).

    Raises:
        ConfigError: unknown preset or key, or an invalid value.
    """
    layers: list[tuple[str, dict[str, Any]]] = []
    if map_config:
        layers.append(('map', dict(map_config)))
    read = read_config_file(file) if file else None
    preset = preset or (read.preset if read else None)
    if preset:
        layers.append(('preset', preset_dict(preset)))
    if read is not None:
        layers.append(('file', read.data))
    if overrides:
        layers.append(('flags', unflatten({k: v for k, v in overrides.items()
                                           if v is not None})))
    data: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, layer in layers:
        data = merge(data, layer)
        origin.update({key: name for key in _flat_keys(layer)})
    return ResolvedConfig(config_from_dict(data), origin, preset or None,
                          str(file) if file else None)


def load_config(preset: str | None = None, file: str | Path | None = None,
                overrides: Mapping[str, Any] | None = None,
                base: Mapping[str, Any] | None = None) -> Config:
    """:func:`resolve_config` without the provenance: defaults < base < preset < file <
    dotted overrides.

    Raises:
        ConfigError: unknown preset or key, or an invalid value.
    """
    return resolve_config(base, preset, file, overrides).config


def field_type(key: str) -> Any:
    """The declared type of a dotted schema key (e.g. ``int`` for ``sequence.length``).

    Raises:
        ConfigError: no such key.
    """
    cls: Any = Config
    tp: Any = None
    for part in key.split('.'):
        hints = _field_types(cls) if _is_dataclass_type(cls) else {}
        if part not in hints:
            raise ConfigError(f'unknown configuration key {key}')
        tp = cls = hints[part]
    return tp


def field_default(key: str) -> Any:
    """The schema default of a dotted key."""
    return flatten(Config())[key]


def replace(cfg: Config, **dotted: Any) -> Config:
    """A copy of ``cfg`` with dotted keys replaced (validated like any other source)."""
    return config_from_dict(merge(to_dict(cfg), unflatten(dotted)))
