"""Per-frame side information for image folders: ``frames.csv``.

Columns: ``name`` (the image file name, required) and any of ``stamp_ns``, ``x``, ``y``, ``z``,
``yaw`` and ``segment``. Rows may come in any order; frames stay in file-name order.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from vpr_seq_ros.errors import SourceError
from vpr_seq_ros.types import Pose

SIDECAR_NAME = 'frames.csv'
KNOWN_COLUMNS = ('name', 'stamp_ns', 'x', 'y', 'z', 'yaw', 'segment')


@dataclass(frozen=True)
class SidecarRow:
    """Side information of one frame."""

    stamp_ns: int | None
    pose: Pose | None
    segment: int | None


def read_sidecar(path: Path) -> dict[str, SidecarRow]:
    """Read a ``frames.csv``; returns rows keyed by image file name.

    Raises:
        SourceError: unreadable file, unknown or missing columns, or bad values.
    """
    try:
        with open(path, newline='') as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            rows = list(reader)
    except OSError as err:
        raise SourceError(f'cannot read frame table {path}: {err}') from err
    unknown = [c for c in columns if c not in KNOWN_COLUMNS]
    if unknown or 'name' not in columns:
        raise SourceError(
            f'{path}: columns must be name plus any of {", ".join(KNOWN_COLUMNS[1:])}; '
            f'got {", ".join(columns) or "none"}')
    has_pose = 'x' in columns and 'y' in columns
    if ('x' in columns) != ('y' in columns):
        raise SourceError(f'{path}: poses need both x and y columns')
    table: dict[str, SidecarRow] = {}
    for line, row in enumerate(rows, start=2):
        try:
            stamp = int(row['stamp_ns']) if row.get('stamp_ns') not in (None, '') else None
            pose = None
            if has_pose:
                values = [float(row.get(k) or 0.0) for k in ('x', 'y', 'z', 'yaw')]
                if not all(math.isfinite(v) for v in values):
                    raise ValueError('non-finite pose')
                pose = Pose(*values)
            segment = int(row['segment']) if row.get('segment') not in (None, '') else None
        except ValueError as err:
            raise SourceError(f'{path} line {line}: {err}') from err
        table[row['name']] = SidecarRow(stamp, pose, segment)
    return table
