"""Training data from a manifest: frames of every split, their places, segments and windows.

Each split has a *reference* side (the database) and a *query* side, concatenated over the
traverses of that role. A side holds per-frame data (frame descriptors ``(n, D)`` float32, or
resized images ``(n, H, W, 3)`` uint8), places and segment ids:

* places are positions in a common metric: ``(n, 1)`` frame indices for ``by: index`` (frame-
  aligned traverses), ``(n, 3)`` metres for ``by: position``; the distance between two frames is
  the Euclidean distance of their places, so one KD-tree serves both kinds of ground truth;
* a new segment starts at every traverse, every range and every segment of the source, so that
  sequences never cross one.

Frozen outputs (descriptors of the base encoder, resized images) can be cached on disk under a
key made of everything that determines them: the encoder's settings (with the weights' SHA-256),
the source's files (names, sizes, modification times), the source settings and the image size.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from vpr_seq_ros.encoders.base import FrameEncoder
from vpr_seq_ros.errors import SourceError
from vpr_seq_ros.matching.windows import window_starts
from vpr_seq_ros.sources import open_source
from vpr_seq_ros.training.manifest import GroundTruthSpec, Manifest, TraverseSpec
from vpr_seq_ros.types import EncodedRun
from vpr_seq_ros.writing import atomic_write

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
Progress = Callable[[int], None]


# --------------------------------------------------------------------------- value objects


@dataclass(frozen=True, eq=False)
class TraverseFrames:
    """The frames of one traverse that the requested splits use.

    Attributes:
        length: number of frames in the whole traverse.
        indices: ``(n,)`` int64 frame indices, ascending.
        data: ``(n, D)`` float32 descriptors or ``(n, H, W, 3)`` uint8 images, row per index.
        poses: ``(n, 4)`` float64 ``[x, y, z, yaw]`` or None when the traverse has none.
        segments: ``(n,)`` int64 segment ids of the source.
        geo_origin: ``(lat, lon, alt)`` the poses are expressed about (GPS bags), or None.
    """

    length: int
    indices: np.ndarray
    data: np.ndarray
    poses: np.ndarray | None
    segments: np.ndarray
    geo_origin: tuple[float, float, float] | None = None


@dataclass(frozen=True, eq=False)
class Side:
    """The reference or the query frames of one split.

    Attributes:
        data: ``(n, D)`` float32 descriptors or ``(n, H, W, 3)`` uint8 images.
        places: ``(n, k)`` float64 places (frame index, or x, y, z metres).
        yaw: ``(n,)`` float64 yaw in radians, NaN where unknown.
        segments: ``(n,)`` int64 segment ids; sequences never cross a change.
        traverse: ``(n,)`` int64 position of the frame's traverse in the manifest.
        frame_index: ``(n,)`` int64 index of the frame in its traverse.
    """

    data: np.ndarray
    places: np.ndarray
    yaw: np.ndarray
    segments: np.ndarray
    traverse: np.ndarray
    frame_index: np.ndarray

    def __len__(self) -> int:
        return int(self.data.shape[0])


@dataclass(frozen=True, eq=False)
class Split:
    """The two sides of a split."""

    ref: Side
    query: Side


# --------------------------------------------------------------------------- windows and places


def window_offset(length: int, window: str) -> int:
    """Position of the anchor frame inside its window (``L-1`` trailing, ``L//2`` centred)."""
    return length - 1 if window == 'trailing' else length // 2


def full_windows(segments: np.ndarray, length: int, window: str) -> tuple[np.ndarray, np.ndarray]:
    """First frame of every anchor's window, and whether the window is full and unshifted.

    Training uses only anchors whose window lies inside their segment without being shifted
    (the official ``getValidSeqInds``), so that an anchor always means the same frames.

    Returns:
        ``(starts, valid)``: ``(n,)`` int64 and ``(n,)`` bool.
    """
    starts, valid = window_starts(segments, length, window)
    anchors = np.arange(len(segments), dtype=np.int64)
    return starts, valid & (starts == anchors - window_offset(length, window))


def neighbours(ref_places: np.ndarray, query_places: np.ndarray,
               radius: float) -> list[np.ndarray]:
    """Reference rows within ``radius`` (inclusive) of every query row.

    Args:
        ref_places: ``(N, k)`` places.
        query_places: ``(M, k)`` places.
        radius: frames or metres.

    Returns:
        ``M`` sorted int64 arrays.
    """
    from scipy.spatial import cKDTree

    if len(ref_places) == 0:
        return [np.zeros(0, np.int64) for _ in range(len(query_places))]
    hits = cKDTree(ref_places).query_ball_point(query_places, r=radius)
    return [np.array(sorted(h), dtype=np.int64) for h in hits]


# --------------------------------------------------------------------------- cache


def _fingerprint(path: Path) -> list[Any]:
    """Names, sizes and modification times of the files that make a source."""
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob('*') if p.is_file() and not p.name.startswith('.'))
    if path.is_file():
        side = path.with_suffix('.frames.csv')
        if side.is_file():
            files.append(side)
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f.relative_to(path) if f != path else f.name), st.st_size,
                    st.st_mtime_ns])
    return out


