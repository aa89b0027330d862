"""A bounded per-keyframe store of local features, and its ``.npz`` form for reference maps.

Compact storage per keypoint: position as uint16 in 1/8 pixel (images up to 8191 pixels wide),
the descriptor as uint8 (32 bytes ORB, 61 AKAZE, 128 SIFT), and the depth as float16 metres when
the keyframe had a depth image. An ORB keyframe of 1000 keypoints takes about 36 kB (38 kB with
depth).

Eviction when more than ``max_keyframes`` are held (the newest ``keep_recent`` are never
evicted, they are the queries still being verified):

* ``thin``: drop the keyframe whose two stored neighbours (by index) are closest together, the
  oldest on ties (the first keyframe is kept). The store then covers the whole trajectory at a
  uniform density that decreases as the run grows, so old places stay verifiable (a candidate
  whose exact keyframe was thinned out is verified against the nearest stored one).
* ``oldest``: drop the oldest keyframe: memory is bounded and loop closures only reach back
  ``max_keyframes`` keyframes.
"""

from __future__ import annotations

import bisect
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from vpr_seq_ros.verification.config import EVICTIONS, VerificationConfig
from vpr_seq_ros.verification.errors import VerificationError
from vpr_seq_ros.verification.geometry import DESCRIPTOR_WIDTH, FeatureExtractor, Features

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KEYPOINT_SCALE = 8.0
"""Stored keypoint units per pixel (uint16: positions up to 8191.875 pixels)."""


@dataclass(frozen=True, eq=False)
class _Entry:
    keypoints_q: np.ndarray  # (N, 2) uint16, 1/8 px
    descriptors: np.ndarray  # (N, D) uint8
    image_size: tuple[int, int]
    depth_m: np.ndarray | None  # (N,) float16

    @property
    def nbytes(self) -> int:
        depth = 0 if self.depth_m is None else self.depth_m.nbytes
        return self.keypoints_q.nbytes + self.descriptors.nbytes + depth


def _compact(features: Features) -> _Entry:
    width, height = features.image_size
    if max(width, height) * KEYPOINT_SCALE > np.iinfo(np.uint16).max:
        raise VerificationError(f'images of {width} x {height} pixels are too large for the '
                                'feature store (8191 pixels at most): lower max_image_width '
                                'is not enough, downscale the images')
    points = np.clip(np.rint(features.keypoints * KEYPOINT_SCALE), 0, np.iinfo(np.uint16).max)
    depth = None if features.depth_m is None else features.depth_m.astype(np.float16)
    return _Entry(points.astype(np.uint16).reshape(-1, 2),
                  np.ascontiguousarray(features.descriptors, np.uint8),
                  (int(width), int(height)), depth)


