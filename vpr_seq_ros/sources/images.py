"""Image-folder source: frames sorted by file name, optional ``frames.csv`` side table."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from vpr_seq_ros.errors import SourceError
from vpr_seq_ros.sources.base import FrameSource
from vpr_seq_ros.sources.sidecar import SIDECAR_NAME, SidecarRow, read_sidecar
from vpr_seq_ros.types import Frame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.ppm', '.pgm', '.webp')


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


class ImageFolderSource(FrameSource):
    """Frames from the image files of one folder, in file-name order.

    Stamps, poses and segments come from a side table (``frames.csv`` in the folder, or the
    ``poses`` argument); without stamps they are synthesised as ``i * 1e9 / rate_hz``.
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
        if not self.files:
            raise SourceError(f'image folder {self.folder} holds no images '
                              f'({", ".join(IMAGE_SUFFIXES)})')
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

    @property
    def has_poses(self) -> bool:
        return bool(self.table) and all(r.pose is not None for r in self.table.values())

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.files):
            row = self.table.get(path.name) if self.table else None
            yield Frame(index=index, stamp_ns=self._stamps[index], image=load_rgb(path),
                        pose=row.pose if row else None,
                        segment=row.segment if row and row.segment is not None else 0,
                        name=path.name)
