"""CosPlace's place classes and groups, for JIST's image branch.

A frame at ``(x, y)`` metres with heading ``h`` degrees belongs to class
``(floor(x/M), floor(y/M), floor(h/alpha))`` and to group
``(floor(x/M) mod N, floor(y/M) mod N, floor(h/alpha) mod L)`` (CosPlace
``get__class_id__group_id``): two classes of one group are at least ``N`` cells (or ``L`` heading
bins) apart, so a group's classes never show the same place. For frame-aligned traverses
(``by: index``) the place is the frame index: classes are cells of ``M`` frames, groups
``floor(i/M) mod N``, and there is no heading.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from vpr_seq_ros.training.config import JistImageBranchConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class PlaceGroup:
    """One group of place classes.

    Attributes:
        key: the group id (cell residues and heading-bin residue).
        classes: per class, the ``(n_c,)`` int64 rows of its images in the image pool.
    """

    key: tuple[int, ...]
    classes: tuple[np.ndarray, ...]

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return len(self.classes)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` (image row, class id) pairs: a uniform class, then a uniform image of it."""
        labels = rng.integers(0, self.num_classes, size=n)
        rows = np.array([self.classes[c][rng.integers(0, len(self.classes[c]))]
                         for c in labels], dtype=np.int64)
        return rows, labels.astype(np.int64)


def place_groups(places: np.ndarray, yaw: np.ndarray, by: str,
                 cfg: JistImageBranchConfig) -> list[PlaceGroup]:
    """Classes and groups of an image pool.

    Args:
        places: ``(n, k)`` places: frame index (``k = 1``, ``by: index``) or x, y, z metres.
        yaw: ``(n,)`` radians, NaN where unknown (then the heading is not used).
        by: ``index`` or ``position``.
        cfg: cell size, heading bin, N, L, number of groups, minimum images per class.

    Returns:
        Up to ``cfg.groups`` groups with at least two classes each, in sorted key order.
    """
    cells = np.floor(places[:, :1 if by == 'index' else 2] / cfg.cell_size).astype(np.int64)
    use_heading = by == 'position' and bool(np.isfinite(yaw).all())
    if by == 'position' and not use_heading:
        log.info('image branch: some frames have no yaw, so classes ignore the heading')
    if use_heading:
        heading = np.mod(np.degrees(yaw), 360.0)
        bins = np.floor(heading / cfg.heading_bin_deg).astype(np.int64)[:, None]
        class_keys = np.concatenate([cells, bins], axis=1)
        group_keys = np.concatenate([np.mod(cells, cfg.cells_per_group),
                                     np.mod(bins, cfg.headings_per_group)], axis=1)
    else:
        class_keys = cells
        group_keys = np.mod(cells, cfg.cells_per_group)
    by_group: dict[tuple[int, ...], dict[tuple[int, ...], list[int]]] = {}
    for row, (g, c) in enumerate(zip(map(tuple, group_keys), map(tuple, class_keys))):
        by_group.setdefault(g, {}).setdefault(c, []).append(row)
    groups = []
    dropped = 0
    for g in sorted(by_group):
        classes = [np.array(rows, dtype=np.int64) for _, rows in sorted(by_group[g].items())
                   if len(rows) >= cfg.min_images_per_class]
        dropped += len(by_group[g]) - len(classes)
        if len(classes) >= 2:
            groups.append(PlaceGroup(tuple(int(v) for v in g), tuple(classes)))
    groups = groups[:cfg.groups]
    log.info('image branch: %d groups of %s classes (%d classes with fewer than %d images '
             'left out)', len(groups), ', '.join(str(g.num_classes) for g in groups) or 'no',
             dropped, cfg.min_images_per_class)
    return groups


__all__ = ['PlaceGroup', 'place_groups']
