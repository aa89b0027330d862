"""Options shared by several sub-commands, and their mapping onto the configuration schema."""

from __future__ import annotations

import argparse
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from vpr_seq_ros.config import (DEVICES, DISTANCES, GROUND_TRUTHS, INDEX_KINDS,
                                MAP_DTYPES, METHODS,
                                NODE_MODES, PRECISIONS, RUNTIMES, VELOCITY_KERNELS, WINDOWS,
                                Config,
                                ResolvedConfig, available_presets, field_default, field_type,
                                resolve_config)
from vpr_seq_ros.encoders.registry import encoder_names, transform_names
from vpr_seq_ros.errors import ConfigError


@dataclass(frozen=True)
class Flag:
    """A command-line flag that sets one schema key: one meaning in every command.

    Attributes:
        key: the dotted schema key it sets.
        help: what it does (the default is appended from the schema).
        metavar: placeholder in ``--help``.
    """

    key: str
    help: str
    metavar: str | None = None


CHOICES: dict[str, tuple[str, ...]] = {
    'encoder.name': encoder_names(),
    'encoder.runtime': RUNTIMES,
    'encoder.device': DEVICES,
    'encoder.precision': PRECISIONS,
    'encoder.transform.name': ('none', *transform_names()),
    'sequence.window': WINDOWS,
    'matching.method': METHODS,
    'matching.distance': DISTANCES,
    'map.dtype': MAP_DTYPES,
    'evaluation.gt': GROUND_TRUTHS,
    'node.mode': NODE_MODES,
    'matching.index.kind': INDEX_KINDS,
    'matching.velocity_kernel': VELOCITY_KERNELS,
}
"""The closed sets of the schema, offered as ``choices``."""

_REGISTERED = {'encoder.name': encoder_names,
               'encoder.transform.name': lambda: ('none', *transform_names())}
"""Choices read from the encoder registry when a parser is built (it may have grown)."""

