"""Image message decoding: every encoding against hand-built layouts, padding, fuzzing."""

from __future__ import annotations

import array
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpr_seq_ros.errors import DecodeError
from vpr_seq_ros.messages import (RAW_ENCODINGS, check_image, decode_any, decode_compressed,
                                  decode_compressed_fields, decode_image, decode_image_fields,
                                  parse_compressed_format)

H, W = 6, 8


def colour_image(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """A seeded ``(h, w, 3)`` uint8 RGB image."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def smooth_image(h: int = 32, w: int = 40) -> np.ndarray:
    """Smooth RGB gradients with clearly different channels (demosaicing is exact-ish)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([200 - xs, 60 + ys, 30 + 0.5 * xs + 0.5 * ys], axis=2).astype(np.uint8)


def message(encoding: str, rows: np.ndarray, pad: int = 0, bigendian: int = 0,
            height: int | None = None, width: int | None = None) -> SimpleNamespace:
    """A sensor_msgs/Image-like object whose rows are ``rows`` (2-D bytes) plus ``pad`` bytes."""
    rows = np.ascontiguousarray(rows).view(np.uint8).reshape(rows.shape[0], -1)
    padded = np.concatenate([rows, np.full((rows.shape[0], pad), 0xAB, np.uint8)], axis=1)
    return SimpleNamespace(height=height if height is not None else rows.shape[0],
                           width=width if width is not None else W, encoding=encoding,
                           is_bigendian=bigendian, step=padded.shape[1],
                           data=padded.reshape(-1).tobytes())


# --- expectations built by hand ----------------------------------------------------------------

def raw_rows(encoding: str, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, expected RGB)`` of an image in a lossless encoding, built with numpy."""
    h, w, _ = rgb.shape
    alpha = np.full((h, w, 1), 77, np.uint8)
    grey = rgb[:, :, 1]
    table = {
        'rgb8': (rgb, rgb),
        'bgr8': (rgb[:, :, ::-1], rgb),
        'rgba8': (np.concatenate([rgb, alpha], 2), rgb),
        'bgra8': (np.concatenate([rgb[:, :, ::-1], alpha], 2), rgb),
        'mono8': (grey, np.repeat(grey[:, :, None], 3, 2)),
        '8UC1': (grey, np.repeat(grey[:, :, None], 3, 2)),
    }
    rows, expected = table[encoding]
    return np.ascontiguousarray(rows).reshape(h, -1), expected


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', '8UC1'])
@pytest.mark.parametrize('pad', [0, 1, 3, 7])
def test_lossless_8bit_with_any_padding(encoding: str, pad: int) -> None:
    rows, expected = raw_rows(encoding, colour_image())
    out = decode_image(message(encoding, rows, pad))
    assert out.dtype == np.uint8 and out.shape == (H, W, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize('pad', [1, 3, 7])
def test_last_row_may_lack_its_padding(pad: int) -> None:
    rows, expected = raw_rows('bgr8', colour_image())
    msg = message('bgr8', rows, pad)
    msg.data = msg.data[:-pad]
    np.testing.assert_array_equal(decode_image(msg), expected)


@pytest.mark.parametrize('bigendian', [0, 1])
@pytest.mark.parametrize('pad', [0, 1, 3])
def test_mono16_byte_order_and_scaling(bigendian: int, pad: int) -> None:
    values = np.random.default_rng(1).integers(0, 65536, (H, W)).astype(np.uint16)
    rows = values.astype('>u2' if bigendian else '<u2')
    out = decode_image(message('mono16', rows, pad, bigendian))
    expected = (values >> 8).astype(np.uint8)  # documented: keep the high byte
    np.testing.assert_array_equal(out, np.repeat(expected[:, :, None], 3, 2))
    assert decode_image_fields(1, 1, 'mono16', 2, b'\xff\x00', 1)[0, 0, 0] == 255
    assert decode_image_fields(1, 1, 'mono16', 2, b'\xff\x00', 0)[0, 0, 0] == 0


@pytest.mark.parametrize('bigendian', [0, 1])
def test_bgr16_and_rgba16(bigendian: int) -> None:
    values = np.random.default_rng(2).integers(0, 65536, (H, W, 3)).astype(np.uint16)
    order = '>u2' if bigendian else '<u2'
    expected = (values >> 8).astype(np.uint8)
    out = decode_image(message('bgr16', values[:, :, ::-1].astype(order).reshape(H, -1), 5,
                               bigendian))
    np.testing.assert_array_equal(out, expected)
    rgba = np.concatenate([values, np.zeros((H, W, 1), np.uint16)], 2).astype(order)
    out = decode_image(message('rgba16', rgba.reshape(H, -1), 0, bigendian))
    np.testing.assert_array_equal(out, expected)


BAYER_OFFSETS = {  # position of R and B in the top-left 2x2 block: (row, col)
    'rggb': ((0, 0), (1, 1)),
    'bggr': ((1, 1), (0, 0)),
    'gbrg': ((1, 0), (0, 1)),
    'grbg': ((0, 1), (1, 0)),
}


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an RGB image through a Bayer colour filter: ``(h, w)`` raw values."""
    (ry, rx), (by, bx) = BAYER_OFFSETS[pattern]
    raw = rgb[:, :, 1].copy()
    raw[ry::2, rx::2] = rgb[ry::2, rx::2, 0]
    raw[by::2, bx::2] = rgb[by::2, bx::2, 2]
    return raw


@pytest.mark.parametrize('pattern', sorted(BAYER_OFFSETS))
@pytest.mark.parametrize('pad', [0, 3])
def test_bayer8_demosaics_with_the_shifted_codes(pattern: str, pad: int) -> None:
    rgb = smooth_image()
    h, w, _ = rgb.shape
    out = decode_image(message(f'bayer_{pattern}8', mosaic(rgb, pattern), pad, width=w))
    assert out.shape == (h, w, 3)
    inner = (slice(2, -2), slice(2, -2))
    err = np.abs(out[inner].astype(int) - rgb[inner].astype(int))
    assert err.mean() < 2 and err.max() <= 8, (pattern, err.mean(), err.max())


def test_bayer16_big_endian() -> None:
    rgb = smooth_image()
    raw16 = mosaic(rgb, 'grbg').astype(np.uint16) * 257  # 8 -> 16 bit, v * 257 >> 8 == v
    out = decode_image(message('bayer_grbg16', raw16.astype('>u2'), 1, 1, width=rgb.shape[1]))
    inner = (slice(2, -2), slice(2, -2))
    assert np.abs(out[inner].astype(int) - rgb[inner].astype(int)).max() <= 8


def bt601_yuv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Limited-range BT.601 Y, U, V (what OpenCV's YUV 4:2:2 / 4:2:0 conversions invert)."""
    r, g, b = (rgb[:, :, i].astype(np.float64) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    return tuple(np.clip(np.round(c), 0, 255).astype(np.uint8) for c in (y, u, v))


def blocky(bh: int, bw: int, h: int = H, w: int = W) -> np.ndarray:
    """An image constant over ``bh x bw`` blocks (so chroma subsampling loses nothing)."""
    small = np.random.default_rng(3).integers(30, 226, (h // bh, w // bw, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, bh, 0), bw, 1)


@pytest.mark.parametrize('encoding', ['uyvy', 'yuv422', 'yuyv', 'yuv422_yuy2'])
@pytest.mark.parametrize('pad', [0, 1, 7])
def test_yuv422(encoding: str, pad: int) -> None:
    rgb = blocky(1, 2)
    y, u, v = bt601_yuv(rgb)
    packed = np.empty((H, W * 2), np.uint8)
    if encoding in ('uyvy', 'yuv422'):
        packed[:, 0::4], packed[:, 1::4] = u[:, 0::2], y[:, 0::2]
        packed[:, 2::4], packed[:, 3::4] = v[:, 0::2], y[:, 1::2]
    else:
        packed[:, 0::4], packed[:, 1::4] = y[:, 0::2], u[:, 0::2]
        packed[:, 2::4], packed[:, 3::4] = y[:, 1::2], v[:, 0::2]
    out = decode_image(message(encoding, packed, pad))
    assert np.abs(out.astype(int) - rgb.astype(int)).max() <= 3


@pytest.mark.parametrize('encoding', ['nv12', 'nv21'])
@pytest.mark.parametrize('pad', [0, 3])
def test_nv12_nv21_use_a_height_times_three_halves_buffer(encoding: str, pad: int) -> None:
    rgb = blocky(2, 2)
    y, u, v = bt601_yuv(rgb)
    chroma = np.empty((H // 2, W), np.uint8)
    first, second = (u, v) if encoding == 'nv12' else (v, u)
    chroma[:, 0::2], chroma[:, 1::2] = first[0::2, 0::2], second[0::2, 0::2]
    out = decode_image(message(encoding, np.concatenate([y, chroma]), pad, height=H))
    assert out.shape == (H, W, 3)
    assert np.abs(out.astype(int) - rgb.astype(int)).max() <= 3


@pytest.mark.parametrize('kind', ['bytes', 'bytearray', 'memoryview', 'array', 'numpy',
                                  'strided', 'list'])
def test_data_buffer_types(kind: str) -> None:
    rgb = colour_image()
    flat = rgb.reshape(-1)
    data = {
        'bytes': flat.tobytes(),
        'bytearray': bytearray(flat.tobytes()),
        'memoryview': memoryview(flat.tobytes()),
        'array': array.array('B', flat.tobytes()),  # what rclpy gives
        'numpy': flat,                              # what rosbags gives
        'strided': np.repeat(flat, 2)[::2],         # a non-contiguous view
        'list': flat.tolist(),
    }[kind]
    out = decode_image_fields(H, W, 'rgb8', W * 3, data)
    np.testing.assert_array_equal(out, rgb)


def test_tightly_packed_rgb8_is_not_copied() -> None:
    flat = colour_image().reshape(-1)
    assert np.shares_memory(decode_image_fields(H, W, 'rgb8', W * 3, flat), flat)


@pytest.mark.parametrize('fields, match', [
    ((H, W, '16UC1', W * 2, bytes(H * W * 2)), 'depth or other non-colour'),
    ((H, W, '32FC1', W * 4, bytes(H * W * 4)), 'depth or other non-colour'),
    ((H, W, '8UC3', W * 3, bytes(H * W * 3)), 'non-colour'),
    ((H, W, 'jpeg', W * 3, bytes(H * W * 3)), 'unknown image encoding'),
    ((H, W, None, W * 3, bytes(H * W * 3)), 'not a string'),
    ((0, W, 'rgb8', W * 3, b''), 'zero size'),
    ((H, 0, 'rgb8', 0, b''), 'zero size'),
    ((H, W, 'rgb8', W * 3 - 1, bytes(H * W * 3)), 'step .* smaller than a row'),
    ((H, W, 'rgb8', W * 3, bytes(H * W * 3 - 1)), 'needs at least'),
    ((H, W, 'mono16', W * 2, bytes(H * W)), 'needs at least'),
    ((H, 7, 'yuv422', 14, bytes(H * 14)), 'odd width'),
    ((3, W, 'nv12', W, bytes(W * 5)), 'even width and height'),
    ((H, W, 'rgb8', -1, b''), 'negative'),
    ((H, 2.5, 'rgb8', 9, b''), 'not an integer'),
    ((1, 1, 'rgb8', 3, object()), 'not a byte buffer'),
    ((1, 1, 'rgb8', 3, [1, 2, 300]), 'outside 0..255'),
])
def test_malformed_images_raise_decode_error(fields: tuple, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode_image_fields(*fields)


def test_one_row_needs_no_step_padding_in_memory() -> None:
    assert decode_image_fields(1, 2, 'rgb8', 2 ** 70, bytes(range(6))).tolist() == \
        [[[0, 1, 2], [3, 4, 5]]]


def test_not_an_image_message() -> None:
    with pytest.raises(DecodeError, match='neither'):
        decode_any(SimpleNamespace(data=b''))
    with pytest.raises(DecodeError, match='not a sensor_msgs/Image'):
        decode_image(SimpleNamespace(encoding='rgb8'))


def test_cdr_round_trip_through_rosbags() -> None:
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    image_t, header_t, time_t = (ts.types[n] for n in (
        'sensor_msgs/msg/Image', 'std_msgs/msg/Header', 'builtin_interfaces/msg/Time'))
    rgb = colour_image()
    rows, _ = raw_rows('bgr8', rgb)
    padded = np.concatenate([rows, np.zeros((H, 5), np.uint8)], 1)
    msg = image_t(header=header_t(stamp=time_t(sec=1, nanosec=2), frame_id='cam'), height=H,
                  width=W, encoding='bgr8', is_bigendian=0, step=W * 3 + 5,
                  data=padded.reshape(-1))
    back = ts.deserialize_cdr(ts.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)
    np.testing.assert_array_equal(decode_any(back), rgb)

    values = np.random.default_rng(4).integers(0, 65536, (H, W)).astype('>u2')
    msg16 = image_t(header=msg.header, height=H, width=W, encoding='mono16', is_bigendian=1,
                    step=W * 2, data=values.view(np.uint8).reshape(-1))
    back = ts.deserialize_cdr(ts.serialize_cdr(msg16, msg16.__msgtype__), msg16.__msgtype__)
    np.testing.assert_array_equal(decode_image(back)[:, :, 0],
                                  (values.astype(np.uint16) >> 8).astype(np.uint8))


# --- compressed --------------------------------------------------------------------------------

def encoded(ext: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize('fmt', ['jpeg', 'rgb8; jpeg compressed bgr8',
                                 'bgr8; jpeg compressed bgr8', ''])
def test_compressed_jpeg(fmt: str) -> None:
    rgb = smooth_image()
    msg = SimpleNamespace(format=fmt, data=np.frombuffer(encoded('.jpg', rgb[:, :, ::-1]),
                                                          np.uint8))
    out = decode_any(msg)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 3


def test_compressed_png_variants_are_exact() -> None:
    rgb = colour_image()
    grey = rgb[:, :, 0]
    np.testing.assert_array_equal(
        decode_compressed_fields('bgr8; png compressed', encoded('.png', rgb[:, :, ::-1])), rgb)
    np.testing.assert_array_equal(
        decode_compressed_fields('png', encoded('.png', grey)), np.repeat(grey[:, :, None], 3, 2))
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((H, W, 1), 9, np.uint8)], 2)
    np.testing.assert_array_equal(decode_compressed_fields('bgra8; png compressed bgra8',
                                                           encoded('.png', bgra)), rgb)
    deep = np.random.default_rng(5).integers(0, 65536, (H, W)).astype(np.uint16)
    np.testing.assert_array_equal(
        decode_compressed_fields('mono16; png compressed mono16', encoded('.png', deep))[:, :, 0],
        (deep >> 8).astype(np.uint8))
    # the compressor was handed RGB data: the decoded channels are already RGB
    np.testing.assert_array_equal(
        decode_compressed_fields('rgb8; png compressed rgb8', encoded('.png', rgb)), rgb)


@pytest.mark.parametrize('fmt, data, match', [
    ('16UC1; compressedDepth png', b'\x00' * 12 + b'\x89PNG', 'compressedDepth'),
    ('jpeg', b'', 'no data'),
    ('jpeg', b'\xff\xd8\xff\xe0 not really a jpeg', 'not a readable image'),
    (None, b'\xff\xd8', 'not a string'),
])
def test_bad_compressed_images(fmt: object, data: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode_compressed(SimpleNamespace(format=fmt, data=data))


def test_parse_compressed_format() -> None:
    parsed = parse_compressed_format('rgb8; jpeg compressed bgr8')
    assert (parsed.codec, parsed.source_encoding, parsed.target) == ('jpeg', 'rgb8', 'bgr8')
    assert not parsed.rgb_order
    assert parse_compressed_format('PNG').codec == 'png'
    assert parse_compressed_format('bgr8; png compressed ').target == ''
    assert parse_compressed_format('rgb8; jpeg compressed rgb8').rgb_order


# --- fuzzing -----------------------------------------------------------------------------------

ENCODINGS = sorted(RAW_ENCODINGS) + ['16UC1', '32FC1', '8UC3', 'bogus', '', 'RGB8']
FUZZ = settings(max_examples=250, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def assert_decodes_or_refuses(msg: SimpleNamespace) -> None:
    try:
        out = decode_any(msg)
    except DecodeError:
        return
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3
    assert out.shape[2] == 3
    if hasattr(msg, 'encoding'):
        assert out.shape[:2] == (msg.height, msg.width)


@FUZZ
@given(st.integers(-2, 9), st.integers(-2, 9), st.sampled_from(ENCODINGS),
       st.one_of(st.integers(-3, 80), st.integers(0, 2 ** 70)), st.integers(0, 2),
       st.binary(max_size=400))
def test_fuzz_raw_fields(height: int, width: int, encoding: str, step: int, bigendian: int,
                         data: bytes) -> None:
    assert_decodes_or_refuses(SimpleNamespace(height=height, width=width, encoding=encoding,
                                              step=step, is_bigendian=bigendian, data=data))


@FUZZ
@given(st.integers(1, 8), st.integers(1, 8), st.sampled_from(sorted(RAW_ENCODINGS)),
       st.integers(0, 9), st.integers(-40, 8), st.booleans(), st.data())
def test_fuzz_nearly_valid_messages(height: int, width: int, encoding: str, pad: int,
                                    size_delta: int, bigendian: bool, data: st.DataObject
                                    ) -> None:
    base, channels, kind = RAW_ENCODINGS[encoding]
    rows = height * 3 // 2 if kind.startswith('nv') else height
    step = width * channels * np.dtype(base).itemsize + pad
    size = max(0, rows * step + size_delta)
    payload = data.draw(st.binary(min_size=size, max_size=size))
    msg = SimpleNamespace(height=height, width=width, encoding=encoding, step=step,
                          is_bigendian=bigendian, data=payload)
    try:
        check_image(msg)
    except DecodeError:
        with pytest.raises(DecodeError):
            decode_image(msg)
        return
    out = decode_image(msg)  # what passes the cheap check must decode
    assert out.shape == (height, width, 3) and out.dtype == np.uint8


JPEG = encoded('.jpg', colour_image(16, 16))
PNG = encoded('.png', colour_image(16, 16))


@FUZZ
@given(st.sampled_from(['jpeg', 'png', 'rgb8; jpeg compressed bgr8', '', 'x; y; z',
                        '16UC1; compressedDepth', 'rgb8; png compressed rgb8']),
       st.sampled_from([b'', JPEG[:20], PNG[:30], JPEG, PNG]), st.binary(max_size=200),
       st.integers(0, 700), st.booleans())
def test_fuzz_compressed(fmt: str, prefix: bytes, tail: bytes, cut: int, mutate: bool) -> None:
    payload = bytearray(prefix + tail)
    if mutate and payload:
        payload[cut % len(payload)] ^= 0xFF
    else:
        payload = payload[:cut] if cut < len(payload) else payload
    assert_decodes_or_refuses(SimpleNamespace(format=fmt, data=bytes(payload)))
