"""Image-folder source: frames sorted by file name, optional ``frames.csv`` side table."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from dataclasses import replace
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from vpr_seq_ros.errors import SourceError
from vpr_seq_ros.sources.base import (DecodeFunction, DecodeJob, DecodeOutcome, DecodingSource,
                                      DropReason, format_dropped)
from vpr_seq_ros.sources.sidecar import SIDECAR_NAME, SidecarRow, read_sidecar
from vpr_seq_ros.types import Frame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.ppm', '.pgm', '.webp')
OTHER_IMAGE_SUFFIXES = ('.gif', '.heic', '.heif', '.avif', '.jp2', '.jxl', '.exr', '.dng',
                        '.raw', '.cr2', '.nef', '.arw', '.svg')
"""Image formats an image folder does not read: such files are left out and counted."""


def load_rgb(path: Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB.

    Raises:
        SourceError: the file is missing or not a readable image.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert('RGB'))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise SourceError(f'cannot read image {path}: {err}. Remove or replace the file.') \
            from err


class ImageFolderSource(DecodingSource):
    """Frames from the image files of one folder, in file-name order.

    Stamps, poses and segments come from a side table (``frames.csv`` in the folder, or the
    ``poses`` argument); without stamps they are synthesised as ``i * 1e9 / rate_hz``. Files of
    an image format not in :data:`IMAGE_SUFFIXES` (``.gif``, ``.heic``, ...) are left out and
    counted in :meth:`dropped`; other files (notes, the side table) are not frames. An image
    file that cannot be read is an error (:class:`SourceError` naming it).
    """

    input_kind = 'image'

    def __init__(self, folder: str | Path, rate_hz: float = 10.0,
                 poses: str | Path | None = None) -> None:
        self.folder = Path(folder)
        self.path = str(self.folder)
        if not self.folder.is_dir():
            raise SourceError(f'image folder {self.folder} does not exist')
        self.files = sorted(p for p in self.folder.iterdir()
                            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        others = sorted(p for p in self.folder.iterdir()
                        if p.suffix.lower() in OTHER_IMAGE_SUFFIXES and p.is_file())
        self._dropped: Counter[str] = Counter({DropReason.UNSUPPORTED_FORMAT.value:
                                               len(others)})
        self._other_formats = ', '.join(sorted({p.suffix.lower() for p in others}))
        if not self.files:
            found = f'; it holds {len(others)} {self._other_formats} file(s): convert them' \
                if others else ''
            raise SourceError(f'image folder {self.folder} holds no images '
                              f'({", ".join(IMAGE_SUFFIXES)}){found}')
        if others:
            log.warning('%s: left out %d file(s) of an unsupported image format (%s); convert '
                        'them to PNG or JPEG to use them', self.folder, len(others),
                        self._other_formats)
        table_path = Path(poses) if poses else self.folder / SIDECAR_NAME
        self.table: dict[str, SidecarRow] = {}
        if poses or table_path.is_file():
            self.table = read_sidecar(table_path)
            missing = [p.name for p in self.files if p.name not in self.table]
            if missing:
                raise SourceError(f'{table_path} has no row for {len(missing)} image(s), e.g. '
                                  f'{missing[0]}')
        self._stamps = self._resolve_stamps(rate_hz)

    def _resolve_stamps(self, rate_hz: float) -> list[int]:
        given = [self.table[p.name].stamp_ns if self.table else None for p in self.files]
        if all(s is not None for s in given):
            stamps = [int(s) for s in given]  # type: ignore[arg-type]
            if any(b <= a for a, b in zip(stamps, stamps[1:])):
                raise SourceError(f'{self.folder}: stamps must increase in file-name order')
            return stamps
        if any(s is not None for s in given):
            raise SourceError(f'{self.folder}: stamp_ns is given for some frames only')
        return [round(i * 1e9 / rate_hz) for i in range(len(self.files))]

    def __len__(self) -> int:
        return len(self.files)

    def dropped_line(self) -> str:
        """The files left out, in one line that names their formats."""
        return format_dropped(self.dropped(), formats=self._other_formats)

    @property
    def has_poses(self) -> bool:
        return bool(self.table) and all(r.pose is not None for r in self.table.values())

    @property
    def decode_function(self) -> DecodeFunction:
        return load_rgb

    def decode_jobs(self) -> Iterator[DecodeJob]:
        """The frames in file-name order; the payload is the image file's path."""
        for index, path in enumerate(self.files):
            row = self.table.get(path.name) if self.table else None
            frame = Frame(index=index, stamp_ns=self._stamps[index],
                          pose=row.pose if row else None,
                          segment=row.segment if row and row.segment is not None else 0,
                          name=path.name)
            yield DecodeJob(frame, path)

    def assemble(self, outcomes: Iterable[DecodeOutcome]) -> Iterator[Frame]:
        """The frames; an image that cannot be read raises its error."""
        for outcome in outcomes:
            if outcome.error is not None:
                raise outcome.error
            yield replace(outcome.frame, image=outcome.image)
