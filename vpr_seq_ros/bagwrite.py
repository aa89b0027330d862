"""Write an image folder as a ROS 2 bag (mcap or sqlite3) that Humble and Jazzy can play.

The bag is written with rosbags in rosbag2 metadata version 8, whose ``offered_qos_profiles``
are strings, as Humble's reader expects (Jazzy reads version 8 too). Message definitions are
embedded, so no ROS install is needed to read it back. (Humble plays ``.mcap`` bags with the
``rosbag2_storage_mcap`` plugin installed; sqlite3 is its default.)
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vpr_seq_ros.errors import SourceError, VprSeqError

log = logging.getLogger(__name__)

FORMATS = ('mcap', 'sqlite3')
"""Storage formats :func:`images_to_bag` writes."""

SYNTHETIC_START_NS = 1_000_000_000
"""First stamp when stamps are synthesised from the rate (1 s: ROS reads a zero stamp as unset)."""

JPEG_QUALITY = 90
"""JPEG quality of ``--compressed`` images (compressed_image_transport's default is 95)."""

ODOM_FRAME = 'odom'
"""``header.frame_id`` of the Odometry messages."""
BASE_FRAME = 'base_link'
"""``child_frame_id`` of the Odometry messages."""


def images_to_bag(folder: str | Path, out: str | Path, rate_hz: float = 10.0,
                  poses_csv: str | Path | None = None, fmt: str = 'mcap',
                  compressed: bool = False, image_topic: str = '/camera/image_raw',
                  pose_topic: str = '/odom', frame_id: str = 'camera',
                  overwrite: bool = False) -> Path:
    """Write the images of a folder, and their poses, as a ROS 2 bag.

    Images are read in file-name order as for any image-folder source (an optional
    ``frames.csv`` beside them, or ``poses_csv``, with ``name,stamp_ns,x,y,z,yaw,segment``).
    Each becomes a ``sensor_msgs/msg/Image`` (``rgb8``) on ``image_topic``, or with
    ``compressed`` a ``sensor_msgs/msg/CompressedImage`` (JPEG, format
    ``'rgb8; jpeg compressed bgr8'``) on ``<image_topic>/compressed``. When the table has ``x``
    and ``y`` columns, a ``nav_msgs/msg/Odometry`` (yaw as a quaternion about z, frame
    ``odom`` -> ``base_link``) with the same stamp goes on ``pose_topic``. Header stamps and
    receive times are the table's ``stamp_ns``, or ``1 s + i / rate_hz`` without one. Segment
    ids are not stored (a bag reader splits segments at stamp gaps).

    The bag is written into a temporary folder beside ``out`` and renamed into place at the
    end, so a failure leaves no partial bag.

    Args:
        folder: image folder.
        out: bag folder to create (no ``.mcap``/``.db3`` suffix: a ROS 2 bag is a folder).
        rate_hz: frame rate for synthesised stamps (Hz).
        poses_csv: frame table to use instead of ``folder/frames.csv``.
        fmt: ``'mcap'`` or ``'sqlite3'``.
        compressed: write JPEG ``CompressedImage`` messages instead of raw ``Image``.
        image_topic: base image topic.
        pose_topic: Odometry topic.
        frame_id: ``header.frame_id`` of the images.
        overwrite: replace an existing bag at ``out``.

    Returns:
        The bag folder.

    Raises:
        SourceError: unreadable folder or frame table.
        VprSeqError: bad arguments, ``out`` exists (without ``overwrite``) or is not a bag,
            or the bag cannot be written.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from vpr_seq_ros.sources.images import ImageFolderSource

    if fmt not in FORMATS:
        raise VprSeqError(f'bag format {fmt!r} is not one of {", ".join(FORMATS)}')
    if not (rate_hz > 0 and math.isfinite(rate_hz)):
        raise VprSeqError(f'rate must be a positive number of Hz; got {rate_hz}')
    for name, topic in (('image topic', image_topic), ('pose topic', pose_topic)):
        if not topic.startswith('/') or topic.endswith('/') or ' ' in topic:
            raise VprSeqError(f'{name} {topic!r} is not an absolute ROS topic name like /camera')
    out = Path(out)
    if out.suffix in ('.mcap', '.db3', '.bag'):
        raise VprSeqError(f'{out}: a ROS 2 bag is a folder; give a name without the '
                          f'{out.suffix} suffix (the storage file is created inside it)')
    _check_target(out, overwrite)

    source = ImageFolderSource(folder, rate_hz, poses_csv)
    table = source.table
    given = [table[p.name].stamp_ns if table else None for p in source.files]
    offset = 0 if all(s is not None for s in given) else SYNTHETIC_START_NS
    ts = get_typestore(Stores.ROS2_HUMBLE)
    plugin = StoragePlugin.MCAP if fmt == 'mcap' else StoragePlugin.SQLITE3
    topic = f'{image_topic}/compressed' if compressed else image_topic
    msgtype = 'sensor_msgs/msg/CompressedImage' if compressed else 'sensor_msgs/msg/Image'

    out.parent.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', suffix='.tmp', dir=out.parent))
    staged = holder / out.name
    try:
        count = 0
        with Writer(staged, version=8, storage_plugin=plugin) as writer:
            image_conn = writer.add_connection(topic, msgtype, typestore=ts)
            pose_conn = (writer.add_connection(pose_topic, 'nav_msgs/msg/Odometry', typestore=ts)
                         if source.has_poses else None)
            for frame in source:
                stamp = frame.stamp_ns + offset
                header = _header(ts, stamp, frame_id)
                msg = (_compressed_msg(ts, header, frame.image) if compressed
                       else _image_msg(ts, header, frame.image))
                writer.write(image_conn, stamp, ts.serialize_cdr(msg, msgtype))
                if pose_conn is not None and frame.pose is not None:
                    odom = _odometry_msg(ts, _header(ts, stamp, ODOM_FRAME), frame.pose)
                    writer.write(pose_conn, stamp, ts.serialize_cdr(odom, odom.__msgtype__))
                count += 1
        _replace(staged, out)
    except VprSeqError:
        raise
    except Exception as err:  # rosbags or the file system; nothing is left behind
        raise VprSeqError(f'cannot write bag {out}: {err}') from err
    finally:
        shutil.rmtree(holder, ignore_errors=True)
    log.info('wrote %d frames to %s (%s, %s%s)', count, out, fmt, topic,
             f', {pose_topic}' if source.has_poses else '')
    return out


def _check_target(out: Path, overwrite: bool) -> None:
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise VprSeqError(f'{out} exists; choose another output or pass --overwrite')
    if not (out.is_dir() and (out / 'metadata.yaml').is_file()):
        raise VprSeqError(f'{out} exists and is not a ROS 2 bag folder (no metadata.yaml); '
                          'it is not replaced even with --overwrite')


def _replace(staged: Path, out: Path) -> None:
    """Move the finished bag to ``out``, replacing an old bag there only after it is complete."""
    if not out.exists():
        os.replace(staged, out)
        return
    trash = staged.parent / f'{out.name}.old'
    os.replace(out, trash)
    try:
        os.replace(staged, out)
    except OSError:
        os.replace(trash, out)  # put the old bag back
        raise


def _header(ts: Any, stamp_ns: int, frame_id: str) -> Any:
    header_t = ts.types['std_msgs/msg/Header']
    time_t = ts.types['builtin_interfaces/msg/Time']
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    if not 0 <= sec < 2 ** 31:
        raise SourceError(f'stamp {stamp_ns} ns does not fit a ROS time (0 .. 2^31 s)')
    return header_t(stamp=time_t(sec=sec, nanosec=nanosec), frame_id=frame_id)


def _image_msg(ts: Any, header: Any, rgb: np.ndarray) -> Any:
    h, w, _ = rgb.shape
    return ts.types['sensor_msgs/msg/Image'](
        header=header, height=h, width=w, encoding='rgb8', is_bigendian=0, step=w * 3,
        data=np.ascontiguousarray(rgb, np.uint8).reshape(-1))


def _compressed_msg(ts: Any, header: Any, rgb: np.ndarray) -> Any:
    import cv2

    ok, buf = cv2.imencode('.jpg', np.ascontiguousarray(rgb[:, :, ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise VprSeqError('OpenCV could not JPEG-encode an image')
    return ts.types['sensor_msgs/msg/CompressedImage'](
        header=header, format='rgb8; jpeg compressed bgr8', data=buf.reshape(-1))


def _odometry_msg(ts: Any, header: Any, pose: Any) -> Any:
    t = ts.types
    quat = t['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=math.sin(pose.yaw / 2),
                                             w=math.cos(pose.yaw / 2))
    point = t['geometry_msgs/msg/Point'](x=pose.x, y=pose.y, z=pose.z)
    vec = t['geometry_msgs/msg/Vector3']
    return t['nav_msgs/msg/Odometry'](
        header=header, child_frame_id=BASE_FRAME,
        pose=t['geometry_msgs/msg/PoseWithCovariance'](
            pose=t['geometry_msgs/msg/Pose'](position=point, orientation=quat),
            covariance=np.zeros(36, np.float64)),
        twist=t['geometry_msgs/msg/TwistWithCovariance'](
            twist=t['geometry_msgs/msg/Twist'](linear=vec(x=0.0, y=0.0, z=0.0),
                                               angular=vec(x=0.0, y=0.0, z=0.0)),
            covariance=np.zeros(36, np.float64)))
