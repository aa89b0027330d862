"""The training manifest: which traverses, which frames for train / val / test, which radii.

A manifest is a small YAML file; relative paths in it are relative to its folder::

    traverses:                     # image folders, .npy descriptor files or bags
      - name: summer
        path: nordland_64x32/summer
        role: reference            # reference (the map) or query
      - name: winter
        path: nordland_64x32/winter
        role: query
        # source: {poses: frames.csv, image_topic: /cam/image_raw, pose_topic: /odom, ...}
        # splits: {...}            # per-traverse ranges, replacing the shared ones below
    splits:                        # frame-index ranges [start, end), one or a list per split
      train: [0, 800]
      val: [800, 1000]
      test: [[1000, 1100], [1100, 1200]]
    ground_truth:
      by: index                    # index: same index = same place; position: poses in metres
      positive_radius: 2           # training positives within this (frames or metres)
      negative_radius: 10          # training negatives beyond this
      eval_radius: 0               # validation / test positives within this

Rules (checked when the manifest is read, with messages that say what to change):

* at least one ``reference`` and one ``query`` traverse, unique names, known keys only;
* ranges are ``[start, end)`` with ``0 <= start < end``; within a traverse no two ranges overlap;
  with ``by: index`` ranges of *different* splits may not overlap across traverses either (the
  same index is the same place, so that would leak places between splits);
* ``negative_radius >= positive_radius``.

Every range is its own segment: sequences never cross a range boundary, nor a segment boundary
of the source (``segment`` in ``frames.csv``, recording gaps in bags).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from vpr_seq_ros.config import SourceConfig, _from_dict, _read_yaml
from vpr_seq_ros.errors import ConfigError

SPLITS = ('train', 'val', 'test')
ROLES = ('reference', 'query')
GROUND_TRUTH_BY = ('index', 'position')

Range = tuple[int, int]


@dataclass(frozen=True)
class SplitRanges:
    """Frame-index ranges ``[start, end)`` of each split.

    Attributes:
        train: training ranges.
        val: validation ranges (model selection).
        test: held-out ranges (never read by training).
    """

    train: tuple[tuple[int, ...], ...] = ()
    val: tuple[tuple[int, ...], ...] = ()
    test: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        for split in SPLITS:
            for item in getattr(self, split):
                if len(item) != 2:
                    raise ConfigError(f'splits.{split}: {list(item)} is not a range; write '
                                      '[start, end) as [start, end]')
                start, end = item
                if start < 0 or end <= start:
                    raise ConfigError(f'splits.{split}: range [{start}, {end}) must have '
                                      '0 <= start < end')

    def ranges(self, split: str) -> tuple[Range, ...]:
        """The ranges of one split as ``(start, end)`` pairs."""
        return tuple((int(a), int(b)) for a, b in getattr(self, split))

    def items(self) -> Iterator[tuple[str, Range]]:
        """Every ``(split, range)`` pair."""
        for split in SPLITS:
            for rng in self.ranges(split):
                yield split, rng


@dataclass(frozen=True)
class TraverseSpec:
    """One traverse (a run through the environment).

    Attributes:
        name: unique name, used in messages and cache keys.
        path: image folder, ``.npy`` descriptor file or bag.
        role: ``reference`` (database / map side) or ``query``.
        source: how the run is read (frame table, bag topics, keyframe distance, rate).
        splits: this traverse's own ranges (None: the manifest's shared ``splits``).
    """

    name: str = ''
    path: str = ''
    role: str = 'query'
    source: SourceConfig = field(default_factory=SourceConfig)
    splits: SplitRanges | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError('every traverse needs a name')
        if not self.path:
            raise ConfigError(f'traverse {self.name}: path is required (an image folder, .npy '
                              'file or bag)')
        if self.role not in ROLES:
            raise ConfigError(f'traverse {self.name}: role = {self.role!r} is not one of '
                              f'{", ".join(ROLES)}')


@dataclass(frozen=True)
class GroundTruthSpec:
    """Which frames show the same place.

    Attributes:
        by: ``index`` (frame-aligned traverses: distance = index difference, in frames) or
            ``position`` (Euclidean distance of the frames' poses, in metres).
        positive_radius: training positives lie within this distance.
        negative_radius: training negatives lie beyond this distance.
        eval_radius: validation and test positives lie within this distance.
    """

    by: str = 'index'
    positive_radius: float = 1.0
    negative_radius: float = 5.0
    eval_radius: float = 0.0

    def __post_init__(self) -> None:
        if self.by not in GROUND_TRUTH_BY:
            raise ConfigError(f'ground_truth.by = {self.by!r} is not one of '
                              f'{", ".join(GROUND_TRUTH_BY)}')
        for name in ('positive_radius', 'negative_radius', 'eval_radius'):
            if getattr(self, name) < 0:
                raise ConfigError(f'ground_truth.{name} must be >= 0')
        if self.negative_radius < self.positive_radius:
            raise ConfigError(f'ground_truth.negative_radius ({self.negative_radius}) must be >= '
                              f'positive_radius ({self.positive_radius})')


@dataclass(frozen=True)
class Manifest:
    """Traverses, splits and radii of a training set.

    Attributes:
        traverses: the traverses, in order.
        splits: ranges shared by traverses that give none of their own.
        ground_truth: radii.
    """

    traverses: tuple[TraverseSpec, ...] = ()
    splits: SplitRanges = field(default_factory=SplitRanges)
    ground_truth: GroundTruthSpec = field(default_factory=GroundTruthSpec)

    def __post_init__(self) -> None:
        names = [t.name for t in self.traverses]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ConfigError(f'traverse names must be unique; repeated: {", ".join(duplicated)}')
        for role in ROLES:
            if not any(t.role == role for t in self.traverses):
                raise ConfigError(f'the manifest needs at least one traverse with role: {role}')
        for traverse in self.traverses:
            _check_no_overlap([(s, r, traverse.name) for s, r in
                               self.splits_of(traverse).items()], same_split_ok=False)
        if self.ground_truth.by == 'index':
            _check_no_overlap([(s, r, t.name) for t in self.traverses
                               for s, r in self.splits_of(t).items()], same_split_ok=True)
        for role in ROLES:
            if not any(self.splits_of(t).ranges('train') for t in self.traverses
                       if t.role == role):
                raise ConfigError(f'no {role} traverse has a train range; add splits.train')

    def splits_of(self, traverse: TraverseSpec) -> SplitRanges:
        """The ranges that apply to a traverse."""
        return traverse.splits if traverse.splits is not None else self.splits

    def by_role(self, role: str) -> tuple[TraverseSpec, ...]:
        """The traverses of one role, in manifest order."""
        return tuple(t for t in self.traverses if t.role == role)


def _check_no_overlap(ranges: list[tuple[str, Range, str]], same_split_ok: bool) -> None:
    """Raise ConfigError when two ranges overlap (of different splits if ``same_split_ok``)."""
    for i, (split_a, (a0, a1), name_a) in enumerate(ranges):
        for split_b, (b0, b1), name_b in ranges[i + 1:]:
            if same_split_ok and split_a == split_b:
                continue
            if a0 < b1 and b0 < a1:
                where = name_a if name_a == name_b else f'{name_a} and {name_b}'
                hint = ('frames of one place may serve one split only'
                        if split_a != split_b else 'merge them into one range')
                raise ConfigError(
                    f'overlapping splits in {where}: {split_a} [{a0}, {a1}) overlaps {split_b} '
                    f'[{b0}, {b1}); {hint}')


def _normalise_ranges(value: Any) -> Any:
    """``[a, b]`` (one range) -> ``[[a, b]]``; anything else unchanged."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and \
            all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [list(value)]
    return value


def _normalise_splits(splits: Any) -> Any:
    if isinstance(splits, Mapping):
        return {k: _normalise_ranges(v) for k, v in splits.items()}
    return splits


def manifest_from_dict(data: Mapping[str, Any], folder: str | Path | None = None) -> Manifest:
    """Build a :class:`Manifest` from a nested mapping.

    Args:
        data: the YAML mapping.
        folder: relative traverse paths (and frame tables) are taken relative to this folder.

    Raises:
        ConfigError: unknown keys, bad values, overlapping splits.
    """
    data = dict(data)
    base = Path(folder) if folder is not None else None
    if 'splits' in data:
        data['splits'] = _normalise_splits(data['splits'])
    traverses = data.get('traverses')
    if traverses is not None:
        if not isinstance(traverses, (list, tuple)):
            raise ConfigError('traverses must be a list of {name, path, role} mappings')
        fixed = []
        for item in traverses:
            if not isinstance(item, Mapping):
                raise ConfigError(f'traverses: {item!r} is not a mapping with name, path, role')
            item = dict(item)
            if 'splits' in item:
                item['splits'] = _normalise_splits(item['splits'])
            if base is not None and isinstance(item.get('path'), str):
                item['path'] = _relative_to(item['path'], base)
            source = item.get('source')
            if base is not None and isinstance(source, Mapping) and \
                    isinstance(source.get('poses'), str):
                item['source'] = {**source, 'poses': _relative_to(source['poses'], base)}
            fixed.append(item)
        data['traverses'] = fixed
    return _from_dict(Manifest, data, 'manifest')


def _relative_to(path: str, base: Path) -> str:
    p = Path(path).expanduser()
    return os.path.normpath(p if p.is_absolute() else base / p)


def load_manifest(path: str | Path) -> Manifest:
    """Read a manifest YAML file; relative paths in it (traverses and their frame tables) are
    relative to the folder of the file, whatever the current folder, and every one must exist.

    Raises:
        ConfigError: unreadable file, unknown keys, bad values, overlapping splits, a traverse
            or frame table that does not exist (named as written and as resolved).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f'manifest {path} does not exist; set data.manifest to the YAML file '
                          'that lists the traverses (see config/training/)')
    folder = path.resolve().parent
    data = _read_yaml(path)
    try:
        manifest = manifest_from_dict(data, folder)
    except ConfigError as err:
        raise ConfigError(f'manifest {path}: {err}') from err
    written = {t.get('name'): t for t in data.get('traverses') or () if isinstance(t, Mapping)}
    for traverse in manifest.traverses:
        raw = written.get(traverse.name, {})
        checks = [('path', traverse.path, raw.get('path'))]
        if traverse.source.poses:
            checks.append(('source.poses', traverse.source.poses,
                           (raw.get('source') or {}).get('poses')))
        for key, resolved, given in checks:
            if not Path(resolved).exists():
                relative = given is not None and not Path(str(given)).expanduser().is_absolute()
                where = f' (relative paths are taken from the folder of the manifest, {folder})' \
                    if relative else ''
                raise ConfigError(f'manifest {path}: traverse {traverse.name}: {key} '
                                  f'{given if given is not None else resolved!r} does not exist'
                                  f'{where}: {resolved}. Fix the path in the manifest.')
    return manifest


__all__ = ['GroundTruthSpec', 'Manifest', 'SplitRanges', 'TraverseSpec', 'load_manifest',
           'manifest_from_dict']
