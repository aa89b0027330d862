"""Pipeline stages as typed functions: encode a run, build a map, evaluate a query run.

The CLI commands are thin shims over these; each is callable from Python. Progress is reported
through an optional callback so that only entry points draw bars.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vpr_seq_ros.config import Config, to_dict
from vpr_seq_ros.encoders import FrameEncoder, build_encoder
from vpr_seq_ros.errors import SourceError
from vpr_seq_ros.evaluation import Metrics, compute_metrics, ground_truth, report_dict
from vpr_seq_ros.matching.methods import MatchOutput, build_method
from vpr_seq_ros.matching.windows import check_length
from vpr_seq_ros.refmap import ReferenceMap, load_map, make_manifest, save_map
from vpr_seq_ros.sources import FrameSource, open_source
from vpr_seq_ros.types import EncodedRun

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
"""Called with the number of frames just finished."""

MAX_PLOT_MATRIX = 40_000_000
"""Largest N * M for which evaluation keeps the full distance matrix (for the plot)."""


def encode_run(source: FrameSource, encoder: FrameEncoder, batch_size: int = 16,
               progress: Progress | None = None) -> EncodedRun:
    """Encode every frame of a source exactly once.

    Raises:
        SourceError: the source and the encoder take different inputs, the source is empty,
            or only some frames carry poses.
    """
    if source.input_kind != encoder.input_kind:
        hint = ('use --encoder npy for precomputed descriptors'
                if source.input_kind == 'descriptor' else
                'precomputed descriptors (--encoder npy) need a .npy source')
        raise SourceError(f'{source.path} holds {source.input_kind}s but encoder '
                          f'{encoder.name!r} takes {encoder.input_kind}s; {hint}')
    blocks: list[np.ndarray] = []
    stamps: list[int] = []
    poses: list[np.ndarray | None] = []
    segments: list[int] = []
    names: list[str] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            blocks.append(encoder.encode(batch))
            if progress:
                progress(len(batch))
            batch.clear()

    for frame in source:
        batch.append(frame.image if frame.image is not None else frame.descriptor)
        stamps.append(frame.stamp_ns)
        poses.append(frame.pose.as_array() if frame.pose is not None else None)
        segments.append(frame.segment)
        names.append(frame.name)
        if len(batch) >= batch_size:
            flush()
    flush()
    if not blocks:
        raise SourceError(f'source {source.path} yielded no frames')
    descriptors = np.concatenate(blocks).astype(np.float32, copy=False)
    if not np.all(np.isfinite(descriptors)):
        raise SourceError(f'encoding {source.path} produced NaN or infinite descriptors')
    have = [p is not None for p in poses]
    if any(have) and not all(have):
        raise SourceError(f'{source.path}: only {sum(have)} of {len(have)} frames have poses')
    pose_array = np.stack(poses) if all(have) else None  # type: ignore[arg-type]
    return EncodedRun(descriptors, np.asarray(stamps, np.int64), pose_array,
                      np.asarray(segments, np.int64), tuple(names))


def build_map(source_path: str | Path, cfg: Config, out: str | Path,
              progress: Progress | None = None,
              on_start: Callable[[int], None] | None = None) -> Path:
    """Build a reference map from a source and write it atomically.

    Args:
        source_path: image folder or ``.npy`` descriptor file.
        cfg: configuration (source, encoder, sequence, matching, map sections are used).
        out: map path (``.npz``).
        progress: per-batch callback.
        on_start: called with the number of frames before encoding starts.

    Returns:
        The written map's path. Nothing is written when any step fails.
    """
    source = open_source(source_path, cfg.source)
    encoder = build_encoder(cfg.encoder)
    if on_start:
        on_start(len(source))
    run = encode_run(source, encoder, cfg.encoder.batch_size, progress)
    check_length(len(run), cfg.sequence.length, f'reference run {source_path}')
    extra: dict[str, Any] = {}
    pre = build_method(cfg, encoder.seqgem_p).precompute(run)
    if pre is not None:
        extra['sequence_descriptors'] = pre.info
    origin = getattr(source, 'geo_origin', None)
    if origin is not None:
        extra['geo_origin'] = [float(v) for v in origin]
    manifest = make_manifest(encoder.settings(), cfg.sequence.length, str(source_path),
                             cfg.map.dtype, len(run), run.descriptors.shape[1],
                             config=to_dict(cfg), **extra)
    return save_map(ReferenceMap(run, manifest, None if pre is None else pre.descriptors), out)


def map_geo_origin(refmap: ReferenceMap) -> tuple[float, float, float] | None:
    """The geodetic origin ``(lat, lon, alt)`` a GPS map's metres are expressed about."""
    origin = refmap.manifest.get('geo_origin')
    return tuple(float(v) for v in origin) if origin else None  # type: ignore[return-value]


