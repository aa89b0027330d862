"""A deterministic, procedural route seen under two conditions, for the demo.

The world is a street: a vehicle drives along a gently curving road with a camera looking out of
its left side at a row of buildings. The street is "unrolled": the building facades form one long
textured strip parallel to the road, at a fixed distance from the reference camera path, above a
ground plane (road, kerb, pavement), with the sky behind. The camera is a pinhole, so nearby
ground moves faster than the facade and views change smoothly with the arc length ``s``.

The facades are built from a small palette of building modules (brick house, glass office, shop,
warehouse, park, town house, concrete wall). All modules of a type and width share their layout
and texture, with only small per-instance variations (colour, height, tree positions), so single
views are often ambiguous (perceptual aliasing). The order of the modules along the street is
random, but a pair of neighbouring types is reused only when unavoidable and a run of three types
never, so a short sequence of views, which sees more of the street than one view, identifies the
place.

Two runs are written:

* ``reference``: daylight, a clean camera, one frame every ``reference_spacing_m`` metres.
* ``query``: dusk (darker, colour cast, gamma, dusk sky, some lit windows), blur, sensor noise and
  a little camera shake, parked cars and pedestrians that hide part of some frames, a camera
  shifted sideways, raised and turned slightly, and a different speed (``query_speed_factor``
  times the reference spacing per frame).
  It starts a few metres after the reference start and ends before the reference end, so every
  query frame has a true match.

Both runs share one metric world frame, so ground truth by radius works on the ``frames.csv``
poses. Everything is a deterministic function of :class:`RouteSpec` (including ``seed``).
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

_LOG = logging.getLogger(__name__)

# Texture resolution and the vertical extent of the facade strip.
_PPM = 16                      # texture pixels per metre (facade and ground strips)
_STRIP_TOP_M = 14.0            # height of the top row of the facade strip
_STRIP_ROWS = int(_STRIP_TOP_M * _PPM)
_GROUND_FAR_M = 14.0           # the ground strip spans 0 .. this distance from the camera path
_MARGIN_M = 30.0               # the world extends this far beyond both ends of the route

# Street layout, as distances from the reference camera path towards the facades.
_FACADE_DIST_M = 12.0
_KERB_M = 6.3
_PAVEMENT_M = 6.5
_CAR_DIST_M = 4.6              # parked cars (query run only)
_PEDESTRIAN_DIST_M = (8.0, 10.5)

# Camera.
_HFOV_RAD = math.radians(42.0)
_HORIZON_ROW_FRACTION = 0.66   # principal point below the image centre: camera pitched up
_CAM_HEIGHT_M = 1.6

# Query run: viewpoint and timing.
_QUERY_START_M = 4.0
_QUERY_END_MARGIN_M = 4.0
_QUERY_LATERAL_M = 0.6         # towards the facades
_QUERY_HEIGHT_M = 0.15         # above the reference camera
_QUERY_YAW_RAD = math.radians(3.0)
_QUERY_SHAKE_RAD = math.radians(0.25)   # per-frame camera shake (yaw and pitch, std)

# Stamps (integer nanoseconds): the query run is recorded later the same day.
_REFERENCE_START_NS = 1_700_000_000 * 10**9
_QUERY_START_NS = _REFERENCE_START_NS + 9 * 3600 * 10**9

# Dusk appearance.
_DUSK_GAIN = 0.6
_DUSK_CAST = np.array([1.0, 0.82, 0.9], dtype=np.float32)
_DUSK_GAMMA = 1.15
_DUSK_LIT_FRACTION = 0.1
_DUSK_NOISE_SIGMA = 0.03
_DUSK_BLUR_RADIUS = 1.0

_DAY_SKY = ((0.80, 0.86, 0.92), (0.42, 0.60, 0.86))   # (horizon, zenith)
_DUSK_SKY = ((0.78, 0.48, 0.32), (0.10, 0.12, 0.28))


@dataclass(frozen=True)
class RouteSpec:
    """What :func:`generate_route` writes.

    Attributes:
        length_m: route length (arc length of the reference run) in metres.
        reference_spacing_m: distance between consecutive reference frames.
        query_speed_factor: the query run moves this many reference spacings per frame.
        image_width: image width in pixels.
        image_height: image height in pixels.
        rate_hz: frame rate; frame ``i`` has ``stamp_ns = start_ns + round(i * 1e9 / rate_hz)``.
        seed: seed of the world, the route shape, the occluders and the sensor noise.
    """

    length_m: float = 400.0
    reference_spacing_m: float = 1.0
    query_speed_factor: float = 1.13
    image_width: int = 160
    image_height: int = 120
    rate_hz: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ('length_m', 'reference_spacing_m', 'query_speed_factor', 'rate_hz'):
            if not getattr(self, name) > 0:
                raise ValueError(f'RouteSpec.{name} must be > 0, got {getattr(self, name)!r}')
        if self.image_width < 16 or self.image_height < 16:
            raise ValueError('RouteSpec image size must be at least 16 x 16 pixels')
        if self.length_m < 4 * self.reference_spacing_m:
            raise ValueError('RouteSpec.length_m must be at least 4 reference spacings')


def generate_route(out_dir: Path, spec: RouteSpec = RouteSpec()) -> tuple[Path, Path]:
    """Write ``<out_dir>/reference`` and ``<out_dir>/query`` image folders.

    Each folder holds ``frame_00000.png``, ``frame_00001.png``, ... (RGB, name order = frame
    order) and ``frames.csv`` with the columns ``name,stamp_ns,x,y,z,yaw`` (metres in a world
    frame shared by both runs, ``z = 0``, yaw in radians: the heading of the camera rig, i.e. the
    direction of travel plus the query rig's small yaw offset; the camera looks 90 degrees to the
    left of it). ``frame_*.png`` files already in the folders are replaced; other files are left
    alone.

    Args:
        out_dir: directory to write into (created if missing).
        spec: the route and images to generate.

    Returns:
        The paths of the reference and the query folder.
    """
    began = time.perf_counter()
    out_dir = Path(out_dir)
    world = _World(spec)
    ref_s = np.arange(int(math.floor(spec.length_m / spec.reference_spacing_m + 1e-9)) + 1)
    ref_s = ref_s * spec.reference_spacing_m
    start = min(_QUERY_START_M, 0.1 * spec.length_m)
    stop = spec.length_m - min(_QUERY_END_MARGIN_M, 0.1 * spec.length_m)
    step = spec.reference_spacing_m * spec.query_speed_factor
    query_s = start + np.arange(int(math.floor((stop - start) / step + 1e-9)) + 1) * step

    ref_dir = out_dir / 'reference'
    query_dir = out_dir / 'query'
    _write_run(ref_dir, ref_s, world.camera(query=False), _REFERENCE_START_NS, spec)
    _write_run(query_dir, query_s, world.camera(query=True), _QUERY_START_NS, spec)
    _LOG.info('demo route: %d reference and %d query frames in %s (%.1f s)',
              len(ref_s), len(query_s), out_dir, time.perf_counter() - began)
    return ref_dir, query_dir


# --------------------------------------------------------------------------------------------
# Writing runs


def _write_run(folder: Path, s: np.ndarray, camera: _Camera, start_ns: int,
               spec: RouteSpec) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob('frame_*.png'):
        stale.unlink()
    rows = []
    for index, s_i in enumerate(s):
        image = camera.render(float(s_i), index)
        name = f'frame_{index:05d}.png'
        Image.fromarray(image).save(folder / name, compress_level=1)
        x, y, yaw = camera.pose(float(s_i))
        stamp = start_ns + int(round(index * 1e9 / spec.rate_hz))
        rows.append((name, stamp, f'{x:.4f}', f'{y:.4f}', '0.0', f'{yaw:.6f}'))
    with open(folder / 'frames.csv', 'w', newline='', encoding='utf-8') as handle:
        writer = csv.writer(handle, lineterminator='\n')
        writer.writerow(('name', 'stamp_ns', 'x', 'y', 'z', 'yaw'))
        writer.writerows(rows)


# --------------------------------------------------------------------------------------------
# Random streams and noise


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent generator per (seed, stream) so that no stream depends on another."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) % (1 << 64), *stream]))


def _value_noise(rng: np.random.Generator, rows: int, cols: int, cell: float) -> np.ndarray:
    """Smooth noise in about [-1, 1]: a random grid every ``cell`` pixels, bicubic upsampled."""
    cell = max(float(cell), 1.0)
    grid_r = int(math.ceil(rows / cell)) + 2
    grid_c = int(math.ceil(cols / cell)) + 2
    grid = rng.uniform(-1.0, 1.0, (grid_r, grid_c)).astype(np.float32)
    size = (int(round(grid_c * cell)), int(round(grid_r * cell)))
    up = np.asarray(Image.fromarray(grid).resize(size, Image.Resampling.BICUBIC))
    return up[:rows, :cols]


# --------------------------------------------------------------------------------------------
# Facade modules


class _Canvas:
    """One building module being painted, in metric coordinates (x along the street, h up)."""

    def __init__(self, width_m: float, rng: np.random.Generator, var: np.random.Generator,
                 ids: Iterator[int]) -> None:
        self.cols = max(2, int(round(width_m * _PPM)))
        self.width_m = self.cols / _PPM
        self.rgb = np.zeros((_STRIP_ROWS, self.cols, 3), dtype=np.float32)
        self.alpha = np.zeros((_STRIP_ROWS, self.cols), dtype=np.float32)
        self.win = np.zeros((_STRIP_ROWS, self.cols), dtype=np.int32)
        self.rng = rng      # textures: shared by all modules of a type and width
        self.var = var      # small per-instance variations
        self._ids = ids
        # Pixel-centre heights of the rows and positions of the columns.
        self.h = (_STRIP_TOP_M - (np.arange(_STRIP_ROWS, dtype=np.float32) + 0.5) / _PPM)
        self.x = (np.arange(self.cols, dtype=np.float32) + 0.5) / _PPM

    def box(self, x0: float, x1: float, h0: float, h1: float) -> tuple[slice, slice]:
        """Row and column slices of the metric box ``[x0, x1] x [h0, h1]``."""
        r0 = int(round((_STRIP_TOP_M - h1) * _PPM))
        r1 = int(round((_STRIP_TOP_M - h0) * _PPM))
        c0 = int(round(x0 * _PPM))
        c1 = int(round(x1 * _PPM))
        clip_r = (min(max(r0, 0), _STRIP_ROWS), min(max(r1, 0), _STRIP_ROWS))
        clip_c = (min(max(c0, 0), self.cols), min(max(c1, 0), self.cols))
        return slice(*clip_r), slice(*clip_c)

    def noise(self, cell_m: float, amplitude: float) -> np.ndarray:
        """Canvas-sized smooth noise of the given feature size and amplitude."""
        return amplitude * _value_noise(self.rng, _STRIP_ROWS, self.cols, cell_m * _PPM)

    def fill(self, x0: float, x1: float, h0: float, h1: float, colour: np.ndarray,
             shade: np.ndarray | None = None) -> None:
        """Paint an opaque box, optionally modulated by a canvas-sized ``shade`` (1 + shade)."""
        rs, cs = self.box(x0, x1, h0, h1)
        colour = np.asarray(colour, dtype=np.float32)
        if shade is None:
            self.rgb[rs, cs] = colour
        else:
            self.rgb[rs, cs] = colour * (1.0 + shade[rs, cs, None])
        self.alpha[rs, cs] = 1.0
        self.win[rs, cs] = 0

    def paint_mask(self, mask: np.ndarray, colour: np.ndarray,
                   shade: np.ndarray | None = None) -> None:
        """Paint the pixels of a canvas-sized boolean mask."""
        colour = np.asarray(colour, dtype=np.float32)
        value = colour if shade is None else colour * (1.0 + shade[..., None])
        self.rgb[mask] = np.broadcast_to(value, self.rgb.shape)[mask]
        self.alpha[mask] = 1.0
        self.win[mask] = 0

    def window(self, x0: float, x1: float, h0: float, h1: float, frame: np.ndarray,
               glass: np.ndarray, frame_m: float = 0.1, bars: bool = True) -> None:
        """A framed window; its glass gets a fresh window id (used for lit windows at dusk)."""
        self.fill(x0, x1, h0, h1, frame)
        rs, cs = self.box(x0 + frame_m, x1 - frame_m, h0 + frame_m, h1 - frame_m)
        rows = rs.stop - rs.start
        if rows <= 0 or cs.stop <= cs.start:
            return
        sheen = np.linspace(1.25, 0.75, rows, dtype=np.float32)[:, None, None]
        self.rgb[rs, cs] = np.asarray(glass, dtype=np.float32) * sheen
        self.win[rs, cs] = next(self._ids)
        if bars:
            mid_x = 0.5 * (x0 + x1)
            mid_h = h0 + 0.6 * (h1 - h0)
            self.fill(mid_x - 0.04, mid_x + 0.04, h0 + frame_m, h1 - frame_m, frame)
            self.fill(x0 + frame_m, x1 - frame_m, mid_h - 0.04, mid_h + 0.04, frame)


def _jitter(rng: np.random.Generator, colour: np.ndarray, amount: float = 0.04) -> np.ndarray:
    return np.clip(np.asarray(colour, np.float32) + rng.uniform(-amount, amount, 3), 0.0, 1.0)


def _window_columns(width_m: float, pitch_m: float, window_m: float) -> list[float]:
    """Left edges of evenly spaced windows across a facade."""
    count = max(1, int(width_m // pitch_m))
    margin = (width_m - count * pitch_m) / 2.0
    return [margin + i * pitch_m + (pitch_m - window_m) / 2.0 for i in range(count)]


def _brick(cv: _Canvas, style: dict[str, np.ndarray]) -> None:
    rng = cv.var
    top = 7.0 + rng.uniform(-0.1, 0.1)
    wall = _jitter(rng, style['wall'], 0.03)
    shade = cv.noise(1.5, 0.08) + cv.noise(0.3, 0.05)
    cv.fill(0.0, cv.width_m, 0.0, top, wall, shade)
    # Mortar: every 4th row, and staggered vertical joints every half metre.
    rs, cs = cv.box(0.0, cv.width_m, 0.0, top)
    rows = np.arange(rs.start, rs.stop)[:, None]
    cols = np.arange(cs.start, cs.stop)[None, :]
    course = rows // 4
    joints = (rows % 4 == 0) | (((cols + 4 * (course % 2)) % 8) == 0)
    cv.rgb[rs, cs] = np.where(joints[..., None], cv.rgb[rs, cs] * 0.78, cv.rgb[rs, cs])
    cv.fill(0.0, cv.width_m, top - 0.45, top, wall * 0.6)
    frame = np.array([0.9, 0.88, 0.8], np.float32)
    glass = style['glass']
    lefts = _window_columns(cv.width_m, 2.2, 1.2)
    door = 0 if style['door_side'][0] < 0.5 else len(lefts) - 1
    for i, left in enumerate(lefts):
        if i == door:
            cv.fill(left - 0.05, left + 1.25, 0.0, 2.3, wall * 0.5)
            cv.fill(left + 0.05, left + 1.15, 0.0, 2.2, style['door'])
        else:
            cv.window(left, left + 1.2, 0.9, 2.4, frame, glass)
        cv.window(left, left + 1.2, 3.9, 5.6, frame, glass)


def _glass(cv: _Canvas, style: dict[str, np.ndarray]) -> None:
    rng = cv.var
    top = 13.5
    panel = _jitter(rng, style['glass'], 0.03)
    cv.fill(0.0, cv.width_m, 0.0, top, style['frame'])
    pitch = 1.5
    floor = 3.4
    for level in range(4):
        h0 = 0.3 + level * floor
        for left in _window_columns(cv.width_m, pitch, pitch - 0.12):
            cv.window(left, left + pitch - 0.12, h0, h0 + floor - 0.7, style['frame'], panel,
                      frame_m=0.06, bars=False)
        cv.fill(0.0, cv.width_m, h0 + floor - 0.7, h0 + floor, style['spandrel'],
                cv.noise(0.5, 0.05))
    # Lobby: the middle bays are darker doors.
    mid = cv.width_m / 2.0
    cv.fill(mid - 1.6, mid + 1.6, 0.0, 2.6, style['frame'] * 0.7)
    cv.fill(mid - 1.5, mid + 1.5, 0.0, 2.5, panel * 0.55)
    # Reflections: a broad diagonal highlight.
    diag = (cv.x[None, :] + 0.6 * cv.h[:, None]) % 9.0
    glow = np.exp(-((diag - 4.5) / 1.2) ** 2)[..., None] * 0.18
    glass_px = (cv.win > 0)[..., None]
    cv.rgb = np.where(glass_px, np.clip(cv.rgb + glow, 0.0, 1.0), cv.rgb)


def _shop(cv: _Canvas, style: dict[str, np.ndarray]) -> None:
    rng = cv.var
    top = 6.0 + rng.uniform(-0.1, 0.1)
    wall = _jitter(rng, style['wall'], 0.03)
    cv.fill(0.0, cv.width_m, 0.0, top, wall, cv.noise(2.0, 0.06))
    cv.fill(0.0, cv.width_m, top - 0.3, top, wall * 0.7)
    # Shop window and door.
    cv.fill(0.3, cv.width_m - 0.3, 0.0, 2.7, np.array([0.2, 0.2, 0.22], np.float32))
    cv.window(0.5, cv.width_m - 1.8, 0.5, 2.55, np.array([0.25, 0.25, 0.27]), style['glass'],
              frame_m=0.08, bars=False)
    cv.fill(cv.width_m - 1.5, cv.width_m - 0.5, 0.0, 2.55, style['door'])
    # Striped awning.
    rs, cs = cv.box(0.2, cv.width_m - 0.2, 2.75, 3.35)
    stripes = ((np.arange(cs.start, cs.stop) // int(0.35 * _PPM)) % 2 == 0)[None, :, None]
    cv.rgb[rs, cs] = np.where(stripes, style['awning'], np.array([0.92, 0.92, 0.9]))
    cv.alpha[rs, cs] = 1.0
    # Sign board with a few blocky letters (the same lettering on every shop of a seed).
    cv.fill(0.6, cv.width_m - 0.6, 3.5, 4.05, style['sign'])
    for x, w in style['letters']:
        if x + w < cv.width_m - 0.8:
            cv.fill(x, x + w, 3.6, 3.95, np.array([0.95, 0.95, 0.85], np.float32))
    for left in _window_columns(cv.width_m, 2.3, 1.1):
        cv.window(left, left + 1.1, 4.35, 5.45, np.array([0.85, 0.85, 0.85]), style['glass'])


def _warehouse(cv: _Canvas, style: dict[str, np.ndarray]) -> None:
    rng = cv.var
    top = 5.5 + rng.uniform(-0.1, 0.1)
    wall = _jitter(rng, style['wall'], 0.03)
    ribs = 0.12 * np.sin(2.0 * np.pi * cv.x / 0.3)[None, :]
    cv.fill(0.0, cv.width_m, 0.0, top, wall, ribs + cv.noise(3.0, 0.06))
    cv.fill(0.0, cv.width_m, top - 0.25, top, wall * 0.55)
    door_x = float(style['door_x'][0])
    door = style['door']
    rs, cs = cv.box(door_x, door_x + 4.0, 0.0, 4.2)
    slats = 0.1 * np.sin(2.0 * np.pi * cv.h / 0.15)[rs, None, None]
    cv.fill(door_x - 0.15, door_x + 4.15, 0.0, 4.35, wall * 0.5)
    cv.rgb[rs, cs] = door * (1.0 + slats)
    for left in _window_columns(cv.width_m, 2.0, 1.2):
        if left + 1.2 < door_x - 0.2 or left > door_x + 4.2:
            cv.window(left, left + 1.2, 4.2, 4.8, wall * 0.6, style['glass'], frame_m=0.06,
                      bars=False)
    cv.fill(door_x + 5.0, door_x + 5.9, 0.0, 2.1, style['door'] * 0.7)


def _park(cv: _Canvas, style: dict[str, np.ndarray]) -> None:
    rng = cv.var
    # Trees: trunk and a noisy canopy.
    for centre in (0.28 * cv.width_m, 0.74 * cv.width_m):
        cx = centre + rng.uniform(-0.15, 0.15)
        cv.fill(cx - 0.17, cx + 0.17, 0.0, 3.0, style['trunk'], cv.noise(0.3, 0.1))
        ch = 4.3 + rng.uniform(-0.2, 0.2)
        rx = 1.9 + rng.uniform(-0.15, 0.15)
        ry = 1.7 + rng.uniform(-0.15, 0.15)
        edge = cv.noise(0.5, 0.18)
        inside = ((cv.x[None, :] - cx) / rx) ** 2 + ((cv.h[:, None] - ch) / ry) ** 2
        cv.paint_mask(inside < 1.0 + edge, _jitter(rng, style['leaves'], 0.03),
                      cv.noise(0.35, 0.25) - 0.25 * (cv.h[:, None] < ch))
    # Hedge with an uneven top.
    top = 1.1 + 0.12 * _value_noise(cv.rng, 1, cv.cols, 0.8 * _PPM)[0]
    hedge = cv.h[:, None] < top[None, :]
    cv.paint_mask(hedge, _jitter(rng, style['hedge'], 0.03), cv.noise(0.2, 0.2))


def _townhouse(cv: _Canvas, style: dict[str, np.ndarray]) -> None:
    rng = cv.var
    eave = 7.3 + rng.uniform(-0.1, 0.1)
    peak = eave + 2.0
    wall = _jitter(rng, style['wall'], 0.04)
    cv.fill(0.0, cv.width_m, 0.0, eave, wall, cv.noise(1.0, 0.05))
    # Gable roof over the width of the house.
    half = cv.width_m / 2.0
    roof_top = peak - (peak - eave) * np.abs(cv.x - half) / half
    roof = (cv.h[:, None] >= eave) & (cv.h[:, None] < roof_top[None, :])
    tiles = 0.1 * np.sin(2.0 * np.pi * cv.h / 0.25)[:, None] * np.ones((1, cv.cols))
    cv.paint_mask(roof, style['roof'], tiles.astype(np.float32))
    cv.fill(0.0, cv.width_m, eave - 0.2, eave, np.array([0.95, 0.95, 0.93], np.float32))
    frame = np.array([0.97, 0.97, 0.95], np.float32)
    cv.fill(0.6, 1.7, 0.0, 2.3, style['door'])
    cv.window(2.4, 3.7, 0.9, 2.4, frame, style['glass'])
    cv.window(4.3, cv.width_m - 0.5, 0.9, 2.4, frame, style['glass'])
    for left in (0.7, 2.6, 4.4):
        if left + 1.1 < cv.width_m - 0.3:
            cv.window(left, left + 1.1, 3.8, 5.4, frame, style['glass'])
    cv.window(half - 0.4, half + 0.4, eave + 0.3, eave + 1.1, frame, style['glass'])


def _concrete(cv: _Canvas, style: dict[str, np.ndarray]) -> None:
    rng = cv.var
    top = 4.0 + rng.uniform(-0.1, 0.1)
    wall = _jitter(rng, style['wall'], 0.03)
    stains = cv.noise(1.2, 0.1) + cv.noise(0.25, 0.04) - 0.12 * (cv.h[:, None] < 0.5)
    cv.fill(0.0, cv.width_m, 0.0, top, wall, stains)
    for x in np.arange(0.0, cv.width_m + 0.01, 3.0):
        cv.fill(x - 0.2, x + 0.2, 0.0, top + 0.15, wall * 1.15, cv.noise(0.5, 0.05))
    cv.fill(0.0, cv.width_m, top - 0.15, top + 0.05, wall * 0.75)
    gate = float(style['gate_x'][0])
    cv.fill(gate - 0.9, gate + 0.9, 0.0, 2.4, style['door'])
    rs, cs = cv.box(gate - 0.9, gate + 0.9, 0.0, 2.4)
    bars = ((np.arange(cs.start, cs.stop) % 4) < 1)[None, :, None]
    cv.rgb[rs, cs] = np.where(bars, cv.rgb[rs, cs] * 0.4, cv.rgb[rs, cs])


# name: (renderer, possible widths in metres)
_MODULES: dict[str, tuple[Callable[[_Canvas, dict[str, np.ndarray]], None], tuple[float, ...]]]
_MODULES = {
    'brick': (_brick, (6.5, 7.5)),
    'glass': (_glass, (9.0,)),
    'shop': (_shop, (5.5, 6.5)),
    'warehouse': (_warehouse, (10.0,)),
    'park': (_park, (7.0,)),
    'townhouse': (_townhouse, (5.5,)),
    'concrete': (_concrete, (6.5,)),
}


def _styles(rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    """The colours and layout choices of each module type for this seed."""

    def pick(*options: tuple[float, float, float]) -> np.ndarray:
        return _jitter(rng, options[rng.integers(len(options))], 0.04)

    glass = pick((0.32, 0.40, 0.48), (0.25, 0.30, 0.36), (0.38, 0.44, 0.46))
    letters = []
    x = 0.8
    while x < 7.0:
        w = float(rng.uniform(0.15, 0.35))
        letters.append((x, w))
        x += w + float(rng.uniform(0.08, 0.2))
    styles = {
        'brick': {'wall': pick((0.56, 0.28, 0.20), (0.48, 0.30, 0.24), (0.62, 0.36, 0.26)),
                  'glass': glass, 'door': pick((0.25, 0.15, 0.10), (0.10, 0.20, 0.15))},
        'glass': {'glass': pick((0.30, 0.45, 0.58), (0.36, 0.50, 0.50)),
                  'frame': pick((0.70, 0.72, 0.74), (0.20, 0.22, 0.24)),
                  'spandrel': pick((0.45, 0.47, 0.50), (0.60, 0.60, 0.58))},
        'shop': {'wall': pick((0.88, 0.84, 0.72), (0.80, 0.80, 0.78)), 'glass': glass,
                 'door': pick((0.35, 0.22, 0.12), (0.15, 0.15, 0.18)),
                 'awning': pick((0.70, 0.12, 0.12), (0.10, 0.40, 0.20), (0.15, 0.25, 0.60)),
                 'sign': pick((0.12, 0.18, 0.35), (0.40, 0.08, 0.10))},
        'warehouse': {'wall': pick((0.55, 0.60, 0.58), (0.62, 0.62, 0.66)),
                      'door': pick((0.78, 0.62, 0.20), (0.40, 0.42, 0.45)), 'glass': glass},
        'park': {'trunk': pick((0.30, 0.22, 0.15)), 'leaves': pick((0.20, 0.42, 0.16)),
                 'hedge': pick((0.16, 0.34, 0.14))},
        'townhouse': {'wall': pick((0.85, 0.75, 0.60), (0.70, 0.80, 0.82), (0.86, 0.70, 0.72)),
                      'roof': pick((0.42, 0.20, 0.16), (0.28, 0.28, 0.32)), 'glass': glass,
                      'door': pick((0.10, 0.25, 0.45), (0.45, 0.10, 0.12))},
        'concrete': {'wall': pick((0.66, 0.66, 0.64), (0.58, 0.57, 0.55)),
                     'door': pick((0.20, 0.30, 0.22), (0.30, 0.30, 0.32))},
    }
    # Layout choices, shared by all instances of a type.
    styles['brick']['door_side'] = rng.uniform(size=1)
    styles['shop']['letters'] = np.array(letters, dtype=np.float32)
    styles['warehouse']['door_x'] = rng.uniform(1.7, 2.3, size=1)
    styles['concrete']['gate_x'] = rng.uniform(4.2, 4.8, size=1)
    return styles


def _module_order(rng: np.random.Generator, length_m: float) -> list[tuple[str, float]]:
    """Module types and widths along the street.

    No type follows itself, an ordered pair of neighbouring types is reused only when no fresh
    pair starts at the current type, and a run of three types is never reused while avoidable.
    """
    names = list(_MODULES)
    order: list[tuple[str, float]] = []
    pairs: set[tuple[str, str]] = set()
    triples: set[tuple[str, str, str]] = set()
    total = 0.0
    while total < length_m:
        candidates = [n for n in names if not order or n != order[-1][0]]
        if order:
            prev = order[-1][0]
            candidates = [n for n in candidates if (prev, n) not in pairs] or candidates
        if len(order) >= 2:
            key = (order[-2][0], order[-1][0])
            candidates = [n for n in candidates if (*key, n) not in triples] or candidates
        name = candidates[int(rng.integers(len(candidates)))]
        if order:
            pairs.add((order[-1][0], name))
        if len(order) >= 2:
            triples.add((order[-2][0], order[-1][0], name))
        widths = _MODULES[name][1]
        width = widths[int(rng.integers(len(widths)))]
        order.append((name, width))
        total += width
    return order


def _build_facade(seed: int, s0: float, s1: float) -> tuple[np.ndarray, np.ndarray]:
    """The facade strip from arc length ``s0`` to at least ``s1``.

    Returns:
        ``(R, C, 4)`` float32 RGBA texture (alpha 0 = sky) with column 0 at ``s0``, and the
        ``(R, C)`` int32 window ids (0 = no window).
    """
    rng = _rng(seed, 1)
    styles = _styles(rng)
    ids = itertools.count(1)
    rgba_parts = []
    win_parts = []
    names = list(_MODULES)
    for index, (name, width) in enumerate(_module_order(rng, s1 - s0)):
        var = _rng(seed, 11, index)
        texture = _rng(seed, 10, names.index(name), int(round(width * 10)))
        cv = _Canvas(width, texture, var, ids)
        _MODULES[name][0](cv, styles[name])
        rgba_parts.append(np.concatenate([np.clip(cv.rgb, 0.0, 1.0), cv.alpha[..., None]], 2))
        win_parts.append(cv.win)
    return np.concatenate(rgba_parts, axis=1), np.concatenate(win_parts, axis=1)


def _build_ground(seed: int, cols: int) -> np.ndarray:
    """The ground strip: ``(R, cols, 3)``, row ``r`` at ``r / _PPM`` metres from the path."""
    rng = _rng(seed, 2)
    rows = int(_GROUND_FAR_M * _PPM)
    dist = (np.arange(rows, dtype=np.float32)[:, None] + 0.5) / _PPM
    along = (np.arange(cols, dtype=np.float32)[None, :] + 0.5) / _PPM
    grit = _value_noise(rng, rows, cols, 3.0) * 0.05
    patches = _value_noise(rng, rows, cols, 4.0 * _PPM) * 0.08
    asphalt = np.array([0.30, 0.30, 0.32], np.float32)
    kerb = np.array([0.62, 0.62, 0.60], np.float32)
    paving = np.array([0.60, 0.57, 0.52], np.float32)
    joints = (((along + 0.5 * (np.floor(dist / 0.9) % 2)) % 1.0) < 0.08) | ((dist % 0.9) < 0.07)
    ground = np.where((dist < _KERB_M)[..., None], asphalt, paving)
    ground = np.where(((dist >= _KERB_M) & (dist < _PAVEMENT_M))[..., None], kerb, ground)
    ground = ground * (1.0 + grit + patches)[..., None]
    tiles = (dist >= _PAVEMENT_M) & joints
    ground = np.where(tiles[..., None], ground * 0.72, ground)
    # A parking line on the road.
    line = (np.abs(dist - 5.2) < 0.06)
    ground = np.where(line[..., None], np.array([0.85, 0.85, 0.8], np.float32), ground)
    return np.clip(ground, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Route geometry


class _Route:
    """A gently curving path: heading is a sum of slow sinusoids of the arc length."""

    def __init__(self, seed: int, s0: float, s1: float) -> None:
        rng = _rng(seed, 3)
        amp1 = rng.uniform(0.15, 0.3)
        per1 = rng.uniform(250.0, 400.0)
        amp2 = rng.uniform(0.04, 0.08)
        per2 = rng.uniform(80.0, 150.0)
        ph1, ph2 = rng.uniform(0.0, 2.0 * np.pi, 2)
        heading0 = rng.uniform(-np.pi, np.pi)
        self.s = np.arange(s0, s1 + 0.05, 0.05)
        self.yaw = (heading0 + amp1 * np.sin(2 * np.pi * self.s / per1 + ph1)
                    + amp2 * np.sin(2 * np.pi * self.s / per2 + ph2))
        ds = np.diff(self.s)
        mid = 0.5 * (self.yaw[1:] + self.yaw[:-1])
        self.x = np.concatenate([[0.0], np.cumsum(np.cos(mid) * ds)])
        self.y = np.concatenate([[0.0], np.cumsum(np.sin(mid) * ds)])
        origin = np.searchsorted(self.s, 0.0)
        self.x -= self.x[origin]
        self.y -= self.y[origin]

    def pose(self, s: float, lateral: float) -> tuple[float, float, float]:
        """``(x, y, yaw)`` at arc length ``s``, ``lateral`` metres to the left of the path."""
        x = float(np.interp(s, self.s, self.x))
        y = float(np.interp(s, self.s, self.y))
        yaw = float(np.interp(s, self.s, self.yaw))
        return x - lateral * math.sin(yaw), y + lateral * math.cos(yaw), yaw


# --------------------------------------------------------------------------------------------
# Rendering


class _World:
    """Everything seeded that both runs share: textures, route, occluders."""

    def __init__(self, spec: RouteSpec) -> None:
        self.spec = spec
        self.s0 = -_MARGIN_M
        facade, windows = _build_facade(spec.seed, self.s0, spec.length_m + _MARGIN_M)
        self.facade_day = facade
        self.facade_dusk = _dusk_facade(facade, windows, spec.seed)
        ground = _build_ground(spec.seed, facade.shape[1])
        self.ground_day = ground
        self.ground_dusk = ground * (_DUSK_GAIN * _DUSK_CAST)
        self.route = _Route(spec.seed, self.s0, spec.length_m + _MARGIN_M)
        self.occluders = _occluders(spec.seed, self.s0, spec.length_m + _MARGIN_M)

    def camera(self, query: bool) -> _Camera:
        """The reference (day, clean) or the query (dusk, degraded) camera."""
        return _Camera(self, query)


def _dusk_facade(facade: np.ndarray, windows: np.ndarray, seed: int) -> np.ndarray:
    """The facade strip at dusk: dimmed and tinted, with a random subset of windows lit."""
    rng = _rng(seed, 4)
    out = facade.copy()
    out[..., :3] *= _DUSK_GAIN * _DUSK_CAST
    count = int(windows.max()) + 1
    lit = rng.uniform(size=count) < _DUSK_LIT_FRACTION
    lit[0] = False
    level = rng.uniform(0.55, 0.9, size=count).astype(np.float32)
    warm = np.array([1.0, 0.8, 0.5], np.float32)
    mask = lit[windows]
    glow = level[windows][..., None] * warm * (0.6 + 0.5 * facade[..., :3])
    out[..., :3] = np.where(mask[..., None], glow, out[..., :3])
    return out


@dataclass(frozen=True)
class _Occluder:
    """A flat cut-out standing parallel to the street, seen by the query camera only."""

    kind: str        # 'car' or 'person'
    start: float     # arc length of its rear/left edge
    length: float    # along the street
    height: float
    dist: float      # distance from the reference camera path
    colour: tuple[float, float, float]


def _occluders(seed: int, s0: float, s1: float) -> list[_Occluder]:
    """Parked cars and pedestrians of the query run."""
    rng = _rng(seed, 5)
    palette = ((0.70, 0.10, 0.10), (0.12, 0.20, 0.50), (0.85, 0.85, 0.85), (0.08, 0.08, 0.09),
               (0.50, 0.50, 0.55), (0.20, 0.40, 0.25), (0.80, 0.65, 0.20))
    out = []
    s = s0 + rng.uniform(0.0, 20.0)
    while s < s1:
        length = rng.uniform(4.0, 4.7)
        colour = palette[int(rng.integers(len(palette)))]
        out.append(_Occluder('car', s, length, rng.uniform(1.4, 1.55), _CAR_DIST_M, colour))
        s += length + rng.uniform(8.0, 40.0)
    s = s0 + rng.uniform(0.0, 10.0)
    while s < s1:
        colour = tuple(float(c) for c in rng.uniform(0.05, 0.5, 3))
        dist = rng.uniform(*_PEDESTRIAN_DIST_M)
        out.append(_Occluder('person', s, 0.5, rng.uniform(1.6, 1.9), dist, colour))
        s += rng.uniform(6.0, 25.0)
    # Far to near, so nearer occluders are painted last.
    out.sort(key=lambda o: -o.dist)
    return out


def _bilinear(tex: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample ``tex`` (R, C, K) at float pixel coordinates, clamped to the texture."""
    height, width, channels = tex.shape
    flat = tex.reshape(-1, channels)
    rows = np.clip(rows, 0.0, height - 1.001)
    cols = np.clip(cols, 0.0, width - 1.001)
    r0 = rows.astype(np.int64)
    c0 = cols.astype(np.int64)
    fr = (rows - r0).astype(np.float32)[:, None]
    fc = (cols - c0).astype(np.float32)[:, None]
    i00 = r0 * width + c0
    top = np.take(flat, i00, axis=0)
    top += (np.take(flat, i00 + 1, axis=0) - top) * fc
    bottom = np.take(flat, i00 + width, axis=0)
    bottom += (np.take(flat, i00 + width + 1, axis=0) - bottom) * fc
    return top + (bottom - top) * fr