FLAGS: dict[str, Flag] = {
    # source
    'rate-hz': Flag('source.rate_hz', 'frame rate for synthesised stamps when the frames '
                    'carry none', 'HZ'),
    'poses': Flag('source.poses', 'frame table (name,stamp_ns,x,y,z,yaw,segment) instead of '
                  'SOURCE/frames.csv', 'CSV'),
    'image-topic': Flag('source.image_topic', 'bags: sensor_msgs/Image or CompressedImage '
                        'topic', 'TOPIC'),
    'pose-topic': Flag('source.pose_topic', 'bags: nav_msgs/Odometry, geometry_msgs/'
                       'PoseStamped, PoseWithCovarianceStamped or sensor_msgs/NavSatFix topic, '
                       'interpolated to image stamps', 'TOPIC'),
    'keyframe-distance-m': Flag('source.keyframe_distance_m', 'runs with poses: keep a frame '
                                'once the path since the last kept frame reaches M metres (the '
                                'papers use 2; 0 keeps all)', 'M'),
    'decode-workers': Flag('source.decode_workers', 'image folders and bags: processes that '
                           'decode images while frames are encoded (auto: cores - 1, at most '
                           '4, none below 2; 0: in-process)', 'N'),
    # encoder
    'encoder': Flag('encoder.name', 'frame descriptor: patchnorm (training-free thumbnail), '
                    'npy (precomputed .npy descriptors), jist-r18 (JIST ResNet-18)'),
    'weights': Flag('encoder.weights', 'checkpoint of a learnt encoder, or an ONNX model card '
                    '(.yaml)', 'PATH'),
    'random-init': Flag('encoder.random_init', 'allow seeded random weights when no --weights '
                        'is given (tests and benchmarks only; every output says so)'),
    'runtime': Flag('encoder.runtime', 'inference runtime for learnt encoders'),
    'device': Flag('encoder.device', 'torch device for learnt encoders'),
    'batch-size': Flag('encoder.batch_size', 'frames per encoder call', 'N'),
    'precision': Flag('encoder.precision', 'numeric precision of a learnt encoder: fp32, bf16 '
                      '(torch), fp16 (torch on CUDA), int8 (onnx card exported with int8), auto '
                      '(the fastest path here whose descriptors agree with fp32)'),
    'transform': Flag('encoder.transform.name', 'learnt transform after the frame encoder '
                      '(SeqMatchNet y = L2norm(Wx + b))'),
    'transform-weights': Flag('encoder.transform.weights', 'checkpoint of the transform '
                              "(SeqMatchNet layout or this project's)", 'PATH'),
    # sequence and matching
    'method': Flag('matching.method', 'single (nearest frame), seqmatch (mean aligned frame '
                   'distance), seqgem (generalized-mean sequence descriptor)'),
    'seq-len': Flag('sequence.length', 'sequence length in frames', 'L'),
    'window': Flag('sequence.window', 'trailing: the last L frames, as on a robot; centred: '
                   'the official SeqMatchNet test protocol'),
    'top-k': Flag('matching.top_k', 'candidates kept per query (published, and written to '
                  'the predictions file); Recall@K is computed from enough candidates for '
                  'every K whatever this is', 'K'),
    'distance': Flag('matching.distance', 'frame distance for seqmatch: euclidean '
                     '(SeqMatchNet) or sad (sum of absolute differences, SeqSLAM)'),
    'slopes': Flag('matching.slopes', 'velocity search: reference frames per query frame, '
                   'e.g. 0.8 1 1.25 (trailing windows only)', 'V'),
    'velocity-kernel': Flag('matching.velocity_kernel', 'velocity search kernels: rounded '
                            '(nearest reference frame) or interpolated'),
    'slope-penalty': Flag('matching.slope_penalty', 'velocity search: constant-speed prior in '
                          'standard deviations per unit |ln slope| (0: none)', 'S'),
    'seqgem-p': Flag('matching.seqgem_p', 'SeqGeM exponent when the model has no learnt one',
                     'P'),
    'index': Flag('matching.index.kind', 'nearest-neighbour search over the map: exact, or an '
                  'approximate faiss index trained by build-map and stored in the map (for '
                  'large maps)'),
    'nprobe': Flag('matching.index.nprobe', 'IVF cells visited per search', 'N'),
    'candidates': Flag('matching.index.candidates', 'approximate seqmatch: nearest reference '
                       'frames asked of the index per query frame', 'C'),
    'map-dtype': Flag('map.dtype', 'storage type of the map descriptors (float16 halves the '
                      'size)'),
    # ground truth and metrics
    'gt': Flag('evaluation.gt', 'same-index: runs aligned by frame index; radius: metres '
               'from poses (implied by --radius-m)'),
    'tolerance-frames': Flag('evaluation.tolerance_frames', 'same-index tolerance in frames',
                             'N'),
    'radius-m': Flag('evaluation.radius_m', 'positives within R metres (needs poses in map '
                     'and query)', 'R'),
    'recall-at': Flag('evaluation.recall_at', 'the K of Recall@K', 'K'),
    # the node (replay)
    'mode': Flag('node.mode', 'localization (against --map) or slam (loop closures against '
                 'the run itself)'),
    'keyframe-min-distance-m': Flag('node.keyframe.min_distance_m', 'the node\'s keyframe '
                                    'gating: keep a frame once the odometry path since the '
                                    'last keyframe reaches M metres (0 keeps all)', 'M'),
    'keyframe-min-interval-s': Flag('node.keyframe.min_interval_s', 'the node\'s keyframe '
                                    'gating without odometry: keep a frame every S seconds',
                                    'S'),
    'max-pose-distance': Flag('node.max_distance', 'localization: do not publish a pose for '
                              'matches farther than D (0: publish every best match)', 'D'),
    'exclude-recent-s': Flag('node.loop_closure.exclude_recent_s', 'slam: never match '
                             'keyframes of the last S seconds', 'S'),
    'exclude-recent-m': Flag('node.loop_closure.exclude_recent_m', 'slam: never match '
                             'keyframes within M metres of path (needs odometry)', 'M'),
    'search-radius-m': Flag('node.loop_closure.search_radius_m', 'slam: only keyframes '
                            'within M metres of the query\'s pose are candidates (needs '
                            'poses; 0: no limit)', 'M'),
    'min-streak': Flag('node.loop_closure.min_streak', 'slam: publish after K consistent '
                       'consecutive matches', 'K'),
    'streak-tolerance': Flag('node.loop_closure.streak_tolerance', 'slam: consecutive matches '
                             'are consistent when the match advanced by 1 +- N keyframes',
                             'N'),
    'max-distance': Flag('node.loop_closure.max_distance', 'slam: reject loop closures '
                         'farther than D (sequence distance; 0: no threshold)', 'D'),
    'verify': Flag('node.verification.enabled', 'slam: publish only loop closures that pass '
                   'geometric verification (local features, RANSAC); localization: verify '
                   'each hypothesis against the features stored in the map; needs images'),
    'map-features': Flag('node.verification.map_features', 'store each map frame\'s local '
                         'features in the map, so localization can verify its hypotheses '
                         '(needs images)'),
    'min-inliers': Flag('node.verification.min_inliers', 'RANSAC inliers needed to accept a '
                        'loop closure (slam; with tracks, to start one) or a hypothesis '
                        '(localization)', 'N'),
    'calibration': Flag('node.calibration', 'a calibration file (from --fit-calibration): '
                        'matches get a confidence, and the report the calibration error on '
                        'this run', 'FILE'),
    'min-confidence': Flag('node.loop_closure.min_confidence', 'slam: candidates need this '
                           'calibrated probability of being right (needs --calibration)', 'P'),
    'min-score': Flag('node.loop_closure.min_score', 'slam: candidates must lie S standard '
                      'deviations below the mean distance (0 disables)', 'S'),
}
"""Every flag that sets a schema key, by name; a flag means the same in every command."""

