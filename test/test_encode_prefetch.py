"""encode_run reads frames ahead in a background thread: same frames, same order, errors at
the right frame, bounded read-ahead, and the reader stops when encoding fails."""

from __future__ import annotations

import threading
from typing import Iterator

import numpy as np
import pytest

from vpr_seq_ros.encoders.identity import IdentityEncoder
from vpr_seq_ros.errors import SourceError
from vpr_seq_ros.pipeline import encode_run
from vpr_seq_ros.sources.parallel import prefetched
from vpr_seq_ros.sources.base import FrameSource
from vpr_seq_ros.types import Frame


class Counting(FrameSource):
    """``n`` descriptor frames; counts how many were read; may fail at frame ``fail_at``."""

    input_kind = 'descriptor'

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at, self.read, self.path = n, fail_at, 0, 'counting'
        self.closed_in: str | None = None

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Frame]:
        try:
            for i in range(self.n):
                if i == self.fail_at:
                    raise SourceError(f'frame {i} is damaged')
                self.read += 1
                yield Frame(index=i, stamp_ns=i, descriptor=np.full(3, i, np.float32),
                            name=str(i))
        finally:
            self.closed_in = threading.current_thread().name


def test_prefetched_keeps_frames_and_order_and_closes_in_the_reader() -> None:
    source = Counting(50)
    assert [f.index for f in prefetched(source, 4)] == list(range(50))
    assert source.closed_in == 'frame-reader'
    run = encode_run(Counting(37), IdentityEncoder(), batch_size=8)
    np.testing.assert_array_equal(run.descriptors[:, 0], np.arange(37))
    assert run.names == tuple(str(i) for i in range(37))


def test_errors_surface_at_their_frame() -> None:
    seen = []
    with pytest.raises(SourceError, match='frame 7 is damaged'):
        for frame in prefetched(Counting(20, fail_at=7), 3):
            seen.append(frame.index)
    assert seen == list(range(7))


def test_read_ahead_is_bounded_and_stops_with_the_consumer() -> None:
    source = Counting(1000)
    frames = prefetched(source, 5)
    first = next(frames)
    assert first.index == 0
    threading.Event().wait(0.2)  # let the reader fill the queue
    # consumed 1, queue holds 5, the reader may hold one more waiting to be put
    assert source.read <= 1 + 5 + 1
    frames.close()
    assert source.read < 1000 and source.closed_in == 'frame-reader'
    assert not any(t.name == 'frame-reader' and t.is_alive() for t in threading.enumerate())


def test_a_failing_encoder_stops_the_reader() -> None:
    class Failing(IdentityEncoder):
        def encode(self, inputs):  # noqa: ANN001, ANN201 - test double
            raise SourceError('encoder broke')

    source = Counting(1000)
    with pytest.raises(SourceError, match='encoder broke'):
        encode_run(source, Failing(), batch_size=4)
    assert source.read < 1000 and source.closed_in == 'frame-reader'
