"""ROS-free conversion between ROS messages and the core's types.

Nothing here imports rclpy: the functions take any object with the standard message attributes
(rclpy messages, rosbags dataclasses) or the plain fields. The package namespace re-exports the
image decoders of :mod:`vpr_seq_ros.messages.images`.
"""

from vpr_seq_ros.messages.images import (RAW_ENCODINGS, CompressedFormat, RawLayout,
                                         as_byte_array, check_compressed, check_image,
                                         decode_any, decode_compressed, decode_compressed_fields,
                                         decode_image, decode_image_fields, is_compressed,
                                         parse_compressed_format, raw_layout)

__all__ = [
    'RAW_ENCODINGS',
    'CompressedFormat',
    'RawLayout',
    'as_byte_array',
    'check_compressed',
    'check_image',
    'decode_any',
    'decode_compressed',
    'decode_compressed_fields',
    'decode_image',
    'decode_image_fields',
    'is_compressed',
    'parse_compressed_format',
    'raw_layout',
]
