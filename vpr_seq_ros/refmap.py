"""Reference maps: frame descriptors, stamps, poses, segments and a manifest, in one file.

A map is a single ``.npz`` (no pickles) written atomically: to a temporary file in the same
folder, then renamed over the target, so a crash never leaves a partial map. Its manifest
records the format version and what made the descriptors (encoder settings, weights checksum,
sequence length); loading refuses another format version, and :meth:`ReferenceMap.check_query`
refuses a query encoded with different settings, naming what differs.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vpr_seq_ros.errors import MapError, VprSeqError
from vpr_seq_ros.types import EncodedRun
from vpr_seq_ros.writing import atomic_write

log = logging.getLogger(__name__)

MAP_FORMAT = 'vpr_seq_ros.map'
MAP_FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class ReferenceMap:
    """A reference map.

    Attributes:
        run: the reference run's frame descriptors, stamps, poses and segments.
        manifest: format, encoder settings, sequence length, creation time, source, ...
        sequence_descriptors: ``(N, D)`` SeqGeM descriptors of trailing windows (rows without a
            full window are zeros), stored when the map was built for ``seqgem``.
    """

    run: EncodedRun
    manifest: dict[str, Any] = field(default_factory=dict)
    sequence_descriptors: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.run)

    @property
    def encoder_settings(self) -> dict[str, Any]:
        """Settings of the encoder that made the frame descriptors."""
        return dict(self.manifest.get('encoder', {}))

    def check_query(self, encoder_settings: dict[str, Any]) -> None:
        """Refuse a query whose encoder settings differ from the map's.

        Raises:
            MapError: naming every differing setting with both values.
        """
        differences = _diff(self.encoder_settings, encoder_settings)
        if differences:
            raise MapError(
                'the query is encoded differently from the map: ' + '; '.join(differences) +
                '. Use the encoder settings the map was built with (see its manifest), or '
                'rebuild the map.')


def _diff(expected: Any, actual: Any, prefix: str = '') -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in sorted(set(expected) | set(actual)):
            name = f'{prefix}{key}'
            if key not in actual:
                out.append(f'{name}: map has {expected[key]!r}, query has none')
            elif key not in expected:
                out.append(f'{name}: map has none, query has {actual[key]!r}')
            else:
                out.extend(_diff(expected[key], actual[key], name + '.'))
        return out
    if _normalise(expected) != _normalise(actual):
        return [f'{prefix.rstrip(".")}: map has {expected!r}, query has {actual!r}']
    return []


def _normalise(value: Any) -> Any:
    return json.loads(json.dumps(value))


def make_manifest(encoder_settings: dict[str, Any], sequence_length: int, source: str,
                  dtype: str, num_frames: int, dim: int, **extra: Any) -> dict[str, Any]:
    """The manifest of a new map."""
    return {
        'format': MAP_FORMAT,
        'format_version': MAP_FORMAT_VERSION,
        'encoder': encoder_settings,
        'sequence_length': int(sequence_length),
        'created_utc': _dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'),
        'source': source,
        'dtype': dtype,
        'num_frames': int(num_frames),
        'descriptor_dim': int(dim),
        **extra,
    }


def save_map(refmap: ReferenceMap, path: str | Path) -> Path:
    """Write a map atomically; returns the path (``.npz`` is appended if missing).

    Raises:
        MapError: the folder cannot be written.
    """
    path = Path(path)
    if path.suffix != '.npz':
        path = path.with_name(path.name + '.npz')
    run = refmap.run
    dtype = np.float16 if refmap.manifest.get('dtype') == 'float16' else np.float32
    arrays: dict[str, np.ndarray] = {
        'manifest': np.frombuffer(json.dumps(refmap.manifest).encode(), dtype=np.uint8),
        'descriptors': np.asarray(run.descriptors, dtype=dtype),
        'stamps_ns': np.asarray(run.stamps_ns, dtype=np.int64),
        'segments': np.asarray(run.segments, dtype=np.int64),
        'names': np.asarray(run.names, dtype=np.str_) if run.names else np.zeros(0, np.str_),
    }
    if run.poses is not None:
        arrays['poses'] = np.asarray(run.poses, dtype=np.float64)
    if refmap.sequence_descriptors is not None:
        arrays['sequence_descriptors'] = np.asarray(refmap.sequence_descriptors, dtype=dtype)
    try:
        atomic_write(path, lambda handle: np.savez(handle, **arrays))
    except VprSeqError as err:
        raise MapError(str(err)) from err
    log.info('wrote map %s (%d frames, D=%d)', path, len(run), run.descriptors.shape[1])
    return path


def load_map(path: str | Path) -> ReferenceMap:
    """Read a map written by :func:`save_map`.

    Raises:
        MapError: missing or corrupt file, or another format or format version.
    """
    path = Path(path)
    if not path.is_file():
        raise MapError(f'map file {path} does not exist; build one with `vpr-seq build-map`')
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise MapError(f'map file {path} is corrupt or not a map: {err}') from err
    try:
        manifest = json.loads(arrays['manifest'].tobytes().decode())
    except (KeyError, ValueError, UnicodeDecodeError) as err:
        raise MapError(f'map file {path} has no readable manifest') from err
    if manifest.get('format') != MAP_FORMAT:
        raise MapError(f'{path} is not a vpr_seq_ros map (format {manifest.get("format")!r})')
    version = manifest.get('format_version')
    if version != MAP_FORMAT_VERSION:
        raise MapError(f'map {path} has format version {version}; this vpr_seq_ros reads '
                       f'version {MAP_FORMAT_VERSION}. Rebuild the map with `vpr-seq build-map`.')
    required = ('descriptors', 'stamps_ns', 'segments')
    missing = [k for k in required if k not in arrays]
    if missing:
        raise MapError(f'map file {path} lacks {", ".join(missing)}')
    descriptors = arrays['descriptors'].astype(np.float32)
    n = descriptors.shape[0]
    poses = arrays.get('poses')
    names = tuple(str(x) for x in arrays['names']) if 'names' in arrays else ()
    if len(arrays['stamps_ns']) != n or len(arrays['segments']) != n or \
            (poses is not None and len(poses) != n) or (names and len(names) != n):
        raise MapError(f'map file {path} is inconsistent: arrays of different lengths')
    seq = arrays.get('sequence_descriptors')
    run = EncodedRun(descriptors, arrays['stamps_ns'].astype(np.int64), poses,
                     arrays['segments'].astype(np.int64), names)
    manifest['path'] = str(path)
    return ReferenceMap(run, manifest, None if seq is None else seq.astype(np.float32))