def cache_key(spec: TraverseSpec, made_by: dict[str, Any],
              geo_origin: tuple[float, float, float] | None) -> str:
    """Hex key of what determines a traverse's cached frames."""
    path = Path(spec.path)
    payload = {'format': CACHE_FORMAT, 'path': str(path.resolve()), 'files': _fingerprint(path),
               'source': asdict(spec.source), 'made_by': made_by,
               'geo_origin': list(geo_origin) if geo_origin else None}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _cache_file(cache_dir: Path, spec: TraverseSpec, kind: str, key: str) -> Path:
    safe = ''.join(c if c.isalnum() or c in '-_' else '_' for c in spec.name)
    return cache_dir / f'{kind}-{safe}-{key[:20]}.npz'


def _save_cached(path: Path, frames: TraverseFrames, key: str) -> None:
    arrays = {'indices': frames.indices, 'data': frames.data, 'segments': frames.segments,
              'length': np.array(frames.length),
              'key': np.array(key),
              'geo_origin': np.array(frames.geo_origin if frames.geo_origin else [],
                                     dtype=np.float64)}
    if frames.poses is not None:
        arrays['poses'] = frames.poses

    def write(handle: Any) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        handle.write(buffer.getvalue())

    atomic_write(path, write)
    log.info('cached %s', path)


def _load_cached(path: Path, key: str) -> TraverseFrames | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z['key']) != key:
                return None
            origin = tuple(float(v) for v in z['geo_origin'])
            return TraverseFrames(int(z['length']), z['indices'], z['data'],
                                  z['poses'] if 'poses' in z.files else None, z['segments'],
                                  origin if len(origin) == 3 else None)  # type: ignore[arg-type]
    except (OSError, ValueError, KeyError) as err:
        log.warning('ignoring unreadable cache file %s (%s); recomputing', path, err)
        return None


# --------------------------------------------------------------------------- loaders


FrameLoader = Callable[[TraverseSpec, np.ndarray, 'tuple[float, float, float] | None'],
                       TraverseFrames]
"""Loads the frames at the given indices of a traverse (with the geodetic origin to use)."""


def _source(spec: TraverseSpec, origin: tuple[float, float, float] | None) -> Any:
    return open_source(spec.path, spec.source, origin)


def _run_poses(poses: list[np.ndarray | None], path: str) -> np.ndarray | None:
    have = [p is not None for p in poses]
    if any(have) and not all(have):
        raise SourceError(f'{path}: only {sum(have)} of {len(have)} frames have poses')
    return np.stack(poses) if poses and all(have) else None  # type: ignore[arg-type]


