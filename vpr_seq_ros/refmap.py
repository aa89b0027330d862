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
    """Readable differences of two settings trees; a missing key and None are the same."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in sorted(set(expected) | set(actual)):
            out.extend(_diff(expected.get(key), actual.get(key), f'{prefix}{key}.'))
        return out
    if _normalise(expected) != _normalise(actual):
        return [f'{prefix.rstrip(".")}: map has {_show(expected)}, query has '
                f'{_show(actual)}']
    return []


def _show(value: Any) -> str:
    if value is None:
        return 'none'
    if isinstance(value, dict):
        return '{' + ', '.join(f'{k}: {_show(v)}' for k, v in value.items()) + '}'
    return str(value)


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


def map_output_path(path: str | Path) -> Path:
    """The file a map is written to: ``.npz`` is appended when missing."""
    path = Path(path)
    return path if path.suffix == '.npz' else path.with_name(path.name + '.npz')


def resolve_map_path(path: str | Path) -> Path:
    """The map file a user means: the path as given, or with ``.npz`` appended (the name
    ``build-map -o NAME`` was given works everywhere).

    Raises:
        MapError: neither exists.
    """
    path = Path(path)
    if path.is_file():
        return path
    written = map_output_path(path)
    if written.is_file():
        return written
    also = f' (nor {written})' if written != path else ''
    raise MapError(f'map file {path} does not exist{also}; build one with `vpr-seq build-map`')


def save_map(refmap: ReferenceMap, path: str | Path) -> Path:
    """Write a map atomically; returns the path (``.npz`` is appended if missing).

    Raises:
        MapError: the folder cannot be written.
    """
    path = map_output_path(path)
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
    path = resolve_map_path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise MapError(f'map file {path} is corrupt or not a map ({type(err).__name__}: '
                       f'{str(err)[:120]}); it may be cut short (a copy that did not finish): '
                       f'restore it, or rebuild it with `vpr-seq build-map`') from err
    try:
        manifest = json.loads(arrays['manifest'].tobytes().decode())
    except (KeyError, ValueError, UnicodeDecodeError) as err:
        raise MapError(f'map file {path} has no readable manifest: it is not a vpr_seq_ros map '
                       f'(or a damaged one); rebuild it with `vpr-seq build-map`') from err
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
