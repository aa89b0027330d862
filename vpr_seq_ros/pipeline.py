"""Pipeline stages as typed functions: encode a run, build a map, evaluate a query run.

The CLI commands are thin shims over these; each is callable from Python. Progress is reported
through an optional callback so that only entry points draw bars.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Mapping

import numpy as np

from vpr_seq_ros import __version__
from vpr_seq_ros.config import (Config, ResolvedConfig, SourceConfig, flatten, resolve_config,
                                to_dict)
from vpr_seq_ros.encoders import FrameEncoder, build_encoder
from vpr_seq_ros.errors import ConfigError, MapError, SourceError
from vpr_seq_ros.evaluation import Metrics, compute_metrics, ground_truth, report_dict
from vpr_seq_ros.matching.methods import MatchOutput, SequenceMethod, build_method
from vpr_seq_ros.matching.windows import check_length, window_starts
from vpr_seq_ros.refmap import ReferenceMap, load_map, make_manifest, map_output_path, save_map
from vpr_seq_ros.sources import BAG_SUFFIXES, FrameSource, open_source
from vpr_seq_ros.sources.parallel import (prefetched,  # noqa: F401 - moved there; kept here
                                          read_frames, resolve_decode_workers)
from vpr_seq_ros.types import EncodedRun, Matches

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
"""Called with the number of frames just finished."""

MAX_PLOT_MATRIX = 40_000_000
"""Largest N * M for which evaluation keeps the full distance matrix (for the plot)."""


class _Rows:
    """Descriptor rows written into one preallocated array of the final dtype (grown by
    doubling when the source's length was an underestimate): memory is the final array plus a
    batch, never a list of blocks and their concatenation."""

    def __init__(self, capacity: int, dtype: np.dtype) -> None:
        self.capacity, self.dtype = max(int(capacity), 1), dtype
        self.array: np.ndarray | None = None
        self.count = 0

    def add(self, block: np.ndarray) -> None:
        if self.array is None:
            self.array = np.empty((self.capacity, block.shape[1]), self.dtype)
        if self.count + len(block) > len(self.array):
            grown = np.empty((max(2 * len(self.array), self.count + len(block)),
                              self.array.shape[1]), self.dtype)
            grown[:self.count] = self.array[:self.count]
            self.array = grown
        self.array[self.count:self.count + len(block)] = block
        self.count += len(block)

    def result(self) -> np.ndarray:
        assert self.array is not None
        return self.array[:self.count]


def encode_run(source: FrameSource, encoder: FrameEncoder, batch_size: int = 16,
               progress: Progress | None = None, dtype: str = 'float32',
               decode_workers: int | str = 0) -> EncodedRun:
    """Encode every frame of a source exactly once, in bounded memory.

    Frames are read one batch ahead in a background thread while the previous batch is
    encoded; with ``decode_workers``, images are decoded by that many worker processes, in
    order, at most two batches ahead (:func:`vpr_seq_ros.sources.parallel.read_frames`). The
    result is the same bit for bit.

    Args:
        dtype: storage type of the descriptors (``float32``, or ``float16`` for a map stored
            as such): rows are written into one array of that type as they are encoded.
        decode_workers: decoding worker processes: a count (0 decodes in-process) or
            ``'auto'`` (the ``source.decode_workers`` setting).

    Raises:
        SourceError: the source and the encoder take different inputs, the source is empty,
            an encoding is not finite, or only some frames carry poses.
    """
    if source.input_kind != encoder.input_kind:
        hint = ('use --encoder npy for precomputed descriptors'
                if source.input_kind == 'descriptor' else
                'precomputed descriptors (--encoder npy) need a .npy source')
        raise SourceError(f'{source.path} holds {source.input_kind}s but encoder '
                          f'{encoder.name!r} takes {encoder.input_kind}s; {hint}')
    rows = _Rows(len(source), np.dtype(dtype))
    stamps: list[int] = []
    poses: list[np.ndarray | None] = []
    segments: list[int] = []
    names: list[str] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            block = encoder.encode(batch)
            if not np.all(np.isfinite(block)):
                last = rows.count + len(batch) - 1
                raise SourceError(f'encoding {source.path} produced NaN or infinite '
                                  f'descriptors (frames {rows.count}..{last})')
            rows.add(block)
            if progress:
                progress(len(batch))
            batch.clear()

    workers = resolve_decode_workers(decode_workers)
    started = time.perf_counter()
    frames = read_frames(source, workers, batch_size)
    try:
        for frame in frames:
            batch.append(frame.image if frame.image is not None else frame.descriptor)
            stamps.append(frame.stamp_ns)
            poses.append(frame.pose.as_array() if frame.pose is not None else None)
            segments.append(frame.segment)
            names.append(frame.name)
            if len(batch) >= batch_size:
                flush()
        flush()
    finally:
        frames.close()  # stops the reader (and the workers) at once if encoding failed
    if not rows.count:
        raise SourceError(f'source {source.path} yielded no frames')
    seconds = time.perf_counter() - started
    log.info('%s: encoded %d frames in %.1f s (%.2f frames/s; decoding %s)', source.path,
             rows.count, seconds, rows.count / max(seconds, 1e-9),
             f'in {workers} worker processes' if workers else 'in-process')
    have = [p is not None for p in poses]
    if any(have) and not all(have):
        raise SourceError(f'{source.path}: only {sum(have)} of {len(have)} frames have poses')
    pose_array = np.stack(poses) if all(have) else None  # type: ignore[arg-type]
    return EncodedRun(rows.result(), np.asarray(stamps, np.int64), pose_array,
                      np.asarray(segments, np.int64), tuple(names))


def build_map(source_path: str | Path, cfg: Config, out: str | Path,
              progress: Progress | None = None,
              on_start: Callable[[int], None] | None = None, overwrite: bool = False) -> Path:
    """Build a reference map from a source and write it atomically.

    Args:
        source_path: image folder or ``.npy`` descriptor file.
        cfg: configuration (source, encoder, sequence, matching, map sections are used).
        out: map path (``.npz``).
        progress: per-batch callback.
        on_start: called with the number of frames before encoding starts.
        overwrite: replace an existing map (otherwise refused before any work).

    Returns:
        The written map's path (``.npz`` appended when missing). Nothing is written when any
        step fails.

    Raises:
        MapError: the map exists and ``overwrite`` is false.
    """
    out = map_output_path(out)
    if out.exists() and not overwrite:
        raise MapError(f'map {out} already exists; remove it or give --overwrite to replace it')
    source = open_source(source_path, cfg.source)
    if cfg.node.verification.map_features:
        _check_features_source(source)  # before any work
    encoder = build_encoder(cfg.encoder)
    check_length(len(source), cfg.sequence.length, f'reference run {source_path}')
    if on_start:
        on_start(len(source))
    run = encode_run(source, encoder, cfg.encoder.batch_size, progress, cfg.map.dtype,
                     cfg.source.decode_workers)
    check_length(len(run), cfg.sequence.length, f'reference run {source_path}')
    extra: dict[str, Any] = {}
    method = build_method(cfg, encoder.seqgem_p)
    pre = method.precompute(run)
    if pre is not None:
        extra['sequence_descriptors'] = pre.info
    ann = None
    if cfg.matching.index.kind != 'exact':
        from vpr_seq_ros.matching.methods.approximate import build_index

        started = time.perf_counter()
        ann, extra['index'] = build_index(method, run, cfg.matching.index, pre)
        extra['index']['train_seconds'] = round(time.perf_counter() - started, 3)
    features = None
    if cfg.node.verification.map_features:
        features, extra['features'] = map_frame_features(source, run, cfg)
    origin = getattr(source, 'geo_origin', None)
    dropped = source.dropped()
    if dropped:
        log.info('%s: frames left out of the map: %s', source_path, source.dropped_line())
    manifest = make_manifest(encoder.settings(), cfg.sequence.length, str(source_path),
                             cfg.map.dtype, len(run), run.descriptors.shape[1],
                             config=_stored_config(cfg),
                             geo_origin=tuple(float(v) for v in origin) if origin else None,
                             dropped_frames=dropped, **extra)
    return _save_with_index(ReferenceMap(run, manifest,
                                         None if pre is None else pre.descriptors, None, None,
                                         None if ann is None else ann.rows, features), out, ann)


def _save_with_index(refmap: ReferenceMap, out: Path, ann: Any) -> Path:
    """Write a map whose index is ``ann`` (an ``AnnIndex``, or None): the index goes to a
    temporary file beside the map (``faiss.write_index``) that the map writer streams into
    its ``index`` member, so the index is never in memory twice (once trained, once
    serialised). The temporary file is removed whatever happens; one left by a killed process
    is removed by the next write to ``out``, like the map's own temporary file.

    Raises:
        MapError: the folder cannot be written.
    """
    if ann is None:
        return save_map(refmap, out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f'.{out.name}.{os.getpid()}.',
                                    suffix='.index.tmp')
    except OSError as err:
        raise MapError(f'cannot write {out}: {err.strerror or err}; no map was written; '
                       'choose a folder you may write to') from err
    os.close(fd)
    index_file = Path(name)
    try:
        ann.write(str(index_file))
        return save_map(refmap, out, index_file)
    finally:
        index_file.unlink(missing_ok=True)


def _check_features_source(source: FrameSource) -> None:
    if source.input_kind != 'image':
        raise ConfigError('node.verification.map_features needs an image source: a map built '
                          'from precomputed descriptors has no images to take features from; '
                          'turn map_features off, or build the map from the images')


def map_frame_features(source: FrameSource, run: EncodedRun, cfg: Config
                       ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Local features of every map frame (``node.verification``'s feature, ``max_features``,
    ``max_image_width``), for verification of localization hypotheses against the map.

    The source is read a second time (frames in the same order as the encoded run); the
    features are held in memory until the map is written (ORB with 1000 keypoints: about
    36 kB per frame).

    Args:
        source: the mapping run (an image source).
        run: its encoded frames (row i of the map is frame i).
        cfg: configuration (``node.verification``).

    Returns:
        The arrays to store (:meth:`FeatureStore.to_arrays`) and the manifest's ``features``
        entry: ``feature``, ``max_features``, ``max_image_width``, ``frames``, ``keypoints``,
        ``bytes``, ``bytes_per_frame``.

    Raises:
        ConfigError: a descriptor source (features need images).
        SourceError: the source yielded other frames than were encoded.
    """
    from vpr_seq_ros.verification.store import build_feature_store

    vcfg = cfg.node.verification
    _check_features_source(source)
    stamps = np.asarray(run.stamps_ns, np.int64)

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        for row, frame in enumerate(source):
            if row >= len(stamps) or frame.stamp_ns != stamps[row] or frame.image is None:
                raise SourceError(f'{source.path} yielded different frames on a second read '
                                  f'(frame {row}); features cannot be matched to map frames')
            yield row, frame.image

    started = time.perf_counter()
    store = build_feature_store(frames(), vcfg)
    if len(store) != len(run):
        raise SourceError(f'{source.path} yielded {len(store)} frames on a second read, '
                          f'{len(run)} were encoded; features cannot be matched to map frames')
    info = {'feature': store.feature, 'max_features': vcfg.max_features,
            'max_image_width': vcfg.max_image_width, 'frames': len(store),
            'keypoints': store.num_keypoints, 'bytes': store.nbytes,
            'bytes_per_frame': round(store.bytes_per_keyframe, 1),
            'seconds': round(time.perf_counter() - started, 3)}
    log.info('local features of %d map frames: %s, %.1f kB per frame', len(store),
             store.feature, store.bytes_per_keyframe / 1e3)
    return store.to_arrays(), info


def map_geo_origin(refmap: ReferenceMap) -> tuple[float, float, float] | None:
    """The geodetic origin ``(lat, lon, alt)`` a GPS map's metres are expressed about."""
    return refmap.manifest.geo_origin


STORED_PATH_KEYS = ('encoder.weights', 'encoder.transform.weights')
"""Files a map's configuration names; stored absolute so the map works from any folder."""


def _stored_paths(data: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """The ``(section, key)`` of every :data:`STORED_PATH_KEYS` entry set in a nested
    configuration dict."""
    found = []
    for dotted in STORED_PATH_KEYS:
        section: Any = data
        *parents, leaf = dotted.split('.')
        for part in parents:
            section = section.get(part) if isinstance(section, dict) else None
        if isinstance(section, dict) and section.get(leaf):
            found.append((section, leaf))
    return found


def _stored_config(cfg: Config) -> dict[str, Any]:
    data = to_dict(cfg)
    for section, leaf in _stored_paths(data):
        section[leaf] = str(Path(section[leaf]).expanduser().resolve())
    return data


def map_config(refmap: ReferenceMap) -> dict[str, Any]:
    """The configuration a map was built with (a nested dict), as the base layer of the
    node, ``evaluate`` and ``replay``. Relative file paths of older maps are taken relative
    to the map's folder when the file is there."""
    data = json.loads(json.dumps(refmap.manifest.config))
    folder = refmap.path.parent if refmap.path is not None else Path('.')
    for section, leaf in _stored_paths(data):
        value = section[leaf]
        if not Path(value).is_absolute() and (folder / value).exists():
            section[leaf] = str(folder / value)
    data.get('source', {}).pop('poses', None)  # the map's own frame table, never a query's
    data.pop('evaluation', None)  # ground truth is a property of the query, not of the map
    data.pop('node', None)  # how a node ran (e.g. the slam run that saved the map), not the map
    data.get('source', {}).pop('decode_workers', None)  # how this machine read, not the map
    return data


def resolve_for_map(refmap: ReferenceMap | None, preset: str | None = None,
                    file: str | Path | None = None,
                    overrides: Mapping[str, Any] | None = None) -> ResolvedConfig:
    """The configuration of a run against a map: defaults < the map's configuration < preset
    < file < overrides; the one resolution of the node, ``evaluate`` and ``replay``.

    Raises:
        ConfigError: an invalid setting, or a file named by the map's configuration (e.g. the
            weights it was built with) that no longer exists and was not overridden.
    """
    resolved = resolve_config(map_config(refmap) if refmap is not None else None, preset,
                              file, overrides)
    flat = flatten(resolved.config)
    for key in STORED_PATH_KEYS:
        value = flat.get(key)
        if value and resolved.origin_of(key) == 'map' and not Path(value).exists():
            flag = 'transform-weights' if 'transform' in key else 'weights'
            launch = ' or the model launch argument' if key == 'encoder.weights' else ''
            raise ConfigError(
                f'the map was built with {key} = {value}, which does not exist here; give '
                f'the file with the {key} setting (vpr-seq: --{flag}; ROS: the {key} '
                f'parameter{launch})')
    return resolved


def manifest_digest(refmap: ReferenceMap) -> str:
    """SHA-256 of a map's manifest (what made it), for reports."""
    return hashlib.sha256(json.dumps(refmap.manifest.to_dict(), sort_keys=True).encode()
                          ).hexdigest()


def bag_topic_types(path: str | Path) -> dict[str, str] | None:
    """Topic -> message type of a bag, or None when ``path`` is not a bag."""
    path = Path(path)
    if not (path.suffix in BAG_SUFFIXES or (path.is_dir() and (path / 'metadata.yaml').is_file())):
        return None
    from vpr_seq_ros.sources.bag import open_bag

    reader = open_bag(path)
    try:
        return {topic: info.msgtype for topic, info in reader.topics.items()}
    finally:
        reader.close()


def query_source_config(path: str | Path, cfg: Config, refmap: ReferenceMap | None,
                        inherited: Collection[str] = ()
                        ) -> tuple[SourceConfig, tuple[float, float, float] | None, list[str]]:
    """How to read a query run against a map; settings inherited from the map apply only
    where the query has them.

    A pose topic (and keyframe spacing) that only the map's configuration names is dropped
    when the query bag lacks it; the map's geodetic origin applies only to a NavSatFix query.

    Returns:
        The source settings, the geodetic origin to use (or None), and notes on what was not
        applied (for the user).
    """
    from vpr_seq_ros.sources.bag import NAVSATFIX

    source_cfg = cfg.source
    notes: list[str] = []
    origin = map_geo_origin(refmap) if refmap is not None else None
    topics = bag_topic_types(path)
    if topics is None:
        return source_cfg, None, notes
    pose_topic = source_cfg.pose_topic
    if pose_topic and pose_topic not in topics and 'source.pose_topic' in inherited:
        notes.append(f"the map's pose topic {pose_topic} is not in the query bag: the query is "
                     'read without poses')
        source_cfg = dc_replace(source_cfg, pose_topic=None)
        if source_cfg.keyframe_distance_m > 0 and 'source.keyframe_distance_m' in inherited:
            notes.append(f"the map's keyframe spacing {source_cfg.keyframe_distance_m:g} m "
                         'needs poses: every query frame is kept')
            source_cfg = dc_replace(source_cfg, keyframe_distance_m=0.0)
    if topics.get(source_cfg.pose_topic or '') != NAVSATFIX:
        origin = None
    return source_cfg, origin, notes


def open_query_source(path: str | Path, cfg: Config, refmap: ReferenceMap | None,
                      inherited: Collection[str] = ()) -> tuple[FrameSource, list[str]]:
    """Open a query run against a map (see :func:`query_source_config`).

    Returns:
        The source and notes on inherited settings that were not applied.
    """
    source_cfg, origin, notes = query_source_config(path, cfg, refmap, inherited)
    return open_source(path, source_cfg, origin), notes


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Result of :func:`evaluate`."""

    metrics: Metrics
    output: MatchOutput
    positives: list[np.ndarray]
    query: EncodedRun
    report: dict[str, Any]
    dropped: dict[str, int] = field(default_factory=dict)
    dropped_line: str = 'none'


def plot_matrix_affordable(num_refs: int, num_queries: int) -> bool:
    """Whether an ``(N, M)`` distance matrix for a plot is small enough to keep
    (:data:`MAX_PLOT_MATRIX` entries, 160 MB of float32)."""
    return num_refs * num_queries <= MAX_PLOT_MATRIX


def evaluation_k(cfg: Config) -> int:
    """Candidates needed per query: ``top_k``, or the largest K of Recall@K if larger."""
    return max(cfg.matching.top_k, max(cfg.evaluation.recall_at))


def ground_truth_text(cfg: Config, origin: str = 'default') -> str:
    """One line saying which ground truth is used and where that setting came from."""
    ev = cfg.evaluation
    text = (f'same-index +-{ev.tolerance_frames} frames' if ev.gt == 'same-index'
            else f'radius {ev.radius_m:g} m')
    hint = '; set --gt, --tolerance-frames or --radius-m' if origin == 'default' else ''
    where = 'the defaults' if origin == 'default' else origin
    return f'ground truth: {text} (from {where}{hint})'


def evaluate_encoded(refmap: ReferenceMap, query: EncodedRun, cfg: Config,
                     seqgem_p: float | None = None, keep_matrix: bool | None = None,
                     context: dict[str, Any] | None = None) -> Evaluation:
    """Match an encoded query run against a map and score it.

    Recall@K is computed from :func:`evaluation_k` candidates, so it is right for every K
    whatever ``matching.top_k``; ``output.matches`` keeps those candidates (use
    ``.top(cfg.matching.top_k)`` for what the node would publish).

    Exact matching works in bounded memory (reference blocks, a running top-K per query);
    the ``(N, M)`` distance matrix is kept only when ``keep_matrix`` (for a plot; None: when
    :func:`plot_matrix_affordable`).
    """
    if keep_matrix is None:
        keep_matrix = plot_matrix_affordable(len(refmap), len(query))
    method = build_method(cfg, seqgem_p)
    started = time.perf_counter()
    if cfg.matching.index.kind == 'exact':
        output = method.match(refmap.run, query, evaluation_k(cfg), keep_matrix)
    else:
        output = _approximate_match(method, refmap, query, cfg)
    match_s = time.perf_counter() - started
    positives = ground_truth(refmap.run, query, cfg.evaluation, output.ref_valid)
    metrics = compute_metrics(output.matches, positives, cfg.evaluation.recall_at)
    report = report_dict(
        metrics, method=cfg.matching.method,
        seq_len=method.window_length,
        window=cfg.sequence.window, ground_truth=ground_truth_dict(cfg),
        top_k=cfg.matching.top_k, config=to_dict(cfg), version=__version__,
        map_manifest_sha256=manifest_digest(refmap),
        num_reference_frames=len(refmap), match_seconds=round(match_s, 4),
        **(context or {}))
    return Evaluation(metrics, output, positives, query, report)


def _approximate_match(method: SequenceMethod, refmap: ReferenceMap, query: EncodedRun,
                       cfg: Config) -> MatchOutput:
    """Batch matching through the map's approximate index: each query's trailing window goes
    through the streaming matcher the node uses, so evaluate and the node agree; memory is
    one map-sized vector, never an ``N x M`` matrix."""
    from vpr_seq_ros.matching.methods.approximate import approximate_stream, load_index
    from vpr_seq_ros.runtime.store import FixedStore

    if cfg.sequence.window != 'trailing':
        raise ConfigError('approximate search matches trailing windows (what a robot sees): '
                          'set sequence.window = trailing, or matching.index.kind = exact')
    k = evaluation_k(cfg)
    store = FixedStore(refmap)
    stream = approximate_stream(method, store, load_index(refmap, method, cfg.matching.index),
                                cfg.matching.index, k)
    m = len(query)
    ref_idx = np.full((m, k), -1, np.int64)
    dist = np.full((m, k), np.inf)
    valid = np.zeros(m, bool)
    for j in range(m):
        column = stream.push(query.descriptors[j], int(query.segments[j]))
        if column is None:
            continue
        found = np.flatnonzero(np.isfinite(column))
        order = found[np.argsort(column[found], kind='stable')][:k]
        ref_idx[j, :len(order)], dist[j, :len(order)] = order, column[order]
        valid[j] = True
    ref_valid = window_starts(refmap.run.segments, method.window_length, 'trailing')[1]
    return MatchOutput(Matches(ref_idx, dist, valid), ref_valid, None)


def ground_truth_dict(cfg: Config) -> dict[str, Any]:
    """The ground truth settings, for reports."""
    gt: dict[str, Any] = {'type': cfg.evaluation.gt}
    if cfg.evaluation.gt == 'same-index':
        gt['tolerance_frames'] = cfg.evaluation.tolerance_frames
    else:
        gt['radius_m'] = cfg.evaluation.radius_m
    return gt


def evaluate(refmap: ReferenceMap | str | Path, query_path: str | Path, cfg: Config,
             progress: Progress | None = None,
             on_start: Callable[[int], None] | None = None,
             inherited: Collection[str] = (),
             notes: list[str] | None = None,
             keep_matrix: bool | None = False) -> Evaluation:
    """Encode a query run, match it against a map, and score it.

    Everything that can be checked before encoding is: the encoder settings against the
    map's, and the query's length against the sequence length.

    Args:
        inherited: dotted keys whose values come only from the map's configuration (see
            :func:`open_query_source`).
        notes: receives notes on inherited settings that did not apply to this query.
        keep_matrix: keep the ``(N, M)`` distance matrix (for a plot); None: when affordable
            (:func:`plot_matrix_affordable`). Without it memory stays bounded whatever N.

    Raises:
        MapError: the map is missing, corrupt, or was encoded differently.
        SourceError: the query cannot be read.
        MatchingError: a run shorter than the sequence length.
    """
    if not isinstance(refmap, ReferenceMap):
        refmap = load_map(refmap)
    map_path = refmap.path or ''
    encoder = build_encoder(cfg.encoder)
    refmap.check_query(encoder.settings())
    source, source_notes = open_query_source(query_path, cfg, refmap, inherited)
    if notes is not None:
        notes.extend(source_notes)
    check_length(len(source), cfg.sequence.length, f'query run {query_path}')
    if on_start:
        on_start(len(source))
    started = time.perf_counter()
    query = encode_run(source, encoder, cfg.encoder.batch_size, progress,
                       decode_workers=cfg.source.decode_workers)
    encode_s = time.perf_counter() - started
    dropped = source.dropped()  # after reading: some frames are found bad only when decoded
    result = evaluate_encoded(
        refmap, query, cfg, encoder.seqgem_p, keep_matrix=keep_matrix,
        context={'map': str(map_path), 'query': str(query_path),
                 'encoder': encoder.settings(), 'query_frames_dropped': dropped,
                 'encode_ms_per_frame': round(1000 * encode_s / max(len(query), 1), 3)})
    return dc_replace(result, dropped=dropped, dropped_line=source.dropped_line())


__all__ = ['build_map', 'encode_run', 'evaluate', 'evaluate_encoded', 'evaluation_k', 'Evaluation',
           'plot_matrix_affordable',
           'map_config', 'open_query_source', 'query_source_config', 'resolve_for_map']
