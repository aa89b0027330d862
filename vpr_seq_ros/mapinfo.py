"""What a reference map holds, summarised for people (text) and programs (a JSON-ready dict);
``vpr-seq inspect`` prints it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any, Mapping

import numpy as np

MAX_SEGMENTS_LISTED = 12
"""Segment lengths are listed one by one up to this many; beyond, summarised."""


# --- the summary -------------------------------------------------------------------------------

def _find_checksums(value: Any, prefix: str = '') -> dict[str, str]:
    """Every ``*sha256`` entry of nested settings, by dotted key."""
    out: dict[str, str] = {}
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = f'{prefix}{key}'
            if str(key).endswith('sha256') and isinstance(item, str):
                out[name] = item
            else:
                out.update(_find_checksums(item, name + '.'))
    return out


def _segments(segments: np.ndarray) -> list[int]:
    """Lengths of the contiguous segments, in order."""
    if segments.size == 0:
        return []
    starts = np.flatnonzero(np.concatenate([[True], segments[1:] != segments[:-1]]))
    return np.diff(np.concatenate([starts, [segments.size]])).astype(int).tolist()


def _poses(poses: np.ndarray | None, segments: np.ndarray) -> dict[str, Any] | None:
    if poses is None or len(poses) == 0:
        return None
    xyz = np.asarray(poses, np.float64)[:, :3]
    finite = np.isfinite(xyz).all(axis=1)
    if not finite.any():
        return {'extent_m': None, 'path_length_m': None}
    ok = xyz[finite]
    steps = np.linalg.norm(np.diff(xyz, axis=0), axis=1)
    same = (segments[1:] == segments[:-1]) & finite[1:] & finite[:-1]
    return {'extent_m': {axis: [float(ok[:, i].min()), float(ok[:, i].max())]
                         for i, axis in enumerate('xyz')},
            'path_length_m': float(steps[same].sum())}


def _features(refmap: Any, entry: Any) -> dict[str, Any] | None:
    """The stored local features: detector, frames, keypoints, bytes (total, per frame)."""
    arrays = getattr(refmap, 'features', None)
    if arrays is None:
        return None
    info = dict(entry) if isinstance(entry, Mapping) else {}
    offsets = np.asarray(arrays.get('offsets', np.zeros(1, np.int64)))
    frames = max(len(offsets) - 1, 0)
    size = sum(int(np.asarray(arrays[k]).nbytes) for k in ('keypoints_q8', 'descriptors',
                                                            'depth_m') if k in arrays)
    return {'feature': str(np.asarray(arrays['feature'])) if 'feature' in arrays else
            info.get('feature'),
            'max_features': info.get('max_features'),
            'max_image_width': info.get('max_image_width'),
            'frames': frames, 'keypoints': int(offsets[-1]) if len(offsets) else 0,
            'bytes': size, 'bytes_per_frame': size / frames if frames else 0.0,
            'depth': 'depth_m' in arrays}


def map_summary(refmap: Any, path: str | Path) -> dict[str, Any]:
    """What a map holds, as a JSON-ready dict.

    Args:
        refmap: the loaded map (:func:`vpr_seq_ros.refmap.load_map`).
        path: its file (for the size).

    Returns:
        ``path``, ``file_size_bytes``, ``format``, ``format_version``, ``created_utc``,
        ``source``, ``num_frames``, ``descriptor_dim``, ``dtype``, ``encoder`` (settings),
        ``weights_sha256`` (dotted key -> checksum), ``sequence_length``, ``segments``
        (``count``, ``lengths``), ``stamps`` (first/last ns, duration s), ``poses`` (extent,
        path length; None without poses), ``geo_origin``, ``sequence_descriptors`` (shape
        and settings, or None), ``dropped_frames`` (reason -> count, or None when the map does
        not record them), ``features`` (local features for verification: ``feature`` (the
        detector), ``max_features``, ``max_image_width``, ``frames``, ``keypoints``,
        ``bytes``, ``bytes_per_frame``, ``depth``; None when the map stores none), ``config``
        and ``other`` (manifest entries not listed here).
    """
    manifest = refmap.manifest.to_dict()
    run = refmap.run
    segments = np.asarray(run.segments)
    stamps = np.asarray(run.stamps_ns, np.int64)
    seq = getattr(refmap, 'sequence_descriptors', None)
    lengths = _segments(segments)
    known = {'format', 'format_version', 'created_utc', 'source', 'dtype', 'num_frames',
             'descriptor_dim', 'encoder', 'sequence_length', 'config', 'geo_origin',
             'sequence_descriptors', 'dropped_frames', 'dropped', 'path', 'features'}
    dropped = manifest.get('dropped_frames', manifest.get('dropped'))
    file = Path(path)
    return {
        'path': str(file),
        'file_size_bytes': file.stat().st_size if file.is_file() else None,
        'format': manifest.get('format'),
        'format_version': manifest.get('format_version'),
        'created_utc': manifest.get('created_utc'),
        'source': manifest.get('source'),
        'num_frames': int(run.descriptors.shape[0]),
        'descriptor_dim': int(run.descriptors.shape[1]),
        'dtype': manifest.get('dtype', str(run.descriptors.dtype)),
        'encoder': manifest.get('encoder'),
        'weights_sha256': _find_checksums(manifest.get('encoder') or {}),
        'sequence_length': manifest.get('sequence_length'),
        'segments': {'count': len(lengths), 'lengths': lengths},
        'stamps': {'first_ns': int(stamps[0]) if stamps.size else None,
                   'last_ns': int(stamps[-1]) if stamps.size else None,
                   'duration_s': float((stamps.max() - stamps.min()) / 1e9) if stamps.size
                   else None},
        'poses': _poses(run.poses, segments),
        'geo_origin': manifest.get('geo_origin'),
        'sequence_descriptors': None if seq is None else {
            'shape': list(np.shape(seq)), **dict(manifest.get('sequence_descriptors') or {})},
        'dropped_frames': dict(dropped) if isinstance(dropped, Mapping) else None,
        'features': _features(refmap, manifest.get('features')),
        'config': manifest.get('config'),
        'other': {k: v for k, v in manifest.items() if k not in known},
    }


# --- text --------------------------------------------------------------------------------------

def _size(n: int | None) -> str:
    if n is None:
        return 'size unknown'
    for unit in ('bytes', 'KiB', 'MiB', 'GiB'):
        if n < 1024 or unit == 'GiB':
            return f'{n} bytes' if unit == 'bytes' else f'{n:.1f} {unit}'
        n /= 1024  # type: ignore[assignment]
    return ''  # pragma: no cover


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f'{value:g}'
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(_value(v) for v in value) + ']'
    if value is None:
        return 'none'
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _flat(value: Any, prefix: str = '') -> list[str]:
    if isinstance(value, Mapping):
        out = []
        for key, item in value.items():
            out.extend(_flat(item, f'{prefix}{key}.'))
        return out
    return [f'{prefix.rstrip(".")}={_value(value)}']


def _settings(encoder: Mapping[str, Any] | None) -> str:
    if not encoder:
        return 'not recorded'
    rest = {k: v for k, v in encoder.items() if k != 'name' and not str(k).endswith('sha256')}
    inner = ', '.join(_flat(rest))
    return f'{encoder.get("name", "?")}' + (f' ({inner})' if inner else '')


def _segment_line(lengths: list[int]) -> str:
    if not lengths:
        return '0'
    if len(lengths) <= MAX_SEGMENTS_LISTED:
        return f'{len(lengths)} (frames: {", ".join(map(str, lengths))})'
    return (f'{len(lengths)} (frames: {min(lengths)} .. {max(lengths)}, median '
            f'{int(np.median(lengths))})')


def _dropped_line(summary: Mapping[str, Any]) -> str:
    from vpr_seq_ros.sources.base import format_dropped

    dropped = summary['dropped_frames']
    if dropped is None:
        return 'not recorded in this map'
    source = (summary.get('config') or {}).get('source') or {}
    return format_dropped(dropped, source.get('pose_topic'),
                          keyframe_distance_m=source.get('keyframe_distance_m'))


def _features_line(features: Mapping[str, Any] | None) -> str:
    if features is None:
        return ('none (localization cannot verify its hypotheses; build the map with '
                'node.verification.map_features to store them)')
    limits = []
    if features.get('max_features'):
        limits.append(f'at most {features["max_features"]} per frame')
    if features.get('max_image_width'):
        limits.append(f'images <= {features["max_image_width"]} px wide')
    frames = features['frames']
    per_kp = features['keypoints'] / frames if frames else 0.0
    return (f'{features["feature"]}' + (f' ({", ".join(limits)})' if limits else '') +
            f', {frames} frames, {per_kp:.0f} keypoints and '
            f'{_size(int(round(features["bytes_per_frame"])))} per frame, '
            f'{_size(features["bytes"])} in all' + (', with depth' if features['depth'] else ''))


def format_summary(summary: Mapping[str, Any]) -> str:
    """The text form of :func:`map_summary`, one topic per line."""
    s = summary
    lines = [f'map:          {s["path"]} ({_size(s["file_size_bytes"])}), format '
             f'{s["format"]} version {s["format_version"]}',
             f'created:      {s["created_utc"] or "not recorded"}',
             f'built from:   {s["source"] or "not recorded"}',
             f'frames:       {s["num_frames"]} descriptors of {s["descriptor_dim"]} '
             f'{s["dtype"]}']
    stamps = s['stamps']
    if stamps['first_ns'] is not None:
        lines.append(f'stamps:       {stamps["duration_s"]:.1f} s, from '
                     f'{stamps["first_ns"] / 1e9:.3f} to {stamps["last_ns"] / 1e9:.3f} s')
    lines.append(f'encoder:      {_settings(s["encoder"])}')
    checks = s['weights_sha256']
    if checks:
        lines += [f'weights:      {key} {value or "none (random init)"}'
                  for key, value in checks.items()]
    else:
        lines.append('weights:      none (a training-free encoder)')
    lines.append(f'sequence:     L = {s["sequence_length"]}')
    seq = s['sequence_descriptors']
    if seq is None:
        lines.append('sequence descriptors: not stored (made at query time when needed)')
    else:
        extra = ', '.join(f'{k}={_value(v)}' for k, v in seq.items() if k != 'shape')
        lines.append(f'sequence descriptors: {" x ".join(map(str, seq["shape"]))}'
                     + (f' ({extra})' if extra else ''))
    lines.append(f'segments:     {_segment_line(s["segments"]["lengths"])}')
    poses = s['poses']
    if poses is None:
        lines.append('poses:        none')
    elif poses['extent_m'] is None:
        lines.append('poses:        present, none finite')
    else:
        ext = poses['extent_m']
        lines.append('poses:        ' + ', '.join(f'{a} {ext[a][0] + 0.0:.1f} .. '
                                                  f'{ext[a][1] + 0.0:.1f} m' for a in 'xyz') +
                     f'; path {poses["path_length_m"]:.1f} m')
    origin = s['geo_origin']
    lines.append('geo origin:   ' + (f'lat {origin[0]:.7f}, lon {origin[1]:.7f}, alt '
                                     f'{origin[2]:.1f} m' if origin else 'none (poses are '
                                     'not from GPS)' if poses else 'none'))
    lines.append(f'left out:     {_dropped_line(s)}')
    lines.append(f'features:     {_features_line(s.get("features"))}')
    for key, value in (s['other'] or {}).items():
        shown = json.dumps(value, sort_keys=True) if isinstance(value, Mapping) else \
            _value(value)
        lines.append(f'{key + ":":<13} {shown}')
    config = s['config']
    if isinstance(config, Mapping):
        lines.append('configuration it was built with:')
        for section, values in config.items():
            body = ' '.join(_flat(values)) if isinstance(values, Mapping) else _value(values)
            lines += textwrap.wrap(f'{section}: {body}', width=99, initial_indent='  ',
                                   subsequent_indent='      ', break_on_hyphens=False)
    else:
        lines.append('configuration: not recorded')
    return '\n'.join(lines)


__all__ = ['format_summary', 'map_summary']
