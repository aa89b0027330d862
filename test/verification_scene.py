"""A seeded textured 3-D scene rendered by ray casting, for tests of geometric verification.

The scene is an open box seen from inside: a back wall, two side walls and a floor, each with a
seeded multi-scale noise texture. Cameras are pinholes (OpenCV axes: x right, y down, z
forward); a pose is ``(R_wc, C)``: the camera's orientation and its centre in the world frame,
which is the frame of the identity camera.
"""

from __future__ import annotations

import cv2
import numpy as np

# plane: (normal axis, offset, texture axes (u, v) as world axis indices)
PLANES = ((2, 5.0, (0, 1)), (0, -2.0, (2, 1)), (0, 2.0, (2, 1)), (1, 1.2, (0, 2)))


def texture(seed: int, size: int = 512) -> np.ndarray:
    """``(size, size)`` float32 texture in [0, 255]: blobs at several scales."""
    rng = np.random.default_rng(seed)
    out = np.zeros((size, size), np.float32)
    for cells, weight in ((8, 1.0), (32, 0.7), (128, 0.5)):
        small = rng.uniform(0, 1, (cells, cells)).astype(np.float32)
        out += weight * cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    out -= out.min()
    return 255 * out / out.max()


def render(rotation_wc: np.ndarray, centre: np.ndarray, k: np.ndarray, size: tuple[int, int],
           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Render the scene.

    Args:
        rotation_wc: ``(3, 3)`` camera orientation in the world frame.
        centre: ``(3,)`` camera centre in the world frame (metres).
        k: ``(3, 3)`` camera matrix.
        size: ``(width, height)`` pixels.
        seed: texture seed (a different seed is a different place).

    Returns:
        ``(H, W)`` uint8 grey image and ``(H, W)`` float32 depth (metres along the optical
        axis).
    """
    width, height = size
    tex = texture(seed)
    cols, rows = np.meshgrid(np.arange(width, dtype=np.float64),
                             np.arange(height, dtype=np.float64))
    rays_c = np.stack([(cols - k[0, 2]) / k[0, 0], (rows - k[1, 2]) / k[1, 1],
                       np.ones_like(cols)], axis=-1)
    rays_w = rays_c @ rotation_wc.T
    best = np.full((height, width), np.inf)
    image = np.zeros((height, width), np.float32)
    for i, (axis, offset, (ua, va)) in enumerate(PLANES):
        direction = rays_w[..., axis]
        with np.errstate(divide='ignore', invalid='ignore'):
            lam = (offset - centre[axis]) / direction
        lam[~np.isfinite(lam) | (lam <= 0)] = np.inf
        hit = centre + np.where(np.isfinite(lam), lam, 0.0)[..., None] * rays_w
        # texture coordinates: 40 px per metre, wrapped; each plane shifted so they differ
        u = ((hit[..., ua] * 40 + 97 * i) % tex.shape[1]).astype(np.float32)
        v = ((hit[..., va] * 40 + 53 * i) % tex.shape[0]).astype(np.float32)
        sampled = cv2.remap(tex, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        closer = lam < best
        best[closer] = lam[closer]
        image[closer] = sampled[closer]
    depth = (best * rays_c[..., 2]).astype(np.float32)  # rays have z = 1 in the camera
    depth[~np.isfinite(depth)] = 0
    return np.clip(image, 0, 255).astype(np.uint8), depth


def rotation_y(degrees: float) -> np.ndarray:
    """Rotation about the camera's y axis (yaw for OpenCV axes)."""
    a = np.radians(degrees)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def relative_pose(rotation_wc: np.ndarray, centre: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(R, t)`` of ``X_cam = R X_world + t`` for a camera at ``(rotation_wc, centre)``."""
    return rotation_wc.T, -rotation_wc.T @ centre