def descriptor_loader(encoder: FrameEncoder, cache_dir: str | Path | None = None,
                      batch_size: int = 64, progress: Progress | None = None) -> FrameLoader:
    """A loader that encodes every frame of a traverse with a frozen encoder (cached).

    The whole traverse is encoded once (and cached); the requested rows are then selected.
    """
    from vpr_seq_ros.pipeline import encode_run

    def load(spec: TraverseSpec, indices: np.ndarray,
             origin: tuple[float, float, float] | None) -> TraverseFrames:
        key = cache_key(spec, {'encoder': encoder.settings()}, origin)
        file = _cache_file(Path(cache_dir), spec, 'descriptors', key) if cache_dir else None
        whole = _load_cached(file, key) if file is not None else None
        if whole is None:
            source = _source(spec, origin)
            run: EncodedRun = encode_run(source, encoder, batch_size, progress)
            found = getattr(source, 'geo_origin', None)
            whole = TraverseFrames(len(run), np.arange(len(run), dtype=np.int64),
                                   run.descriptors, run.poses, run.segments,
                                   tuple(found) if found is not None else None)
            if file is not None:
                _save_cached(file, whole, key)
        else:
            log.info('descriptors of %s read from the cache %s', spec.name, file)
        _check_indices(spec, indices, whole.length)
        return TraverseFrames(whole.length, indices, whole.data[indices],
                              None if whole.poses is None else whole.poses[indices],
                              whole.segments[indices], whole.geo_origin)

    return load


def image_loader(height: int, width: int, cache_dir: str | Path | None = None,
                 progress: Progress | None = None) -> FrameLoader:
    """A loader that decodes the requested frames once, resized to ``height x width``
    (PIL bilinear, as the model's preprocessing), kept as uint8 (and cached)."""
    from vpr_seq_ros.preprocess import resize_rgb

    def load(spec: TraverseSpec, indices: np.ndarray,
             origin: tuple[float, float, float] | None) -> TraverseFrames:
        digest = hashlib.sha256(np.ascontiguousarray(indices).tobytes()).hexdigest()
        key = cache_key(spec, {'images': [height, width], 'indices': digest}, origin)
        file = _cache_file(Path(cache_dir), spec, 'images', key) if cache_dir else None
        cached = _load_cached(file, key) if file is not None else None
        if cached is not None:
            log.info('images of %s read from the cache %s', spec.name, file)
            return cached
        source = _source(spec, origin)
        if source.input_kind != 'image':
            raise SourceError(f'traverse {spec.name} ({spec.path}) holds descriptors, but this '
                              'training needs images; use an image folder or a bag')
        _check_indices(spec, indices, len(source))
        wanted = set(int(i) for i in indices)
        data = np.empty((len(indices), height, width, 3), dtype=np.uint8)
        poses: list[np.ndarray | None] = []
        segments = np.zeros(len(indices), dtype=np.int64)
        row = 0
        for frame in source:
            if frame.index not in wanted:
                continue
            data[row] = resize_rgb(frame.image, height, width)  # type: ignore[arg-type]
            poses.append(frame.pose.as_array() if frame.pose is not None else None)
            segments[row] = frame.segment
            row += 1
            if progress:
                progress(1)
        if row != len(indices):
            raise SourceError(f'traverse {spec.name} yielded {row} of the {len(indices)} '
                              'requested frames; the source changed while reading')
        found = getattr(source, 'geo_origin', None)
        frames = TraverseFrames(len(source), indices, data, _run_poses(poses, spec.path),
                                segments, tuple(found) if found is not None else None)
        if file is not None:
            _save_cached(file, frames, key)
        return frames

    return load


def _check_indices(spec: TraverseSpec, indices: np.ndarray, length: int) -> None:
    if len(indices) and int(indices.max()) >= length:
        raise SourceError(
            f'traverse {spec.name} ({spec.path}) has {length} frames, but its splits reach '
            f'frame {int(indices.max())}; shorten the ranges in the manifest to end <= {length}')


# --------------------------------------------------------------------------- assembling splits


