"""Reference maps: frame descriptors, stamps, poses, segments and a manifest, in one file.

A map is a single ``.npz`` (no pickles) written atomically: to a temporary file in the same
folder, then renamed over the target, so a crash never leaves a partial map. Its manifest
records the format version and what made the descriptors (encoder settings, weights checksum,
sequence length); loading refuses another format version, and :meth:`ReferenceMap.check_query`
refuses a query encoded with different settings, naming what differs.

A map may also hold each frame's local features for geometric verification (``build-map`` with
``node.verification.map_features``): the arrays of
:meth:`vpr_seq_ros.verification.store.FeatureStore.to_arrays`, stored as members prefixed
``features_`` and memory-mapped like the descriptors, described by the manifest's ``features``
entry. Maps without them load as before (``ReferenceMap.features`` is None).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from vpr_seq_ros.errors import MapError, VprSeqError
from vpr_seq_ros.types import EncodedRun
from vpr_seq_ros.writing import atomic_write

log = logging.getLogger(__name__)

MAP_FORMAT = 'vpr_seq_ros.map'
MAP_FORMAT_VERSION = 1
FEATURES_PREFIX = 'features_'
"""Map members holding local features are named this prefix + the feature array's name."""


@dataclass(frozen=True)
class Manifest:
    """What made a map, stored in it.

    Attributes:
        encoder: settings of the encoder that made the frame descriptors.
        sequence_length: L the map was built for.
        source: the mapping run it was built from.
        dtype: storage type of the descriptors (``float32`` or ``float16``).
        num_frames: frames in the map.
        descriptor_dim: D.
        created_utc: creation time, ISO 8601.
        config: the whole configuration the map was built with (nested dict).
        geo_origin: ``(lat, lon, alt)`` about which GPS poses are metres, for GPS runs.
        extra: entries owned by other stages (e.g. ``sequence_descriptors``: how the stored
            sequence descriptors were made; ``dropped_frames``), read with :meth:`get`.
        format: :data:`MAP_FORMAT`.
        format_version: :data:`MAP_FORMAT_VERSION`.
    """

    encoder: dict[str, Any]
    sequence_length: int
    source: str
    dtype: str
    num_frames: int
    descriptor_dim: int
    created_utc: str = ''
    config: dict[str, Any] = field(default_factory=dict)
    geo_origin: tuple[float, float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    format: str = MAP_FORMAT
    format_version: int = MAP_FORMAT_VERSION

    def get(self, key: str, default: Any = None) -> Any:
        """An entry of :attr:`extra` (a stage's own bookkeeping)."""
        return self.extra.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in the map file."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != 'extra'}
        out['geo_origin'] = list(self.geo_origin) if self.geo_origin else None
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Parse the stored JSON form; unknown entries go to :attr:`extra`.

        Raises:
            KeyError, TypeError, ValueError: a required entry is missing or malformed.
        """
        known = {f.name for f in fields(cls)} - {'extra'}
        values = {k: v for k, v in data.items() if k in known}
        origin = values.get('geo_origin')
        values['geo_origin'] = tuple(float(v) for v in origin) if origin else None
        for key in ('sequence_length', 'num_frames', 'descriptor_dim', 'format_version'):
            values[key] = int(values[key])
        if not isinstance(values['encoder'], dict):
            raise TypeError('encoder settings must be a mapping')
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})


@dataclass(frozen=True, eq=False)
class ReferenceMap:
    """A reference map.

    Attributes:
        run: the reference run's frame descriptors, stamps, poses and segments.
        manifest: what made it.
        sequence_descriptors: ``(N, D)`` SeqGeM descriptors of trailing windows (rows without a
            full window are zeros), stored when the map was built for ``seqgem``.
        path: the file it was read from (None for a map not read from a file).
        index: an approximate-search index trained by ``build-map``, serialised by faiss
            (``uint8``); its parameters are the manifest's ``index`` entry.
        index_rows: ``(R,)`` the rows the index holds, in its order.
        features: local features of the map frames for geometric verification (the arrays of
            :meth:`vpr_seq_ros.verification.store.FeatureStore.to_arrays`, memory-mapped when
            loaded; read them through :meth:`map_features`), or None.
    """

    run: EncodedRun
    manifest: Manifest
    sequence_descriptors: np.ndarray | None = None
    path: Path | None = None
    index: np.ndarray | None = None
    index_rows: np.ndarray | None = None
    features: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.run)

    def map_features(self) -> Any:
        """The stored local features as a read-only
        :class:`vpr_seq_ros.verification.store.MapFeatures`, or None when the map has none.

        Raises:
            MapError: the stored features are unreadable (another format, inconsistent sizes).
        """
        if self.features is None:
            return None
        from vpr_seq_ros.verification.errors import VerificationError
        from vpr_seq_ros.verification.store import MapFeatures

        try:
            return MapFeatures(self.features)
        except VerificationError as err:
            raise MapError(f'map {self.path or ""}: {err}') from err

    @property
    def encoder_settings(self) -> dict[str, Any]:
        """Settings of the encoder that made the frame descriptors."""
        return dict(self.manifest.encoder)

    def check_query(self, encoder_settings: dict[str, Any]) -> None:
        """Refuse a query whose encoder settings differ from the map's.

        Precision and its parity figures are recorded but not compared (the rule is in
        :mod:`vpr_seq_ros.encoders.base`).

        Raises:
            MapError: naming every differing setting with both values.
        """
        from vpr_seq_ros.encoders.base import comparable_settings, with_legacy_settings

        recorded = with_legacy_settings(self.encoder_settings, encoder_settings)
        differences = _diff(comparable_settings(recorded), comparable_settings(encoder_settings))
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
        return 'nothing'
    if isinstance(value, dict):
        return '{' + ', '.join(f'{k}: {_show(v)}' for k, v in value.items()) + '}'
    return str(value)


def _normalise(value: Any) -> Any:
    return json.loads(json.dumps(value))


def make_manifest(encoder_settings: dict[str, Any], sequence_length: int, source: str,
                  dtype: str, num_frames: int, dim: int,
                  config: dict[str, Any] | None = None,
                  geo_origin: tuple[float, float, float] | None = None,
                  **extra: Any) -> Manifest:
    """The manifest of a new map (``extra``: entries owned by other stages)."""
    return Manifest(encoder_settings, int(sequence_length), source, dtype, int(num_frames),
                    int(dim),
                    _dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'),
                    dict(config or {}), tuple(geo_origin) if geo_origin else None,  # type: ignore[arg-type]
                    dict(extra))


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


def save_map(refmap: ReferenceMap, path: str | Path, index_file: str | Path | None = None
             ) -> Path:
    """Write a map atomically; returns the path (``.npz`` is appended if missing).

    Members are written one after another into the zip (as ``np.savez`` does, uncompressed), so
    writing needs no memory beyond the arrays themselves.

    Args:
        refmap: the map.
        path: where to write it.
        index_file: a file holding the serialised index (``faiss.write_index``), streamed into
            the ``index`` member in blocks instead of ``refmap.index`` (which is then ignored):
            a large index is never held twice in memory. ``refmap.index_rows`` must be set.

    Raises:
        MapError: the folder cannot be written, or the index file cannot be read.
    """
    path = map_output_path(path)
    run = refmap.run
    dtype = np.float16 if refmap.manifest.dtype == 'float16' else np.float32
    arrays: dict[str, np.ndarray] = {
        'manifest': np.frombuffer(json.dumps(refmap.manifest.to_dict()).encode(),
                                  dtype=np.uint8),
        'descriptors': np.asarray(run.descriptors, dtype=dtype),
        'stamps_ns': np.asarray(run.stamps_ns, dtype=np.int64),
        'segments': np.asarray(run.segments, dtype=np.int64),
        'names': np.asarray(run.names, dtype=np.str_) if run.names else np.zeros(0, np.str_),
    }
    if run.poses is not None:
        arrays['poses'] = np.asarray(run.poses, dtype=np.float64)
    if refmap.sequence_descriptors is not None:
        arrays['sequence_descriptors'] = np.asarray(refmap.sequence_descriptors, dtype=dtype)
    index_source: Path | np.ndarray | None = Path(index_file) if index_file is not None else \
        refmap.index
    if index_source is not None and refmap.index_rows is not None:
        if isinstance(index_source, Path):
            arrays['index'] = np.zeros(0, np.uint8)  # placeholder keeping the member order
        else:
            arrays['index'] = np.asarray(index_source, dtype=np.uint8)
        arrays['index_rows'] = np.asarray(refmap.index_rows, dtype=np.int64)
    for key, value in (refmap.features or {}).items():
        arrays[FEATURES_PREFIX + key] = np.asarray(value)
    streamed = {'index': index_source} if isinstance(index_source, Path) and \
        'index' in arrays else {}
    try:
        atomic_write(path, lambda handle: _write_npz(handle, arrays, streamed))
    except VprSeqError as err:
        raise MapError(str(err)) from err
    log.info('wrote map %s (%d frames, D=%d)', path, len(run), run.descriptors.shape[1])
    return path


_COPY_BLOCK = 16 * 2**20
"""Bytes copied at a time when a member is streamed from a file."""


def _write_npz(handle: BinaryIO, arrays: dict[str, np.ndarray],
               streamed: dict[str, Path]) -> None:
    """Write ``arrays`` as ``np.savez`` does (uncompressed ``.npy`` members, zip64), except
    that the members named in ``streamed`` are ``uint8`` arrays copied from those files in
    blocks of :data:`_COPY_BLOCK` bytes.

    Raises:
        MapError: a streamed file cannot be read.
    """
    with zipfile.ZipFile(handle, mode='w', compression=zipfile.ZIP_STORED,
                         allowZip64=True) as archive:
        for key, value in arrays.items():
            with archive.open(key + '.npy', 'w', force_zip64=True) as member:
                if key not in streamed:
                    np.lib.format.write_array(member, np.asanyarray(value),
                                              allow_pickle=False)
                    continue
                try:
                    source = open(streamed[key], 'rb')
                except OSError as err:
                    raise MapError(f'cannot read the index file {streamed[key]}: {err}; build '
                                   'the map again') from err
                with source:
                    size = os.fstat(source.fileno()).st_size
                    header = np.lib.format.header_data_from_array_1_0(np.zeros(0, np.uint8))
                    header['shape'] = (size,)
                    np.lib.format.write_array_header_1_0(member, header)
                    copied = 0
                    while block := source.read(_COPY_BLOCK):
                        member.write(block)
                        copied += len(block)
                    if copied != size:
                        raise MapError(f'the index file {streamed[key]} changed while it was '
                                       'written into the map; build the map again')


def _npz_members(path: Path) -> dict[str, Any]:
    """Every array of an ``.npz``: uncompressed members memory-mapped in place (read-only, so
    nothing is read until it is touched), compressed ones read.

    ``np.savez`` stores members uncompressed, each an ``.npy`` file inside the zip; the data of
    such a member is a contiguous byte range of the file, which ``np.memmap`` maps.
    """
    out: dict[str, Any] = {}
    with zipfile.ZipFile(path) as archive, open(path, 'rb') as raw:
        for info in archive.infolist():
            name = info.filename[:-4] if info.filename.endswith('.npy') else info.filename
            if info.compress_type != zipfile.ZIP_STORED:
                with archive.open(info) as member:
                    out[name] = np.lib.format.read_array(member, allow_pickle=False)
                continue
            raw.seek(info.header_offset)
            local = raw.read(30)
            if local[:4] != b'PK\x03\x04':
                raise ValueError(f'bad zip member header for {info.filename}')
            name_len = int.from_bytes(local[26:28], 'little')
            extra_len = int.from_bytes(local[28:30], 'little')
            raw.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(raw)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(raw)
            if dtype.hasobject:
                raise ValueError(f'{info.filename} holds Python objects')
            offset = raw.tell()
            count = int(np.prod(shape)) if shape else 1
            if count == 0 or dtype.itemsize == 0:
                out[name] = np.zeros(shape, dtype)
                continue
            if offset + count * dtype.itemsize > info.header_offset + 30 + name_len + \
                    extra_len + info.file_size:
                raise ValueError(f'{info.filename} is truncated')
            out[name] = np.memmap(path, dtype=dtype, mode='r', offset=offset, shape=shape,
                                  order='F' if fortran else 'C')
    return out


def load_map(path: str | Path, keep_float16: bool = True) -> ReferenceMap:
    """Read a map written by :func:`save_map`, without reading its descriptors.

    The descriptors (and any stored sequence descriptors) are memory-mapped read-only in the
    dtype they were stored in: start-up time does not depend on the map's size, memory grows
    only with what is touched, and the map file is never opened for writing. Matchers that need
    float32 convert once (exact search), approximate search reads only the rows it touches;
    ``keep_float16=False`` converts a ``float16`` map to ``float32`` here.

    Raises:
        MapError: missing or corrupt file, or another format or format version.
    """
    path = resolve_map_path(path)
    try:
        arrays = _npz_members(path)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise MapError(f'map file {path} is corrupt or not a map: {err}; rebuild it with '
                       '`vpr-seq build-map`') from err
    try:
        stored = json.loads(np.asarray(arrays['manifest']).tobytes().decode())
    except (KeyError, ValueError, UnicodeDecodeError) as err:
        raise MapError(f'map file {path} has no readable manifest: it is not a vpr_seq_ros map '
                       '(or a damaged one); rebuild it with `vpr-seq build-map`') from err
    if not isinstance(stored, dict) or stored.get('format') != MAP_FORMAT:
        found = stored.get('format') if isinstance(stored, dict) else None
        raise MapError(f'{path} is not a vpr_seq_ros map (format {found!r})')
    version = stored.get('format_version')
    if version != MAP_FORMAT_VERSION:
        raise MapError(f'map {path} has format version {version}; this vpr_seq_ros reads '
                       f'version {MAP_FORMAT_VERSION}. Rebuild the map with `vpr-seq build-map`.')
    try:
        manifest = Manifest.from_dict(stored)
    except (KeyError, TypeError, ValueError) as err:
        raise MapError(f'map file {path} has a malformed manifest ({err!r}); rebuild it with '
                       '`vpr-seq build-map`') from err
    required = ('descriptors', 'stamps_ns', 'segments')
    missing = [k for k in required if k not in arrays]
    if missing:
        raise MapError(f'map file {path} lacks {", ".join(missing)}')

    def floats(array: np.ndarray) -> np.ndarray:
        if array.dtype == np.float32 or (keep_float16 and array.dtype == np.float16):
            return array
        return np.asarray(array, dtype=np.float32)

    descriptors = floats(arrays['descriptors'])
    if descriptors.ndim != 2:
        raise MapError(f'map file {path} is inconsistent: descriptors are not a 2-D array')
    n = descriptors.shape[0]
    poses = arrays.get('poses')
    poses = None if poses is None else np.array(poses, dtype=np.float64)
    names = tuple(str(x) for x in arrays['names']) if 'names' in arrays else ()
    if len(arrays['stamps_ns']) != n or len(arrays['segments']) != n or \
            (poses is not None and len(poses) != n) or (names and len(names) != n):
        raise MapError(f'map file {path} is inconsistent: arrays of different lengths')
    seq = arrays.get('sequence_descriptors')
    run = EncodedRun(descriptors, np.array(arrays['stamps_ns'], dtype=np.int64), poses,
                     np.array(arrays['segments'], dtype=np.int64), names)
    index, index_rows = arrays.get('index'), arrays.get('index_rows')
    features = {k[len(FEATURES_PREFIX):]: v for k, v in arrays.items()
                if k.startswith(FEATURES_PREFIX)} or None
    return ReferenceMap(run, manifest, None if seq is None else floats(seq), path, index,
                        None if index_rows is None else np.array(index_rows, np.int64),
                        features)
