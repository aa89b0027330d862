"""Precomputed descriptor file: ``.npy`` of shape (N, D), rows in frame order.

This is the seqNet / SeqMatchNet format. A ``<stem>.frames.csv`` side table beside the file
(columns as ``frames.csv`` with ``name`` = row number) may give stamps and poses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from vpr_seq_ros.errors import SourceError
from vpr_seq_ros.sources.base import FrameSource
from vpr_seq_ros.sources.sidecar import SidecarRow, read_sidecar
from vpr_seq_ros.types import Frame


class DescriptorFileSource(FrameSource):
    """Frames whose descriptors are rows of an ``(N, D)`` ``.npy`` array."""

    input_kind = 'descriptor'

    def __init__(self, path: str | Path, rate_hz: float = 10.0,
                 poses: str | Path | None = None) -> None:
        self.file = Path(path)
        self.path = str(self.file)
        try:
            array = np.load(self.file, mmap_mode='r', allow_pickle=False)
        except (OSError, ValueError) as err:
            raise SourceError(f'cannot read descriptor file {self.file}: {err}') from err
        if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
            raise SourceError(f'descriptor file {self.file} must hold an (N, D) array with '
                              f'N, D > 0; got shape {array.shape}')
        if not np.issubdtype(array.dtype, np.floating):
            raise SourceError(f'descriptor file {self.file} must hold floats, got {array.dtype}')
        self.array = array
        table_path = Path(poses) if poses else self.file.with_suffix('.frames.csv')
        self.table: dict[str, SidecarRow] = {}
        if poses or table_path.is_file():
            self.table = read_sidecar(table_path)
            if len(self.table) != len(array) or any(str(i) not in self.table
                                                    for i in range(len(array))):
                raise SourceError(f'{table_path} must have one row per descriptor, named 0..'
                                  f'{len(array) - 1}')
        stamps = [self.table[str(i)].stamp_ns for i in range(len(array))] if self.table else []
        if stamps and all(s is not None for s in stamps):
            self.stamps = [int(s) for s in stamps]  # type: ignore[arg-type]
        else:
            self.stamps = [round(i * 1e9 / rate_hz) for i in range(len(array))]

    def __len__(self) -> int:
        return int(self.array.shape[0])

    @property
    def has_poses(self) -> bool:
        return bool(self.table) and all(r.pose is not None for r in self.table.values())

    def __iter__(self) -> Iterator[Frame]:
        # mapped again for this pass only: the pages read leave the process once it is done
        # (a million-row map build would otherwise keep the whole input resident)
        try:
            array = np.load(self.file, mmap_mode='r', allow_pickle=False)
        except (OSError, ValueError) as err:
            raise SourceError(f'cannot read descriptor file {self.file}: {err}') from err
        if array.shape != self.array.shape or array.dtype != self.array.dtype:
            raise SourceError(f'descriptor file {self.file} changed while it was read; '
                              'start again')
        for index in range(len(self)):
            row = self.table.get(str(index)) if self.table else None
            descriptor = np.array(array[index], dtype=np.float32)  # a copy, not a view
            if not np.all(np.isfinite(descriptor)):
                raise SourceError(f'{self.file}: row {index} holds NaN or infinite values')
            yield Frame(index=index, stamp_ns=self.stamps[index], descriptor=descriptor,
                        pose=row.pose if row else None,
                        segment=row.segment if row and row.segment is not None else 0,
                        name=str(index))