def map_config(refmap: ReferenceMap) -> dict[str, Any]:
    """The configuration a map was built with (a nested dict), as evaluation's base layer."""
    stored = refmap.manifest.get('config')
    return dict(stored) if isinstance(stored, dict) else {}


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Result of :func:`evaluate`."""

    metrics: Metrics
    output: MatchOutput
    positives: list[np.ndarray]
    query: EncodedRun
    report: dict[str, Any]


def evaluate_encoded(refmap: ReferenceMap, query: EncodedRun, cfg: Config,
                     seqgem_p: float | None = None, keep_matrix: bool | None = None,
                     context: dict[str, Any] | None = None) -> Evaluation:
    """Match an encoded query run against a map and score it."""
    if keep_matrix is None:
        keep_matrix = len(refmap) * len(query) <= MAX_PLOT_MATRIX
    method = build_method(cfg, seqgem_p)
    started = time.perf_counter()
    output = method.match(refmap.run, query, cfg.matching.top_k, keep_matrix)
    match_s = time.perf_counter() - started
    positives = ground_truth(refmap.run, query, cfg.evaluation, output.ref_valid)
    metrics = compute_metrics(output.matches, positives, cfg.evaluation.recall_at)
    gt: dict[str, Any] = {'type': cfg.evaluation.gt}
    if cfg.evaluation.gt == 'same-index':
        gt['tolerance_frames'] = cfg.evaluation.tolerance_frames
    else:
        gt['radius_m'] = cfg.evaluation.radius_m
    report = report_dict(
        metrics, method=cfg.matching.method,
        seq_len=method.window_length,
        window=cfg.sequence.window, ground_truth=gt, top_k=cfg.matching.top_k,
        num_reference_frames=len(refmap), match_seconds=round(match_s, 4),
        **(context or {}))
    return Evaluation(metrics, output, positives, query, report)


def evaluate(refmap: ReferenceMap | str | Path, query_path: str | Path, cfg: Config,
             progress: Progress | None = None,
             on_start: Callable[[int], None] | None = None) -> Evaluation:
    """Encode a query run, match it against a map, and score it.

    Raises:
        MapError: the map is missing, corrupt, or was encoded differently.
        SourceError: the query cannot be read.
        MatchingError: a run shorter than the sequence length.
    """
    map_path = refmap if not isinstance(refmap, ReferenceMap) else \
        refmap.manifest.get('path', '')
    if not isinstance(refmap, ReferenceMap):
        refmap = load_map(refmap)
    encoder = build_encoder(cfg.encoder)
    source = open_source(query_path, cfg.source, map_geo_origin(refmap))
    if on_start:
        on_start(len(source))
    started = time.perf_counter()
    query = encode_run(source, encoder, cfg.encoder.batch_size, progress)
    encode_s = time.perf_counter() - started
    refmap.check_query(encoder.settings())
    return evaluate_encoded(
        refmap, query, cfg, encoder.seqgem_p,
        context={'map': str(map_path), 'query': str(query_path),
                 'encoder': encoder.settings(),
                 'encode_ms_per_frame': round(1000 * encode_s / max(len(query), 1), 3)})


__all__ = ['build_map', 'encode_run', 'evaluate', 'evaluate_encoded', 'Evaluation', 'map_config']
