"""``vpr-seq images-to-bag``: write an image folder (and its poses) as a ROS 2 bag."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        'images-to-bag', help='write an image folder as a ROS 2 bag (mcap or sqlite3)',
        description='Write the images of FOLDER (in file-name order) as a ROS 2 bag that Humble '
        'and Jazzy can play (rosbag2 metadata version 8; Humble needs the '
        'rosbag2_storage_mcap plugin for mcap): sensor_msgs/msg/Image rgb8 messages on the '
        'image topic, or with --compressed JPEG sensor_msgs/msg/CompressedImage messages on '
        '<image topic>/compressed. When the frame table (FOLDER/frames.csv or --poses) has x and '
        'y columns, each frame also gets a nav_msgs/msg/Odometry (yaw as a quaternion) on the '
        'pose topic. Stamps are the table\'s stamp_ns, or 1 s + i/RATE when it has none. The bag '
        'is written into a temporary folder and renamed into place; an existing output is '
        'never replaced without --overwrite.')
    parser.add_argument('folder', metavar='FOLDER',
                        help='image folder (optional frames.csv: name,stamp_ns,x,y,z,yaw,segment)')
    parser.add_argument('-o', '--output', required=True, metavar='BAG',
                        help='bag folder to create (no .mcap/.db3 suffix; the storage file is '
                        'written inside it)')
    parser.add_argument('--rate', type=float, default=10.0, metavar='HZ',
                        help='frame rate for synthesised stamps when the table has no stamp_ns '
                        '(default 10)')
    parser.add_argument('--poses', metavar='CSV',
                        help='frame table (name,stamp_ns,x,y,z,yaw,segment) instead of '
                        'FOLDER/frames.csv')
    parser.add_argument('--format', choices=('mcap', 'sqlite3'), default='mcap',
                        help='storage format (default mcap, the default since Iron; sqlite3 is '
                        "Humble's default)")
    parser.add_argument('--compressed', action='store_true',
                        help='write JPEG CompressedImage messages on <image topic>/compressed')
    parser.add_argument('--image-topic', default='/camera/image_raw', metavar='TOPIC',
                        help='image topic (default /camera/image_raw)')
    parser.add_argument('--pose-topic', default='/odom', metavar='TOPIC',
                        help='Odometry topic, written when the frames have poses (default /odom)')
    parser.add_argument('--frame-id', default='camera', metavar='FRAME',
                        help='header.frame_id of the images (default camera)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing bag folder at the output path')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rosbags.rosbag2 import Reader

    from vpr_seq_ros.bagwrite import images_to_bag

    path = images_to_bag(args.folder, args.output, rate_hz=args.rate, poses_csv=args.poses,
                         fmt=args.format, compressed=args.compressed,
                         image_topic=args.image_topic, pose_topic=args.pose_topic,
                         frame_id=args.frame_id, overwrite=args.overwrite)
    with Reader(path) as reader:  # report what is in the bag, not what was meant to be
        topics = ', '.join(f'{name} [{info.msgtype}] x {info.msgcount}'
                           for name, info in reader.topics.items())
        seconds = reader.duration / 1e9
    print(f'bag written: {path} ({args.format}, {seconds:.2f} s): {topics}')
    return 0
