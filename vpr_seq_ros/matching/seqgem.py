"""SeqGeM (JIST): a generalized mean over the frame descriptors of a sequence.

``s_k = ( (1/L) * sum_t max(f_{t,k}, 1e-6)^p )^(1/p)`` for every dimension k; order-invariant,
any L, no final normalisation (as the official code, so distances stay comparable with it).
Retrieval is nearest neighbour under L2 (faiss ``IndexFlatL2``).
"""

from __future__ import annotations

import numpy as np

from vpr_seq_ros.matching.windows import window_starts

SEQGEM_EPS = 1e-6
_BLOCK = 8192


def seqgem(frames: np.ndarray, p: float) -> np.ndarray:
    """Pool frame descriptors over time: ``(..., L, D) -> (..., D)`` float32."""
    x = np.maximum(np.asarray(frames, dtype=np.float64), SEQGEM_EPS)
    return np.power(np.mean(np.power(x, p), axis=-2), 1.0 / p).astype(np.float32)


def sequence_descriptors(frames: np.ndarray, length: int, p: float,
                         segments: np.ndarray | None = None,
                         window: str = 'trailing') -> tuple[np.ndarray, np.ndarray]:
    """SeqGeM descriptor of every anchor's window.

    Args:
        frames: ``(N, D)`` frame descriptors.
        length: L.
        p: SeqGeM exponent.
        segments: ``(N,)`` segment ids (windows never cross them).
        window: ``'trailing'`` or ``'centred'``.

    Returns:
        ``(descriptors, valid)``: ``(N, D)`` float32 (zeros where invalid) and ``(N,)`` bool.
    """
    n = frames.shape[0]
    segments = np.zeros(n, np.int64) if segments is None else np.asarray(segments)
    starts, valid = window_starts(segments, length, window)
    out = np.zeros(frames.shape, dtype=np.float32)
    anchors = np.flatnonzero(valid)
    frames = np.asarray(frames)
    for lo in range(0, len(anchors), _BLOCK):
        block = anchors[lo:lo + _BLOCK]
        first = int(starts[block].min())
        last = int(starts[block].max()) + length
        powered = np.power(np.maximum(frames[first:last].astype(np.float64), SEQGEM_EPS), p)
        windows = np.lib.stride_tricks.sliding_window_view(powered, length, axis=0)
        mean = windows[starts[block] - first].mean(axis=-1)
        out[block] = np.power(mean, 1.0 / p).astype(np.float32)
    return out, valid
