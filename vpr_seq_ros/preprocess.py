"""Image preprocessing of the learnt frame encoders, equal to the official JIST transform.

JIST (``jist/utils/utils.py : configure_transform``) resizes every RGB image to exactly
``480 x 640`` (H x W, aspect ratio not kept) with PIL bilinear resampling, which is antialiased
when downscaling (torchvision 0.14 on PIL images calls ``Image.resize``), then divides by 255 and
normalises with the ImageNet mean/std. Here the resize is done the same way and the result stays
**uint8**: the division by 255 and the mean/std normalisation live inside the model
(:class:`vpr_seq_ros.models.resnet.ImageNormalize`), so the exported ONNX graph carries them.

Shapes: an image is ``(H, W, 3)`` uint8 RGB; ``(H, W)`` grey is replicated to three channels and
``(H, W, 4)`` drops its alpha channel. A batch for the model is ``(B, 3, H, W)`` uint8.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from vpr_seq_ros.errors import SourceError


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Check an image and bring it to ``(H, W, 3)`` uint8 RGB.

    Args:
        image: ``(H, W, 3)`` uint8 RGB, ``(H, W)`` uint8 grey or ``(H, W, 4)`` uint8 RGBA.

    Returns:
        ``(H, W, 3)`` uint8 (the input itself when it already is RGB).

    Raises:
        SourceError: not a numpy array, not uint8, or of another shape.
    """
    if not isinstance(image, np.ndarray):
        raise SourceError(f'an image must be a numpy array, got {type(image).__name__}')
    if image.dtype != np.uint8:
        raise SourceError(
            f'an image must be uint8 RGB, got dtype {image.dtype}; convert it first (e.g. '
            'scale 16-bit images to 0..255 and cast to uint8)')
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    elif image.ndim != 3 or image.shape[2] != 3:
        raise SourceError(
            f'an image must be (H, W, 3) RGB, (H, W) grey or (H, W, 4) RGBA, got shape '
            f'{image.shape}')
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise SourceError(f'an image must not be empty, got shape {image.shape}')
    return image


def resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to exactly ``height x width`` with PIL bilinear (antialiased) resampling.

    A same-size image is returned unchanged (PIL's same-size bilinear resize is an exact no-op,
    so skipping it changes nothing).

    Args:
        image: see :func:`as_rgb`.
        height: output height in pixels.
        width: output width in pixels.

    Returns:
        ``(height, width, 3)`` uint8 RGB.

    Raises:
        SourceError: see :func:`as_rgb`.
    """
    image = as_rgb(image)
    if image.shape[0] == height and image.shape[1] == width:
        return image
    pil = Image.fromarray(np.ascontiguousarray(image))
    return np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))


def preprocess_batch(images: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """Resize a batch of images for the model.

    Args:
        images: ``B`` images, each as accepted by :func:`as_rgb`, of any size.
        height: model input height in pixels.
        width: model input width in pixels.

    Returns:
        ``(B, 3, height, width)`` uint8 RGB. The array is a transposed view of a contiguous
        ``(B, height, width, 3)`` buffer, i.e. it has channels-last strides; ``torch.from_numpy``
        keeps them (the layout the torch encoder runs in), ``np.ascontiguousarray`` gives NCHW.

    Raises:
        SourceError: an empty batch or a bad image (the message names its index).
    """
    if len(images) == 0:
        raise SourceError('cannot preprocess an empty batch of images')
    out = np.empty((len(images), height, width, 3), dtype=np.uint8)
    for row, image in enumerate(images):
        try:
            out[row] = resize_rgb(image, height, width)
        except SourceError as err:
            raise SourceError(f'image {row} of the batch: {err}') from err
    return out.transpose(0, 3, 1, 2)