def load_splits(manifest: Manifest, splits: Iterable[str], loader: FrameLoader
                ) -> dict[str, Split]:
    """Load the frames of the requested splits of every traverse and assemble the sides.

    Args:
        manifest: traverses, ranges and the ground-truth kind.
        splits: e.g. ``('train', 'val')``; the test split is never read by training.
        loader: :func:`descriptor_loader` or :func:`image_loader`.

    Returns:
        ``{split: Split}`` for every requested split that has frames on both sides.

    Raises:
        SourceError: unreadable traverses, ranges beyond a traverse's end, poses missing for
            ``by: position``.
    """
    splits = tuple(splits)
    by_position = manifest.ground_truth.by == 'position'
    origin: tuple[float, float, float] | None = None
    loaded: dict[int, TraverseFrames] = {}
    for t_id, spec in enumerate(manifest.traverses):
        ranges = manifest.splits_of(spec)
        wanted = [np.arange(a, b) for s in splits for a, b in ranges.ranges(s)]
        if not wanted:
            continue
        indices = np.unique(np.concatenate(wanted)).astype(np.int64)
        frames = loader(spec, indices, origin)
        if origin is None and frames.geo_origin is not None:
            origin = frames.geo_origin
        if by_position and frames.poses is None:
            raise SourceError(
                f'traverse {spec.name} ({spec.path}) has no poses, but ground_truth.by is '
                'position; give a frames.csv with x,y columns (or a pose topic for bags), or use '
                'by: index for frame-aligned traverses')
        loaded[t_id] = frames
        log.info('traverse %s: %d of %d frames loaded', spec.name, len(indices), frames.length)
    out = {}
    for split in splits:
        sides = [_side(manifest, split, role, loaded, by_position) for role in ('reference',
                                                                               'query')]
        if sides[0] is None or sides[1] is None:
            continue
        out[split] = Split(sides[0], sides[1])
    return out


def _side(manifest: Manifest, split: str, role: str, loaded: dict[int, TraverseFrames],
          by_position: bool) -> Side | None:
    parts = []
    for t_id, spec in enumerate(manifest.traverses):
        if spec.role != role or t_id not in loaded:
            continue
        frames = loaded[t_id]
        for r_id, (a, b) in enumerate(manifest.splits_of(spec).ranges(split)):
            rows = np.searchsorted(frames.indices, np.arange(a, b))
            poses = frames.poses[rows] if frames.poses is not None else None
            places = poses[:, :3] if by_position else np.arange(a, b, dtype=np.float64)[:, None]
            yaw = poses[:, 3] if poses is not None else np.full(b - a, np.nan)
            key = np.stack([np.full(b - a, t_id), np.full(b - a, r_id),
                            frames.segments[rows]], axis=1)
            parts.append((frames.data[rows], places, yaw, key, np.full(b - a, t_id),
                          np.arange(a, b)))
    if not parts:
        return None
    keys = np.concatenate([p[3] for p in parts])
    change = np.any(keys[1:] != keys[:-1], axis=1)
    segments = np.concatenate([[0], np.cumsum(change)]).astype(np.int64)
    return Side(np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]).astype(np.float64),
                np.concatenate([p[2] for p in parts]).astype(np.float64), segments,
                np.concatenate([p[4] for p in parts]).astype(np.int64),
                np.concatenate([p[5] for p in parts]).astype(np.int64))


def warn_place_overlap(splits: dict[str, Split], gt: GroundTruthSpec) -> None:
    """With ``by: position`` (where index ranges do not separate places), log a warning when
    validation or test queries lie within the positive or evaluation radius of training frames.
    """
    if gt.by != 'position' or 'train' not in splits:
        return
    radius = max(gt.positive_radius, gt.eval_radius)
    train = np.concatenate([splits['train'].ref.places, splits['train'].query.places])
    for name, split in splits.items():
        if name == 'train':
            continue
        query = split.query.places
        close = sum(len(h) > 0 for h in neighbours(train, query, radius))
        if close:
            log.warning('%d of %d %s query frames lie within %.1f m of a training frame: the '
                        'splits share places; choose ranges that cover different areas',
                        close, len(query), name, radius)


__all__ = ['Side', 'Split', 'TraverseFrames', 'cache_key', 'descriptor_loader',
           'full_windows', 'image_loader', 'load_splits', 'neighbours', 'warn_place_overlap',
           'window_offset']