DERIVED_FLAGS = ('contrast-window',)
"""Flags that set more than one key (see :func:`overrides_from_args`)."""


def _default_text(key: str) -> str:
    value = field_default(key)
    if value is None or value == '':
        return 'none'
    if isinstance(value, list):
        return ' '.join(str(v) for v in value)
    return str(value)


def add_flags(parser: Any, names: Sequence[str], title: str | None = None) -> None:
    """Add schema flags by name to a parser (in a group when ``title`` is given); the type,
    choices and default shown in ``--help`` come from the schema."""
    group = parser.add_argument_group(title) if title else parser
    for name in names:
        if name == 'contrast-window':
            group.add_argument('--contrast-window', type=int, metavar='W',
                               help='SeqSLAM local contrast enhancement over +-W reference '
                               'frames (0 disables; default: disabled, W = '
                               f'{field_default("matching.contrast.window")} when enabled)')
            continue
        flag = FLAGS[name]
        tp = field_type(flag.key)
        kwargs: dict[str, Any] = {'help': f'{flag.help} (default: {_default_text(flag.key)})',
                                  'dest': name.replace('-', '_')}
        if tp is bool:
            kwargs.update(action='store_true', default=None)
        else:
            origin = typing.get_origin(tp)
            if origin is tuple:
                kwargs.update(nargs='+', type=typing.get_args(tp)[0])
            elif tp in (int, float):
                kwargs['type'] = tp
            if flag.key in CHOICES:
                registered = _REGISTERED.get(flag.key)
                kwargs['choices'] = registered() if registered else CHOICES[flag.key]
            if flag.metavar:
                kwargs['metavar'] = flag.metavar
        group.add_argument(f'--{name}', **kwargs)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted overrides of every schema flag that was given."""
    out: dict[str, Any] = {}
    for name, flag in FLAGS.items():
        value = getattr(args, name.replace('-', '_'), None)
        if value is not None:
            out[flag.key] = value
    contrast = getattr(args, 'contrast_window', None)
    if contrast is not None:
        out['matching.contrast.enabled'] = contrast > 0
        if contrast > 0:
            out['matching.contrast.window'] = contrast
    if getattr(args, 'radius_m', None) is not None and getattr(args, 'gt', None) is None:
        out['evaluation.gt'] = 'radius'
    return out


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """--preset and --config: where the configuration comes from."""
    group = parser.add_argument_group('configuration')
    group.add_argument('--preset', help='named preset from config/presets '
                       f'(available: {", ".join(available_presets()) or "none"})')
    group.add_argument('--config', metavar='FILE',
                       help='YAML file with (part of) the configuration schema, or the node\'s '
                       'own parameter file (vpr_seq_node: ros__parameters:, e.g. '
                       'config/localization.yaml); applied after the preset, before the flags')


SOURCE_HELP = ('a run: an image folder (frames sorted by file name; optional frames.csv with '
               'name,stamp_ns,x,y,z,yaw,segment), an (N, D) .npy descriptor file, or a bag (ROS 1 '
               '.bag, ROS 2 folder, .db3 or .mcap; give --image-topic)')
"""Help text of a run argument: every kind of source."""

SOURCE_FLAGS = ('rate-hz', 'poses', 'image-topic', 'pose-topic', 'keyframe-distance-m',
                'decode-workers')
ENCODER_FLAGS = ('encoder', 'weights', 'random-init', 'runtime', 'device', 'precision',
                 'batch-size', 'transform', 'transform-weights')
MATCHING_FLAGS = ('method', 'seq-len', 'window', 'top-k', 'index', 'nprobe', 'candidates')
SEQMATCH_FLAGS = ('distance', 'contrast-window', 'slopes', 'velocity-kernel', 'slope-penalty',
                  'seqgem-p')
GT_FLAGS = ('gt', 'tolerance-frames', 'radius-m', 'recall-at', 'calibration')
NODE_FLAGS = ('keyframe-min-distance-m', 'keyframe-min-interval-s', 'max-pose-distance',
              'exclude-recent-s', 'exclude-recent-m', 'search-radius-m', 'min-streak',
              'streak-tolerance', 'max-distance', 'min-score', 'min-confidence', 'verify',
              'min-inliers')


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """How a run is read: frame rate, frame table, bag topics, keyframe spacing."""
    add_flags(parser, SOURCE_FLAGS, 'source')


def add_encoder_options(parser: argparse.ArgumentParser) -> None:
    """Frame-encoder flags (override the preset/config file)."""
    add_flags(parser, ENCODER_FLAGS, 'frame encoder')


def add_matching_options(parser: argparse.ArgumentParser) -> None:
    """Sequence and matching flags (override the preset/config file)."""
    add_flags(parser, MATCHING_FLAGS, 'matching')


def resolve_from_args(args: argparse.Namespace, extra: Mapping[str, Any] | None = None,
                      map_config: Mapping[str, Any] | None = None) -> ResolvedConfig:
    """Resolve defaults < ``map_config`` < --preset < --config < flags (+ ``extra``)."""
    overrides = overrides_from_args(args)
    overrides.update({k: v for k, v in (extra or {}).items() if v is not None})
    return resolve_config(map_config, getattr(args, 'preset', None),
                          getattr(args, 'config', None), overrides)


def config_from_args(args: argparse.Namespace, extra: Mapping[str, Any] | None = None,
                     base: Mapping[str, Any] | None = None) -> Config:
    """:func:`resolve_from_args` without the provenance."""
    return resolve_from_args(args, extra, base).config


def add_fit_calibration_option(parser: argparse.ArgumentParser) -> None:
    """--fit-calibration: fit the score-to-probability map on this (validation) run."""
    parser.add_argument('--fit-calibration', metavar='OUT.json',
                        help='fit, on this run, a monotone map from the top-1 distance to the '
                        'probability that the match is right (isotonic regression), and write '
                        'it for node.calibration / --calibration on other runs')


def fit_and_write_calibration(distances: Any, correct: Any, path: str | Path) -> str:
    """Fit an isotonic distance calibration and write it; returns a line for the user."""
    from vpr_seq_ros.calibration import fit_calibration, save_calibration

    calibration = fit_calibration(distances, correct, feature='distance')
    written = save_calibration(calibration, path)
    return (f'calibration: {written} (fitted on {calibration.num_samples} matches, '
            f'{calibration.accuracy:.3f} of them right)')


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    """--overwrite: replace existing outputs (otherwise they are refused before any work)."""
    parser.add_argument('--overwrite', action='store_true',
                        help='replace existing output files (default: refuse, before any work)')


def check_output(path: str | Path | None, overwrite: bool, what: str = 'output') -> Path | None:
    """Check an output file before any work: its folder can be made and written, and it does
    not exist unless ``overwrite``.

    Raises:
        ConfigError: the file exists (without ``overwrite``) or its folder is not writable.
    """
    if path is None:
        return None
    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError(f'{what} {path} already exists; give --overwrite to replace it')
    if path.is_dir():
        raise ConfigError(f'{what} {path} is a folder, not a file')
    folder = path.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ConfigError(f'cannot write {what} {path}: {existing} is not a writable folder')
    return path


def check_plot_output(path: str | Path | None, overwrite: bool) -> Path | None:
    """A plot path checked before any work (:func:`vpr_seq_ros.plots.check_plot_path`: a
    format matplotlib writes, ``.png`` appended without a suffix), and not an existing file
    unless ``overwrite``."""
    if path is None:
        return None
    from vpr_seq_ros.plots import check_plot_path

    return check_output(check_plot_path(path), overwrite, 'plot')


def make_progress(total: int, desc: str, enabled: bool = True) -> Any:
    """A tqdm bar on stderr (entry points only); ``bar.update`` fits the pipeline's callback."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit='frame', disable=not enabled, leave=False)


class LazyProgress:
    """A progress bar created when the stage reports its total (``on_start``).

    Use as a context manager; pass ``bar.start`` as the stage's ``on_start`` and ``bar.update``
    as its ``progress`` callback.
    """

    def __init__(self, desc: str, enabled: bool = True) -> None:
        self.desc, self.enabled = desc, enabled
        self.bar: Any = None

    def start(self, total: int) -> None:
        self.bar = make_progress(total, self.desc, self.enabled)

    def update(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def __enter__(self) -> LazyProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