@dataclass(frozen=True)
class _Rays:
    """Per-pixel ray geometry of one camera orientation, and where the rays hit the world."""

    normal: np.ndarray        # (P,) ray component towards the facades
    tangent: np.ndarray       # (P,) ray component along the street
    down: np.ndarray          # (P,) ray component downwards
    facade_idx: np.ndarray    # pixels that see the facade strip (or the sky behind it)
    facade_rows: np.ndarray   # their facade strip rows
    facade_cols: np.ndarray   # their facade strip columns, relative to the camera's column
    ground_idx: np.ndarray    # pixels that see the ground
    ground_rows: np.ndarray
    ground_cols: np.ndarray
    sky: np.ndarray           # (len(facade_idx), 3) sky colour behind the facade pixels


class _Camera:
    """A pinhole camera looking left out of the vehicle, rendering one run's frames."""

    def __init__(self, world: _World, query: bool) -> None:
        spec = world.spec
        self.world = world
        self.query = query
        self.seed = spec.seed
        self.lateral = _QUERY_LATERAL_M if query else 0.0
        self.cam_h = _CAM_HEIGHT_M + (_QUERY_HEIGHT_M if query else 0.0)
        self.yaw_offset = _QUERY_YAW_RAD if query else 0.0
        self.facade = world.facade_dusk if query else world.facade_day
        self.ground = world.ground_dusk if query else world.ground_day
        self.occluders = world.occluders if query else []
        self.sky_colours = _DUSK_SKY if query else _DAY_SKY
        width, height = spec.image_width, spec.image_height
        self.shape = (height, width)
        focal = (width / 2.0) / math.tan(_HFOV_RAD / 2.0)
        u = (np.arange(width, dtype=np.float64) + 0.5 - width / 2.0) / focal
        v = (np.arange(height, dtype=np.float64) + 0.5 - _HORIZON_ROW_FRACTION * height) / focal
        uu, vv = np.meshgrid(u, v)
        self._u = uu.ravel()
        self._v = vv.ravel()
        self._still = self._rays(0.0, 0.0)

    def _rays(self, d_yaw: float, d_pitch: float) -> _Rays:
        """Ray geometry with the camera turned by ``d_yaw`` and pitched up by ``d_pitch``."""
        yaw = self.yaw_offset + d_yaw
        forward = self._v * math.sin(d_pitch) + math.cos(d_pitch)
        down = self._v * math.cos(d_pitch) - math.sin(d_pitch)
        normal = forward * math.cos(yaw) - self._u * math.sin(yaw)
        tangent = forward * math.sin(yaw) + self._u * math.cos(yaw)
        # Facade hits: the strip row is fixed per pixel, the column shifts with s.
        t_facade = (_FACADE_DIST_M - self.lateral) / normal
        h_facade = self.cam_h - t_facade * down
        ground = h_facade < 0.0
        fi = np.flatnonzero(~ground)
        gi = np.flatnonzero(ground)
        t_ground = self.cam_h / down[gi]
        elevation = np.arctan2(-down[fi], np.hypot(normal[fi], tangent[fi]))
        return _Rays(
            normal=normal, tangent=tangent, down=down,
            facade_idx=fi,
            facade_rows=(_STRIP_TOP_M - h_facade[fi]) * _PPM - 0.5,
            facade_cols=t_facade[fi] * tangent[fi] * _PPM - 0.5,
            ground_idx=gi,
            ground_rows=(t_ground * normal[gi] + self.lateral) * _PPM - 0.5,
            ground_cols=t_ground * tangent[gi] * _PPM - 0.5,
            sky=_sky(elevation, self.sky_colours))

    def pose(self, s: float) -> tuple[float, float, float]:
        """``(x, y, yaw)`` of the camera rig at arc length ``s``."""
        x, y, yaw = self.world.route.pose(s, self.lateral)
        return x, y, yaw + self.yaw_offset

    def render(self, s: float, index: int) -> np.ndarray:
        """The uint8 RGB frame at arc length ``s`` (``index`` seeds the query's shake, noise)."""
        height, width = self.shape
        rng = _rng(self.seed, 6, index) if self.query else None
        if rng is None:
            rays = self._still
        else:
            d_yaw, d_pitch = rng.normal(0.0, _QUERY_SHAKE_RAD, 2)
            rays = self._rays(float(d_yaw), float(d_pitch))
        shift = (s - self.world.s0) * _PPM
        img = np.empty((height * width, 3), dtype=np.float32)
        rgba = _bilinear(self.facade, rays.facade_rows, rays.facade_cols + shift)
        alpha = rgba[:, 3:4]
        img[rays.facade_idx] = rgba[:, :3] * alpha + rays.sky * (1.0 - alpha)
        img[rays.ground_idx] = _bilinear(self.ground, rays.ground_rows, rays.ground_cols + shift)
        for occ in self.occluders:
            self._paint_occluder(img, rays, occ, s)
        img = img.reshape(height, width, 3)
        if rng is None:
            return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        img = np.clip(img, 0.0, 1.0) ** _DUSK_GAMMA
        pil = Image.fromarray((img * 255.0 + 0.5).astype(np.uint8))
        pil = pil.filter(ImageFilter.GaussianBlur(_DUSK_BLUR_RADIUS))
        noisy = np.asarray(pil, dtype=np.float32) + rng.normal(
            0.0, _DUSK_NOISE_SIGMA * 255.0, (height, width, 3)).astype(np.float32)
        return (np.clip(noisy, 0.0, 255.0) + 0.5).astype(np.uint8)

    def _paint_occluder(self, img: np.ndarray, rays: _Rays, occ: _Occluder, s: float) -> None:
        depth = occ.dist - self.lateral
        reach = depth * math.tan(_HFOV_RAD / 2.0 + abs(self.yaw_offset)) + 1.0
        if occ.start > s + reach or occ.start + occ.length < s - reach:
            return
        t = depth / rays.normal
        a = s + t * rays.tangent - occ.start
        h = self.cam_h - t * rays.down
        colour = np.asarray(occ.colour, np.float32) * (_DUSK_GAIN * _DUSK_CAST)
        if occ.kind == 'car':
            length = occ.length
            body = (a >= 0) & (a <= length) & (h >= 0.3) & (h <= 0.95)
            slope = (h - 0.95) * 0.6
            cabin = ((a >= 0.2 * length + slope) & (a <= 0.8 * length - slope)
                     & (h > 0.95) & (h <= occ.height))
            glass = cabin & (h < occ.height - 0.08) & (np.abs(a - 0.5 * length) > 0.06)
            wheel = np.zeros_like(body)
            for centre in (0.18 * length, 0.82 * length):
                wheel |= (a - centre) ** 2 + (h - 0.33) ** 2 < 0.33 ** 2
            img[body | cabin] = colour * (0.85 + 0.3 * np.clip(h[body | cabin] - 0.3, 0, 1))[
                :, None]
            img[glass] = np.array([0.06, 0.07, 0.09], np.float32)
            img[wheel] = np.array([0.03, 0.03, 0.03], np.float32)
        else:
            width = occ.length
            head_h = occ.height - 0.12
            head = (a - 0.5 * width) ** 2 + (h - head_h) ** 2 < 0.12 ** 2
            torso = (np.abs(a - 0.5 * width) < 0.5 * width) & (h > 0.85) & (h < head_h - 0.1)
            legs = ((np.abs(a - 0.36 * width) < 0.09) | (np.abs(a - 0.64 * width) < 0.09)) & (
                (h >= 0.0) & (h <= 0.85))
            img[torso] = colour
            img[legs] = colour * 0.5
            img[head] = np.array([0.55, 0.42, 0.35], np.float32) * _DUSK_GAIN


def _sky(elevation: np.ndarray,
         colours: tuple[tuple[float, float, float], tuple[float, float, float]]) -> np.ndarray:
    """Sky colour per ray elevation (radians): a horizon to zenith gradient."""
    mix = np.clip(elevation / 0.7, 0.0, 1.0)[:, None].astype(np.float32)
    horizon = np.asarray(colours[0], np.float32)
    zenith = np.asarray(colours[1], np.float32)
    return horizon * (1.0 - mix) + zenith * mix
