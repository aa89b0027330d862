"""Decode ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` into RGB arrays, without ROS.

Every decoder returns what the frame encoders take: an ``(H, W, 3)`` uint8 **RGB** array. The
functions accept the plain message fields, or any object with the standard attributes (rclpy
messages, rosbags dataclasses). ``data`` may be ``bytes``, ``bytearray``, ``memoryview``,
``array.array('B')`` (rclpy) or a 1-D uint8 numpy array (rosbags); it is wrapped with
``np.frombuffer`` without a copy.

Raw images (``sensor_msgs/Image``):

* ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8`` (alpha dropped), ``mono8`` / ``8UC1`` (grey
  replicated to three channels);
* ``mono16``, ``rgb16``, ``bgr16``, ``rgba16``, ``bgra16``: scaled to 8 bits by keeping the high
  byte (``v >> 8``), so 65535 -> 255 and 255 -> 0; ``is_bigendian`` is honoured;
* ``bayer_{rggb,bggr,gbrg,grbg}{8,16}``: demosaiced with OpenCV's shifted codes, as cv_bridge
  does (ROS ``rggb`` is OpenCV ``BayerBG``, ``bggr`` -> ``BayerRG``, ``gbrg`` -> ``BayerGR``,
  ``grbg`` -> ``BayerGB``);
* ``uyvy`` / ``yuv422`` (UYVY) and ``yuyv`` / ``yuv422_yuy2`` (YUY2): even width;
* ``nv12``, ``nv21``: a ``(H * 3/2, W)`` plane buffer; even width and height;
* refused: ``16UC1``, ``32FC1`` and the other generic ``<depth>C<n>`` encodings (depth or
  non-colour data, not for place recognition).

``step`` may exceed the row size by any number of bytes (rows are read with stride ``step``),
and the last row may lack its padding (``len(data) >= step * (rows - 1) + row_bytes``), as some
drivers under-allocate it.

Compressed images: ``format`` such as ``'jpeg'``, ``'png'``, ``'rgb8; jpeg compressed bgr8'``
or ``'bgr8; png compressed'``; the payload is decoded with ``cv2.imdecode(IMREAD_UNCHANGED)``.
OpenCV returns colour in BGR order, so the result is swapped to RGB, unless the format's target
token says the encoder was given RGB data (``'... compressed rgb8'``). 16-bit payloads are
scaled by ``>> 8``. ``compressedDepth`` is refused.

Any malformed input raises :class:`~vpr_seq_ros.errors.DecodeError`, never another exception.
"""

from __future__ import annotations

import array
import functools
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from vpr_seq_ros.errors import DecodeError

RAW_ENCODINGS: dict[str, tuple[str, int, str]] = {
    # encoding: (pixel type, channels, kind)
    'rgb8': ('u1', 3, 'rgb'),
    'bgr8': ('u1', 3, 'bgr'),
    'rgba8': ('u1', 4, 'rgba'),
    'bgra8': ('u1', 4, 'bgra'),
    'mono8': ('u1', 1, 'mono'),
    '8uc1': ('u1', 1, 'mono'),
    'rgb16': ('u2', 3, 'rgb'),
    'bgr16': ('u2', 3, 'bgr'),
    'rgba16': ('u2', 4, 'rgba'),
    'bgra16': ('u2', 4, 'bgra'),
    'mono16': ('u2', 1, 'mono'),
    'bayer_rggb8': ('u1', 1, 'bayer_rggb'),
    'bayer_bggr8': ('u1', 1, 'bayer_bggr'),
    'bayer_gbrg8': ('u1', 1, 'bayer_gbrg'),
    'bayer_grbg8': ('u1', 1, 'bayer_grbg'),
    'bayer_rggb16': ('u2', 1, 'bayer_rggb'),
    'bayer_bggr16': ('u2', 1, 'bayer_bggr'),
    'bayer_gbrg16': ('u2', 1, 'bayer_gbrg'),
    'bayer_grbg16': ('u2', 1, 'bayer_grbg'),
    'uyvy': ('u1', 2, 'uyvy'),
    'yuv422': ('u1', 2, 'uyvy'),
    'yuyv': ('u1', 2, 'yuy2'),
    'yuv422_yuy2': ('u1', 2, 'yuy2'),
    'nv12': ('u1', 1, 'nv12'),
    'nv21': ('u1', 1, 'nv21'),
}
"""Supported ``sensor_msgs/Image`` encodings (lower case)."""