class FeatureStore:
    """Features of keyframes, keyed by keyframe index, bounded in count.

    Args:
        feature: feature type every stored keyframe must have.
        max_keyframes: keyframes kept at most.
        eviction: ``thin`` or ``oldest`` (see the module docstring).
        keep_recent: the newest keyframes that are never evicted.

    Raises:
        VerificationError: unknown eviction policy or inconsistent bounds.
    """

    def __init__(self, feature: str, max_keyframes: int, eviction: str = 'thin',
                 keep_recent: int = 0) -> None:
        if eviction not in EVICTIONS:
            raise VerificationError(f'unknown eviction {eviction!r}; valid: '
                                    f'{", ".join(EVICTIONS)}')
        if feature not in DESCRIPTOR_WIDTH:
            raise VerificationError(f'unknown feature {feature!r}; valid: '
                                    f'{", ".join(DESCRIPTOR_WIDTH)}')
        if max_keyframes < 2 or not 0 <= keep_recent < max_keyframes:
            raise VerificationError(f'need max_keyframes >= 2 and 0 <= keep_recent < '
                                    f'max_keyframes, got {max_keyframes}, {keep_recent}')
        self.feature = feature
        self.max_keyframes = max_keyframes
        self.eviction = eviction
        self.keep_recent = keep_recent
        self.evicted = 0
        self._entries: dict[int, _Entry] = {}
        self._indices: list[int] = []  # sorted
        self._nbytes = 0

    @classmethod
    def from_config(cls, cfg: VerificationConfig) -> FeatureStore:
        """The store ``cfg`` asks for (feature, max_keyframes, eviction, keep_recent)."""
        return cls(cfg.feature, cfg.max_keyframes, cfg.eviction, cfg.keep_recent)

    # ------------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self._indices)

    def __contains__(self, index: object) -> bool:
        return index in self._entries

    @property
    def indices(self) -> np.ndarray:
        """``(K,)`` int64 stored keyframe indices, ascending."""
        return np.asarray(self._indices, np.int64)

    @property
    def nbytes(self) -> int:
        """Bytes of keypoints, descriptors and depths held."""
        return self._nbytes

    @property
    def num_keypoints(self) -> int:
        """Keypoints held over all keyframes."""
        return sum(len(e.keypoints_q) for e in self._entries.values())

    def summary(self) -> dict[str, float | str]:
        """Feature type, keyframes, keypoints and bytes (per keyframe too), for reports such
        as ``vpr-seq inspect``."""
        n = len(self)
        return {'feature': self.feature, 'keyframes': n, 'bytes': self._nbytes,
                'bytes_per_keyframe': self.bytes_per_keyframe,
                'keypoints_per_keyframe': self.num_keypoints / n if n else 0.0,
                'max_keyframes': self.max_keyframes, 'eviction': self.eviction,
                'evicted': self.evicted}

    @property
    def bytes_per_keyframe(self) -> float:
        """Mean bytes per stored keyframe (0 when empty)."""
        return self._nbytes / len(self) if len(self) else 0.0

    def get(self, index: int) -> Features | None:
        """The features of keyframe ``index`` (keypoints dequantised), or None."""
        entry = self._entries.get(index)
        if entry is None:
            return None
        depth = None if entry.depth_m is None else entry.depth_m.astype(np.float32)
        return Features(self.feature, entry.keypoints_q.astype(np.float32) / KEYPOINT_SCALE,
                        entry.descriptors, entry.image_size, depth)

    def nearest(self, index: int, max_offset: int) -> int | None:
        """The stored keyframe index closest to ``index`` within ``max_offset`` (the lower
        one on ties), or None."""
        if index in self._entries:
            return index
        pos = bisect.bisect_left(self._indices, index)
        around = [self._indices[p] for p in (pos - 1, pos) if 0 <= p < len(self._indices)]
        around = [i for i in around if abs(i - index) <= max_offset]
        return min(around, key=lambda i: (abs(i - index), i)) if around else None

    # ------------------------------------------------------------------------ updates
    def add(self, index: int, features: Features) -> list[int]:
        """Store a keyframe's features (replacing any under the same index).

        Returns:
            The indices evicted to stay within ``max_keyframes``.

        Raises:
            VerificationError: features of another type than the store's.
        """
        if features.feature != self.feature:
            raise VerificationError(f'the store holds {self.feature} features, got '
                                    f'{features.feature}: use one feature type per store')
        self._remove(index)
        entry = _compact(features)
        self._entries[index] = entry
        bisect.insort(self._indices, index)
        self._nbytes += entry.nbytes
        evicted = []
        while len(self._indices) > self.max_keyframes:
            victim = self._victim()
            self._remove(victim)
            self.evicted += 1
            evicted.append(victim)
        return evicted

    def _remove(self, index: int) -> None:
        entry = self._entries.pop(index, None)
        if entry is not None:
            self._indices.remove(index)
            self._nbytes -= entry.nbytes

    def _victim(self) -> int:
        n = len(self._indices)
        # candidates: positions 1 .. last - 1 (the first is kept, the newest keep_recent are
        # protected, and each candidate has a stored neighbour on both sides)
        last = min(n - self.keep_recent, n - 1)
        if self.eviction == 'oldest' or last < 2:
            return self._indices[0]
        idx = np.asarray(self._indices, np.int64)
        gaps = idx[2:last + 1] - idx[:last - 1]
        return int(idx[1 + int(np.argmin(gaps))])

    # ------------------------------------------------------------------------ arrays
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The store as flat arrays (what :func:`save_features` writes; a reference map can
        hold them under its own keys).

        Returns:
            ``format_version`` (), ``feature`` () str, ``indices`` (K,) int64, ``offsets``
            (K + 1,) int64 into the keypoint rows, ``image_sizes`` (K, 2) int32,
            ``keypoints_q8`` (N, 2) uint16 (1/8 px), ``descriptors`` (N, D) uint8, and, when
            any keyframe had depth, ``has_depth`` (K,) bool and ``depth_m`` (N,) float16.
        """
        entries = [self._entries[i] for i in self._indices]
        counts = [len(e.keypoints_q) for e in entries]
        dim = DESCRIPTOR_WIDTH[self.feature]
        arrays = {
            'format_version': np.asarray(FORMAT_VERSION, np.int64),
            'feature': np.asarray(self.feature),
            'indices': self.indices,
            'offsets': np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            'image_sizes': np.asarray([e.image_size for e in entries], np.int32).reshape(-1, 2),
            'keypoints_q8': np.concatenate([e.keypoints_q for e in entries]) if entries
            else np.zeros((0, 2), np.uint16),
            'descriptors': np.concatenate([e.descriptors for e in entries]) if entries
            else np.zeros((0, dim), np.uint8),
        }
        if any(e.depth_m is not None for e in entries):
            arrays['has_depth'] = np.asarray([e.depth_m is not None for e in entries], bool)
            arrays['depth_m'] = np.concatenate([
                e.depth_m if e.depth_m is not None else np.full(n, np.nan, np.float16)
                for e, n in zip(entries, counts)]).astype(np.float16)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray] | np.lib.npyio.NpzFile,
                    max_keyframes: int | None = None, eviction: str = 'thin',
                    keep_recent: int = 0) -> FeatureStore:
        """Rebuild a store from :meth:`to_arrays` output.

        Args:
            arrays: the arrays.
            max_keyframes: bound of the rebuilt store (default: exactly the stored count, at
                least 2: a reference map's store is read, not grown).
            eviction: eviction policy of the rebuilt store.
            keep_recent: newest keyframes never evicted.

        Raises:
            VerificationError: missing arrays, another format version or inconsistent sizes.
        """
        try:
            version = int(arrays['format_version'])
            feature = str(arrays['feature'])
            indices = np.asarray(arrays['indices'], np.int64)
            offsets = np.asarray(arrays['offsets'], np.int64)
            sizes = np.asarray(arrays['image_sizes'])
            keypoints = np.asarray(arrays['keypoints_q8'])
            descriptors = np.asarray(arrays['descriptors'])
            has_depth = np.asarray(arrays['has_depth']) if 'has_depth' in arrays else None
            depth = np.asarray(arrays['depth_m']) if 'depth_m' in arrays else None
        except KeyError as err:
            raise VerificationError(f'feature arrays lack {err}: rebuild the map\'s features '
                                    'with this version') from err
        if version != FORMAT_VERSION:
            raise VerificationError(f'feature format version {version}, this code reads '
                                    f'{FORMAT_VERSION}: rebuild the map\'s features')
        if len(offsets) != len(indices) + 1 or offsets[-1] != len(keypoints) or \
                len(descriptors) != len(keypoints) or len(sizes) != len(indices):
            raise VerificationError('feature arrays have inconsistent sizes (a truncated or '
                                    'corrupt file): rebuild the map\'s features')
        bound = max(len(indices), 2) if max_keyframes is None else max_keyframes
        store = cls(feature, bound, eviction, min(keep_recent, bound - 1))
        for k, index in enumerate(indices):
            lo, hi = offsets[k], offsets[k + 1]
            entry_depth = None
            if has_depth is not None and depth is not None and has_depth[k]:
                entry_depth = depth[lo:hi].astype(np.float16)
            entry = _Entry(keypoints[lo:hi].astype(np.uint16), descriptors[lo:hi],
                           (int(sizes[k, 0]), int(sizes[k, 1])), entry_depth)
            store._entries[int(index)] = entry
            store._nbytes += entry.nbytes
        store._indices = sorted(store._entries)
        while len(store._indices) > store.max_keyframes:
            store._remove(store._victim())
            store.evicted += 1
        return store


class MapFeatures:
    """A reference map's stored features, read in place (read-only).

    The arrays are those of :meth:`FeatureStore.to_arrays` as a map holds them (memory-mapped
    by :func:`vpr_seq_ros.refmap.load_map`): a keyframe's keypoints and descriptors are read
    only when it is verified, so memory does not grow with the map.

    Args:
        arrays: ``format_version``, ``feature``, ``indices``, ``offsets``, ``image_sizes``,
            ``keypoints_q8``, ``descriptors`` (and optionally ``has_depth``, ``depth_m``).

    Raises:
        VerificationError: missing arrays, another format version or inconsistent sizes.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        try:
            version = int(np.asarray(arrays['format_version']))
            self.feature = str(np.asarray(arrays['feature']))
            self._indices = np.asarray(arrays['indices'], np.int64)
            self._offsets = np.asarray(arrays['offsets'], np.int64)
            self._sizes = np.asarray(arrays['image_sizes'])
            self._keypoints = arrays['keypoints_q8']
            self._descriptors = arrays['descriptors']
        except KeyError as err:
            raise VerificationError(f'the map\'s features lack {err}: rebuild the map with '
                                    'features') from err
        self._has_depth = arrays.get('has_depth')
        self._depth = arrays.get('depth_m')
        if version != FORMAT_VERSION:
            raise VerificationError(f'the map\'s features have format version {version}, this '
                                    f'code reads {FORMAT_VERSION}: rebuild the map with features')
        n = len(self._indices)
        if len(self._offsets) != n + 1 or int(self._offsets[-1]) != len(self._keypoints) or \
                len(self._descriptors) != len(self._keypoints) or len(self._sizes) != n or \
                (n > 1 and np.any(np.diff(self._indices) <= 0)) or \
                np.any(np.diff(self._offsets) < 0):
            raise VerificationError('the map\'s feature arrays have inconsistent sizes (a '
                                    'truncated or corrupt map): rebuild the map with features')
        if self.feature not in DESCRIPTOR_WIDTH:
            raise VerificationError(f'the map holds features of unknown type {self.feature!r}')

    def _row(self, index: int) -> int | None:
        """Position of map frame ``index`` in the arrays, or None."""
        k = int(np.searchsorted(self._indices, index))
        return k if k < len(self._indices) and int(self._indices[k]) == int(index) else None

    def __len__(self) -> int:
        return len(self._indices)

    def __contains__(self, index: object) -> bool:
        return isinstance(index, (int, np.integer)) and self._row(int(index)) is not None

    @property
    def indices(self) -> np.ndarray:
        """``(K,)`` int64 map frames that have features, ascending."""
        return self._indices

    @property
    def nbytes(self) -> int:
        """Bytes of keypoints, descriptors and depths stored."""
        total = int(self._keypoints.nbytes) + int(self._descriptors.nbytes)
        return total + (int(self._depth.nbytes) if self._depth is not None else 0)

    @property
    def num_keypoints(self) -> int:
        """Keypoints stored over all frames."""
        return int(self._offsets[-1])

    @property
    def bytes_per_keyframe(self) -> float:
        """Mean bytes per frame with features (0 when empty)."""
        return self.nbytes / len(self) if len(self) else 0.0

    def summary(self) -> dict[str, float | str]:
        """Feature type, frames, keypoints and bytes (per frame too)."""
        n = len(self)
        return {'feature': self.feature, 'keyframes': n, 'bytes': self.nbytes,
                'bytes_per_keyframe': self.bytes_per_keyframe,
                'keypoints_per_keyframe': self.num_keypoints / n if n else 0.0}

    def get(self, index: int) -> Features | None:
        """The features of map frame ``index`` (read from the map now), or None."""
        k = self._row(int(index))
        if k is None:
            return None
        lo, hi = int(self._offsets[k]), int(self._offsets[k + 1])
        depth = None
        if self._has_depth is not None and self._depth is not None and bool(self._has_depth[k]):
            depth = np.asarray(self._depth[lo:hi], np.float32)
        points = np.asarray(self._keypoints[lo:hi], np.float32).reshape(-1, 2) / KEYPOINT_SCALE
        return Features(self.feature, points, np.ascontiguousarray(self._descriptors[lo:hi]),
                        (int(self._sizes[k, 0]), int(self._sizes[k, 1])), depth)

    def nearest(self, index: int, max_offset: int) -> int | None:
        """The map frame with features closest to ``index`` within ``max_offset`` (the lower
        one on ties), or None."""
        if self._row(int(index)) is not None:
            return int(index)
        pos = int(np.searchsorted(self._indices, index))
        around = [int(self._indices[p]) for p in (pos - 1, pos) if 0 <= p < len(self._indices)]
        around = [i for i in around if abs(i - index) <= max_offset]
        return min(around, key=lambda i: (abs(i - index), i)) if around else None


def build_feature_store(frames: Iterable[tuple[int, np.ndarray]], cfg: VerificationConfig,
                        max_keyframes: int | None = None) -> FeatureStore:
    """Features of every frame of a run, e.g. a reference map's frames for ``build-map``.

    Args:
        frames: ``(index, image)`` pairs; images ``(H, W, 3)`` uint8 RGB or ``(H, W)`` grey.
        cfg: feature settings (feature, max_features, max_image_width).
        max_keyframes: bound (default: no eviction, however many frames come).

    Returns:
        The filled store.
    """
    extractor = FeatureExtractor(cfg)
    store = FeatureStore(cfg.feature, max_keyframes or 2**62, cfg.eviction)
    for index, image in frames:
        store.add(int(index), extractor.extract(image))
    return store


def save_features(store: FeatureStore, path: str | Path) -> Path:
    """Write a store to a ``.npz`` side file, atomically.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix='.npz', dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, **store.to_arrays())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info('saved features of %d keyframes (%.1f kB each) to %s', len(store),
             store.bytes_per_keyframe / 1e3, path)
    return path


def load_features(path: str | Path, max_keyframes: int | None = None) -> FeatureStore:
    """Read a store written by :func:`save_features`.

    Raises:
        VerificationError: missing, unreadable or incompatible file.
    """
    path = Path(path)
    if not path.is_file():
        raise VerificationError(f'feature file {path} not found: build the map with features '
                                'or disable verification')
    try:
        with np.load(path, allow_pickle=False) as data:
            return FeatureStore.from_arrays(data, max_keyframes)
    except (OSError, ValueError) as err:
        raise VerificationError(f'cannot read feature file {path}: {err}') from err
