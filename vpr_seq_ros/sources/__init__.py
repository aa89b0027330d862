"""Frame sources behind one interface, opened by path."""

from __future__ import annotations

from pathlib import Path

from vpr_seq_ros.config import SourceConfig
from vpr_seq_ros.errors import SourceError
from vpr_seq_ros.sources.base import DropReason, FrameSource, format_dropped

BAG_SUFFIXES = ('.bag', '.db3', '.mcap')


def open_source(path: str | Path, cfg: SourceConfig | None = None,
                geo_origin: tuple[float, float, float] | None = None) -> FrameSource:
    """Open a run: an image folder, an ``.npy`` descriptor file, or a bag (ROS 1 ``.bag``,
    ROS 2 ``.db3``/``.mcap`` or bag folder).

    Args:
        path: the run.
        cfg: source settings (rate, frame table, bag topics, keyframe distance).
        geo_origin: ``(lat, lon, alt)`` about which a bag's NavSatFix poses are expressed in
            metres: a query run must use its map's origin (None: the run's first fix).

    Raises:
        SourceError: the path does not exist or is of no known kind.
    """
    cfg = cfg or SourceConfig()
    path = Path(path)
    if not path.exists():
        raise SourceError(f'source {path} does not exist')
    if path.suffix == '.npy':
        from vpr_seq_ros.sources.npy import DescriptorFileSource

        return DescriptorFileSource(path, cfg.rate_hz, cfg.poses)
    if path.suffix in BAG_SUFFIXES or (path.is_dir() and (path / 'metadata.yaml').is_file()):
        from vpr_seq_ros.sources.bag import BagSource

        return BagSource(path, cfg.image_topic, cfg.pose_topic, cfg.keyframe_distance_m,
                         geo_origin=geo_origin)
    if path.is_dir():
        from vpr_seq_ros.sources.images import ImageFolderSource

        return ImageFolderSource(path, cfg.rate_hz, cfg.poses)
    raise SourceError(f'source {path} is neither an image folder nor a .npy descriptor file')


__all__ = ['DropReason', 'FrameSource', 'format_dropped', 'open_source']
