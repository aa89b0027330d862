"""Options shared by several sub-commands, and their mapping onto the configuration schema."""

from __future__ import annotations

import argparse
from typing import Any, Mapping

from vpr_seq_ros.config import (ENCODERS, METHODS, RUNTIMES, WINDOWS, Config, available_presets,
                                load_config)


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """--preset and --config: where the configuration comes from."""
    group = parser.add_argument_group('configuration')
    group.add_argument('--preset', help='named preset from config/presets '
                       f'(available: {", ".join(available_presets()) or "none"})')
    group.add_argument('--config', metavar='FILE',
                       help='YAML file with (part of) the configuration schema; applied after '
                       'the preset, before the command-line flags')


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """How a run is read: frame rate, frame table, bag topics, keyframe spacing."""
    group = parser.add_argument_group('source')
    group.add_argument('--rate-hz', type=float,
                       help='frame rate for synthesised stamps when the frames carry none '
                       '(default 10)')
    group.add_argument('--poses', metavar='CSV',
                       help='frame table (name,stamp_ns,x,y,z,yaw,segment) instead of '
                       'SOURCE/frames.csv')
    group.add_argument('--image-topic', metavar='TOPIC',
                       help='bags: sensor_msgs/Image or CompressedImage topic')
    group.add_argument('--pose-topic', metavar='TOPIC',
                       help='bags: nav_msgs/Odometry, geometry_msgs/PoseStamped, '
                       'PoseWithCovarianceStamped or sensor_msgs/NavSatFix topic, '
                       'interpolated to image stamps')
    group.add_argument('--keyframe-distance-m', type=float, metavar='M',
                       help='bags with poses: keep a frame only once the robot moved M metres '
                       '(the papers use 2)')


def add_encoder_options(parser: argparse.ArgumentParser) -> None:
    """Frame-encoder flags (override the preset/config file)."""
    group = parser.add_argument_group('frame encoder')
    group.add_argument('--encoder', choices=ENCODERS,
                       help='frame descriptor: patchnorm (training-free thumbnail), npy '
                       '(precomputed .npy descriptors), jist-r18 (JIST ResNet-18)')
    group.add_argument('--weights', metavar='PATH',
                       help='checkpoint of a learnt encoder, or an ONNX model card (.yaml)')
    group.add_argument('--random-init', action='store_true', default=None,
                       help='allow seeded random weights when no --weights is given (tests and '
                       'benchmarks only; every output says so)')
    group.add_argument('--runtime', choices=RUNTIMES,
                       help='inference runtime for learnt encoders')
    group.add_argument('--device', choices=('cpu', 'cuda', 'auto'),
                       help='torch device for learnt encoders')
    group.add_argument('--transform', choices=('none', 'seqmatchnet'),
                       help='learnt transform after the frame encoder (SeqMatchNet y = '
                       'L2norm(Wx + b))')
    group.add_argument('--transform-weights', metavar='PATH',
                       help='checkpoint of the transform (SeqMatchNet layout or this '
                       "project's)")


def add_matching_options(parser: argparse.ArgumentParser) -> None:
    """Sequence and matching flags (override the preset/config file)."""
    group = parser.add_argument_group('matching')
    group.add_argument('--method', choices=METHODS,
                       help='single (nearest frame), seqmatch (mean aligned frame distance), '
                       'seqgem (generalized-mean sequence descriptor)')
    group.add_argument('--seq-len', type=int, metavar='L', help='sequence length in frames')
    group.add_argument('--window', choices=WINDOWS,
                       help='trailing: the last L frames, as on a robot (default); centred: the '
                       'official SeqMatchNet test protocol')
    group.add_argument('--top-k', type=int, metavar='K', help='candidates kept per query')


_FLAG_KEYS = {
    'encoder': 'encoder.name',
    'weights': 'encoder.weights',
    'random_init': 'encoder.random_init',
    'runtime': 'encoder.runtime',
    'device': 'encoder.device',
    'transform': 'encoder.transform.name',
    'transform_weights': 'encoder.transform.weights',
    'method': 'matching.method',
    'seq_len': 'sequence.length',
    'window': 'sequence.window',
    'top_k': 'matching.top_k',
    'rate_hz': 'source.rate_hz',
    'poses': 'source.poses',
    'image_topic': 'source.image_topic',
    'pose_topic': 'source.pose_topic',
    'keyframe_distance_m': 'source.keyframe_distance_m',
}


def config_from_args(args: argparse.Namespace, extra: Mapping[str, Any] | None = None,
                     base: Mapping[str, Any] | None = None) -> Config:
    """Resolve defaults < ``base`` < --preset < --config < flags < ``extra`` dotted overrides."""
    overrides = {key: getattr(args, flag) for flag, key in _FLAG_KEYS.items()
                 if getattr(args, flag, None) is not None}
    overrides.update({k: v for k, v in (extra or {}).items() if v is not None})
    return load_config(getattr(args, 'preset', None), getattr(args, 'config', None), overrides,
                       base)


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