_BAYER_CODES = {
    # ROS names the colours of the top-left 2x2 block; OpenCV names those of the second row's
    # second and third pixels, hence the shift (the same table as cv_bridge).
    'bayer_rggb': 'COLOR_BayerBG2RGB',
    'bayer_bggr': 'COLOR_BayerRG2RGB',
    'bayer_gbrg': 'COLOR_BayerGR2RGB',
    'bayer_grbg': 'COLOR_BayerGB2RGB',
}
_YUV_CODES = {
    'uyvy': 'COLOR_YUV2RGB_UYVY',
    'yuy2': 'COLOR_YUV2RGB_YUY2',
    'nv12': 'COLOR_YUV2RGB_NV12',
    'nv21': 'COLOR_YUV2RGB_NV21',
}
_GENERIC = re.compile(r'^(8u|8s|16u|16s|32s|32f|64f)(c[0-9]+)?$')
_RGB_TARGETS = ('rgb8', 'rgba8', 'rgb16', 'rgba16')
_CODECS = ('jpeg', 'jpg', 'png', 'tiff', 'tif', 'bmp', 'webp', 'jp2', 'jpeg2000', 'pnm', 'ppm',
           'pgm', 'avif', 'qoi')


@functools.cache
def _optional_cv2() -> ModuleType | None:
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _cv2() -> ModuleType:
    """OpenCV, imported on first use (only colour conversions and compressed images need it)."""
    cv2 = _optional_cv2()
    if cv2 is None:
        raise DecodeError('this image needs OpenCV: pip install opencv-python-headless')
    return cv2


_TO_RGB = {  # (channels, channels in BGR order) -> OpenCV conversion
    (1, False): 'COLOR_GRAY2RGB', (1, True): 'COLOR_GRAY2RGB',
    (3, True): 'COLOR_BGR2RGB', (4, True): 'COLOR_BGRA2RGB', (4, False): 'COLOR_RGBA2RGB',
}


def _to_rgb(pix: np.ndarray, bgr: bool) -> np.ndarray:
    """``(H, W, C)`` uint8 grey (C=1), RGB(A) or BGR(A) -> ``(H, W, 3)`` RGB, C-contiguous.

    Uses OpenCV when installed (several times faster than numpy's strided copies).
    """
    channels = pix.shape[2]
    if channels == 3 and not bgr:
        return np.ascontiguousarray(pix)
    cv2 = _optional_cv2()
    if cv2 is not None:
        # OpenCV reads row-strided views as they are (its bindings copy what they cannot)
        src = pix[:, :, 0] if channels == 1 else pix
        return cv2.cvtColor(src, getattr(cv2, _TO_RGB[channels, bgr]))
    if channels == 1:
        return np.ascontiguousarray(np.repeat(pix, 3, axis=2))
    return np.ascontiguousarray(pix[:, :, 2::-1] if bgr else pix[:, :, :3])


def as_byte_array(data: Any) -> np.ndarray:
    """View a message's ``data`` field as a 1-D uint8 array, without a copy where possible.

    Args:
        data: ``bytes``, ``bytearray``, ``memoryview``, ``array.array``, a numpy array (its raw
            bytes are used), or a sequence of ints in 0..255 (copied).

    Returns:
        ``(n,)`` uint8 array, possibly sharing memory with ``data`` (and then read-only if
        ``data`` is).

    Raises:
        DecodeError: ``data`` is of another type, or a sequence with values outside 0..255.
    """
    if isinstance(data, np.ndarray):
        if data.dtype.hasobject:
            raise DecodeError('image data is an object array; expected bytes')
        flat = np.ascontiguousarray(data).reshape(-1)
        return flat if flat.dtype == np.uint8 else flat.view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        view = memoryview(data)
        try:
            return np.frombuffer(view.cast('B'), np.uint8)
        except (TypeError, ValueError):  # not C-contiguous, or 0-d: copy
            return np.frombuffer(view.tobytes(), np.uint8)
    if isinstance(data, (list, tuple)):
        try:
            values = np.asarray(data, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError, OverflowError) as err:
            raise DecodeError(f'image data is a sequence of non-integers: {err}') from err
        if values.size and (values.min() < 0 or values.max() > 255):
            raise DecodeError('image data holds values outside 0..255')
        return values.astype(np.uint8)
    raise DecodeError(f'image data of type {type(data).__name__} is not a byte buffer; '
                      'expected bytes, array.array or a uint8 numpy array')


def _int_field(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DecodeError(f'image field {name}={value!r} is not an integer')
    if value < 0:
        raise DecodeError(f'image field {name}={value} is negative')
    return int(value)


def _encoding_name(encoding: Any) -> str:
    if not isinstance(encoding, str):
        raise DecodeError(f'image encoding {encoding!r} is not a string')
    return encoding.strip().lower()


@dataclass(frozen=True)
class RawLayout:
    """How the bytes of a raw image message are laid out.

    Attributes:
        kind: colour layout (``'rgb'``, ``'bgr'``, ``'mono'``, ``'bayer_rggb'``, ``'uyvy'``,
            ``'nv12'``, ...).
        dtype: pixel component type with the message's byte order (``uint8``, ``>u2``, ...).
        rows: rows in the buffer (``height``, or ``height * 3 / 2`` for NV12/NV21).
        row_items: components per row (``width * channels``).
        channels: components per pixel in the buffer.
        step: bytes from one row to the next.
        height: image height in pixels.
        width: image width in pixels.
    """

    kind: str
    dtype: np.dtype
    rows: int
    row_items: int
    channels: int
    step: int
    height: int
    width: int

    @property
    def row_bytes(self) -> int:
        """Bytes of pixel data in one row (without padding)."""
        return self.row_items * self.dtype.itemsize

    @property
    def min_size(self) -> int:
        """Fewest bytes of data that hold the image (the last row may lack its padding)."""
        return self.step * (self.rows - 1) + self.row_bytes


def raw_layout(height: Any, width: Any, encoding: Any, step: Any, is_bigendian: Any = 0,
               data_size: int | None = None) -> RawLayout:
    """Check the fields of a raw image message and work out its layout, reading no pixels.

    Args:
        height: rows in pixels.
        width: columns in pixels.
        encoding: ROS encoding name (see :data:`RAW_ENCODINGS`).
        step: bytes per row, padding included.
        is_bigendian: whether multi-byte components are big-endian.
        data_size: length of ``data`` in bytes, checked when given.

    Raises:
        DecodeError: unknown or refused encoding, zero size, odd size where the encoding needs
            an even one, ``step`` smaller than a row, or too little data.
    """
    name = _encoding_name(encoding)
    spec = RAW_ENCODINGS.get(name)
    if spec is None:
        if _GENERIC.match(name):
            raise DecodeError(
                f'image encoding {encoding!r} is depth or other non-colour data, not a camera '
                'image; place recognition needs a colour or mono camera topic (rgb8, bgr8, '
                'mono8, bayer_*, yuv422, nv12, ...)')
        supported = ', '.join(sorted(RAW_ENCODINGS))
        raise DecodeError(f'unknown image encoding {encoding!r}; supported: {supported}')
    base, channels, kind = spec
    h = _int_field('height', height)
    w = _int_field('width', width)
    s = _int_field('step', step)
    if h == 0 or w == 0:
        raise DecodeError(f'image has zero size ({w}x{h})')
    if kind in ('uyvy', 'yuy2') and w % 2:
        raise DecodeError(f'{name} image has odd width {w}; YUV 4:2:2 needs an even width')
    rows = h
    if kind in ('nv12', 'nv21'):
        if w % 2 or h % 2:
            raise DecodeError(f'{name} image is {w}x{h}; NV12/NV21 need even width and height')
        rows = h * 3 // 2
    dtype = np.dtype(('>' if is_bigendian else '<') + base)
    layout = RawLayout(kind, dtype, rows, w * channels, channels, s, h, w)
    if s < layout.row_bytes:
        raise DecodeError(f'image step {s} is smaller than a row of {w} {name} pixels '
                          f'({layout.row_bytes} bytes); the message is malformed')
    if data_size is not None and data_size < layout.min_size:
        raise DecodeError(f'image data has {data_size} bytes; a {w}x{h} {name} image with step '
                          f'{s} needs at least {layout.min_size}')
    return layout


def _rows(buf: np.ndarray, layout: RawLayout) -> np.ndarray:
    """The ``(rows, row_items)`` pixel components of the buffer, without the row padding.

    8-bit data is returned as a view with row stride ``step`` (no copy; OpenCV reads such
    views directly). For 16-bit colour or mono data the view holds only the high byte of each
    component (``v >> 8``, in either byte order), again without a copy. Bayer 16-bit data is
    demosaiced at full depth, so it is copied into native byte order.
    """
    step = layout.step if layout.rows > 1 else layout.row_bytes
    dtype, offset, item = layout.dtype, 0, layout.dtype.itemsize
    shape = (layout.rows, layout.row_items)
    if item == 2 and not layout.kind.startswith('bayer'):
        dtype, offset = np.dtype(np.uint8), (0 if dtype.str[0] == '>' else 1)
    items = np.ndarray(shape=shape, dtype=dtype, buffer=buf, offset=offset,
                       strides=(step, item))
    if dtype.itemsize > 1:
        items = items.astype(dtype.newbyteorder('='), order='C')
    return items


def _to_8bit(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    return (arr >> 8).astype(np.uint8)


def _convert(items: np.ndarray, layout: RawLayout) -> np.ndarray:
    h, w, kind = layout.height, layout.width, layout.kind
    if kind in _BAYER_CODES or kind in _YUV_CODES:
        cv2 = _cv2()
        if kind in _BAYER_CODES:
            src, code = items, getattr(cv2, _BAYER_CODES[kind])
        elif kind in ('uyvy', 'yuy2'):
            src, code = items.reshape(h, w, 2), getattr(cv2, _YUV_CODES[kind])
        else:
            src, code = items, getattr(cv2, _YUV_CODES[kind])
        try:
            out = cv2.cvtColor(src, code)
        except cv2.error as err:
            raise DecodeError(f'OpenCV cannot convert this {kind} image: {err}') from err
        return _to_8bit(out)
    return _to_rgb(_to_8bit(items.reshape(h, w, layout.channels)), kind in ('bgr', 'bgra'))


def decode_image_fields(height: Any, width: Any, encoding: Any, step: Any, data: Any,
                        is_bigendian: Any = 0) -> np.ndarray:
    """Decode the fields of a ``sensor_msgs/Image`` into an RGB array.

    Args:
        height: rows in pixels.
        width: columns in pixels.
        encoding: ROS encoding name (see the module docstring).
        step: bytes per row, padding included (any amount of padding).
        data: the pixel bytes (see :func:`as_byte_array`).
        is_bigendian: whether 16-bit components are big-endian.

    Returns:
        ``(height, width, 3)`` uint8 RGB, C-contiguous. For tightly packed ``rgb8`` it is a view
        of ``data`` (read-only when ``data`` is); copy it before writing to it.

    Raises:
        DecodeError: the message is malformed or its encoding is unsupported.
    """
    buf = as_byte_array(data)
    layout = raw_layout(height, width, encoding, step, is_bigendian, buf.size)
    return _convert(_rows(buf, layout), layout)


def decode_image(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` (any object with its fields) into an RGB array.

    Returns:
        ``(height, width, 3)`` uint8 RGB; see :func:`decode_image_fields`.

    Raises:
        DecodeError: the message is malformed or its encoding is unsupported.
    """
    try:
        fields = (msg.height, msg.width, msg.encoding, msg.step, msg.data,
                  getattr(msg, 'is_bigendian', 0))
    except AttributeError as err:
        raise DecodeError(f'not a sensor_msgs/Image: {err}') from err
    return decode_image_fields(*fields)


def check_image(msg: Any) -> None:
    """Check a ``sensor_msgs/Image``'s fields and data size, reading no pixels.

    A message that passes is decoded by :func:`decode_image` (OpenCV permitting).

    Raises:
        DecodeError: the message is malformed or its encoding is unsupported.
    """
    try:
        fields = (msg.height, msg.width, msg.encoding, msg.step,
                  getattr(msg, 'is_bigendian', 0))
        data = msg.data
    except AttributeError as err:
        raise DecodeError(f'not a sensor_msgs/Image: {err}') from err
    raw_layout(*fields, data_size=as_byte_array(data).size)


@dataclass(frozen=True)
class CompressedFormat:
    """A parsed ``CompressedImage.format``.

    Attributes:
        codec: ``'jpeg'``, ``'png'``, ... or ``''`` when the format does not say.
        source_encoding: encoding of the image before compression (``''`` when not given).
        target: layout the compressor was given (``'bgr8'``, ``'mono8'``, ...), or ``''``.
    """

    codec: str
    source_encoding: str
    target: str

    @property
    def rgb_order(self) -> bool:
        """Whether the decoded channels are already RGB (the compressor was given RGB data)."""
        return self.target in _RGB_TARGETS


def parse_compressed_format(fmt: Any) -> CompressedFormat:
    """Parse ``CompressedImage.format``.

    Understands the bare codec (``'jpeg'``, ``'png'``) and image_transport's
    ``'<encoding>; <codec> compressed <target>'``.

    Raises:
        DecodeError: ``fmt`` is not a string, or names ``compressedDepth``.
    """
    if not isinstance(fmt, str):
        raise DecodeError(f'compressed image format {fmt!r} is not a string')
    text = fmt.strip().lower()
    if 'compresseddepth' in text:
        raise DecodeError(f'compressed image format {fmt!r} is a compressedDepth (depth) image, '
                          'not a camera image; subscribe to the colour topic')
    source, _, rest = text.rpartition(';') if ';' in text else ('', '', text)
    source = source.strip()
    words = rest.replace(',', ' ').split()
    codec = next((w for w in words if w in _CODECS), '')
    target = ''
    if 'compressed' in words:
        after = words[words.index('compressed') + 1:]
        target = after[0] if after else ''
    return CompressedFormat('jpeg' if codec == 'jpg' else codec, source, target)


def decode_compressed_fields(fmt: Any, data: Any) -> np.ndarray:
    """Decode the fields of a ``sensor_msgs/CompressedImage`` into an RGB array.

    Args:
        fmt: the ``format`` field (see :func:`parse_compressed_format`).
        data: the compressed bytes (see :func:`as_byte_array`).

    Returns:
        ``(H, W, 3)`` uint8 RGB, a new array.

    Raises:
        DecodeError: empty or undecodable payload, compressedDepth, or an unsupported pixel
            type (e.g. floating point).
    """
    parsed = parse_compressed_format(fmt)
    buf = as_byte_array(data)
    if buf.size == 0:
        raise DecodeError('compressed image has no data')
    cv2 = _cv2()
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except (cv2.error, MemoryError) as err:
        raise DecodeError(f'cannot decode compressed image ({fmt!r}): {err}') from err
    if img is None or img.size == 0:
        raise DecodeError(f'cannot decode compressed image ({fmt!r}, {buf.size} bytes): the '
                          'payload is not a readable image')
    if img.dtype not in (np.uint8, np.uint16):
        raise DecodeError(f'compressed image decodes to {img.dtype} pixels; only 8- and 16-bit '
                          'images are supported')
    img = _to_8bit(img)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] not in (1, 3, 4):
        raise DecodeError(f'compressed image decodes to {img.shape[2]} channels; expected 1, '
                          '3 or 4')
    return _to_rgb(img, not parsed.rgb_order)


def decode_compressed(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (any object with its fields) into RGB.

    Returns:
        ``(H, W, 3)`` uint8 RGB.

    Raises:
        DecodeError: see :func:`decode_compressed_fields`.
    """
    try:
        fields = (msg.format, msg.data)
    except AttributeError as err:
        raise DecodeError(f'not a sensor_msgs/CompressedImage: {err}') from err
    return decode_compressed_fields(*fields)


def check_compressed(msg: Any) -> None:
    """Cheap checks of a ``sensor_msgs/CompressedImage``: format and a non-empty payload.

    A payload that passes may still fail to decode.

    Raises:
        DecodeError: no format/data attribute, compressedDepth, or empty data.
    """
    try:
        fmt, data = msg.format, msg.data
    except AttributeError as err:
        raise DecodeError(f'not a sensor_msgs/CompressedImage: {err}') from err
    parse_compressed_format(fmt)
    if as_byte_array(data).size == 0:
        raise DecodeError('compressed image has no data')


def is_compressed(msg: Any) -> bool:
    """Whether a message looks like a ``CompressedImage`` (has ``format``, no ``encoding``)."""
    return hasattr(msg, 'format') and not hasattr(msg, 'encoding')


def decode_any(msg: Any) -> np.ndarray:
    """Decode an ``Image`` or a ``CompressedImage``, told apart by their attributes.

    Returns:
        ``(H, W, 3)`` uint8 RGB.

    Raises:
        DecodeError: the message is neither, is malformed, or cannot be decoded.
    """
    if is_compressed(msg):
        return decode_compressed(msg)
    if hasattr(msg, 'encoding'):
        return decode_image(msg)
    raise DecodeError(f'{type(msg).__name__} is neither a sensor_msgs/Image (encoding, step, ...) '
                      'nor a sensor_msgs/CompressedImage (format, data)')
