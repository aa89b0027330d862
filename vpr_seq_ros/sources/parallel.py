"""Reading a run ahead of its consumer: a reader thread, and image decoding in worker processes.

:func:`read_frames` is what the offline tools iterate while they encode. With no workers the
frames are read (and decoded) one batch ahead on a background thread (:func:`prefetched`);
torch and onnxruntime release the GIL, so this overlaps with encoding. With workers, a
:class:`~vpr_seq_ros.sources.base.DecodingSource` is read on that thread (file and bag I/O stay
in this process) and its images are decoded by a bounded pool of worker processes:

* **order**: frames come out in the source's order, whatever order the workers finish in;
* **memory**: at most ``depth`` jobs wait on the reader thread and about ``2 * depth`` frames
  are submitted and not yet consumed (``depth + 2 * workers * chunk``; frames go to a worker
  in chunks of ``depth // (2 * workers)``, 1 to 8), so memory stays about two batches whatever
  the run's length. Decoded images come back through shared memory (one reused block per
  frame in flight), not through a pipe;
* **errors**: an exception raised by a worker is re-raised here, at its frame, with the
  worker's traceback as its cause and a note naming the frame; a worker that dies raises
  :class:`SourceError` naming the frame. What a failed decoding means is the source's call
  (:meth:`~vpr_seq_ros.sources.base.DecodingSource.assemble`): an image folder raises, a bag
  drops and counts the frame;
* **shutdown**: on the end of the run, an error, ``KeyboardInterrupt`` or the consumer
  stopping early, pending work is cancelled and every worker is joined before the error
  propagates. Workers ignore SIGINT (a Ctrl-C reaches the whole process group): the main
  process alone decides to stop.

Workers start with ``spawn`` by default: a fresh interpreter that imports only the decoding
code (about 0.3 s, once per run), inheriting no threads of torch or onnxruntime (``fork``
after threads have started can deadlock). ``fork`` and ``forkserver`` work too and give the
same frames.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import traceback
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory
from typing import Any, Iterable, Iterator, Literal

import numpy as np

from vpr_seq_ros.errors import ConfigError, SourceError
from vpr_seq_ros.sources.base import (DecodeFunction, DecodeJob, DecodeOutcome, DecodingSource,
                                      FrameSource)
from vpr_seq_ros.types import Frame

log = logging.getLogger(__name__)

StartMethod = Literal['spawn', 'fork', 'forkserver']

DEFAULT_START_METHOD: StartMethod = 'spawn'
MAX_AUTO_WORKERS = 4
"""``source.decode_workers = auto`` uses ``min(usable cores - 1, 4)`` workers when that is at
least 2, else none: one worker only moves the read-ahead thread's decoding to another process,
at the cost of the transfers and of its start-up."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def resolve_decode_workers(setting: str | int) -> int:
    """The number of decoding worker processes for a ``source.decode_workers`` setting.

    Args:
        setting: ``'auto'`` (``min(usable cores - 1, 4)``, one core being left to the
            encoder's process, when that is at least 2; else 0) or a count ``>= 0`` (0
            decodes in-process, on the read-ahead thread).

    Raises:
        ConfigError: neither ``auto`` nor a non-negative integer.
    """
    text = str(setting).strip().lower()
    if text == 'auto':
        count = min(usable_cores() - 1, MAX_AUTO_WORKERS)
        return count if count >= 2 else 0
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 0:
        raise ConfigError(f'source.decode_workers = {setting!r} must be auto or an integer >= 0 '
                          '(0 decodes images in-process)')
    return count


def prefetched(frames: Iterable[Frame], depth: int) -> Iterator[Any]:
    """Iterate ``frames`` with a background thread reading up to ``depth`` items ahead.

    Image decoding (PIL, bag deserialisation) then overlaps with encoding (torch and
    onnxruntime release the GIL), in bounded memory. The items and their order are those of
    ``frames``; an exception raised while reading is raised here, at the item it stopped at.
    Stopping early (an exception in the consumer) stops the reader; a generator is closed in
    the reader thread (where it opened its files).
    """
    items: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=max(int(depth), 1))
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        iterator = iter(frames)
        try:
            for frame in iterator:
                if not put(('frame', frame)):
                    return
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            put(('error', err))
            return
        finally:
            # Close a generator source here, in the thread that opened its files (SQLite
            # connections, e.g. of a bag, refuse other threads).
            close = getattr(iterator, 'close', None)
            if close is not None:
                close()
        put(('end', None))

    reader = threading.Thread(target=read, name='frame-reader', daemon=True)
    reader.start()
    try:
        while True:
            kind, value = items.get()
            if kind == 'end':
                return
            if kind == 'error':
                raise value
            yield value
    finally:
        stop.set()
        reader.join()


def read_frames(source: FrameSource, workers: int = 0, depth: int = 16,
                start_method: StartMethod | None = None) -> Iterator[Frame]:
    """The frames of a source, read ahead of the consumer (see the module).

    Args:
        source: the run. Images are decoded in worker processes only for a
            :class:`~vpr_seq_ros.sources.base.DecodingSource` (image folders, bags); other
            sources are read on the reader thread.
        workers: decoding worker processes; 0 decodes on the reader thread.
        depth: read-ahead in frames (the encoder's batch size): about ``2 * depth`` frames
            are decoded ahead at most.
        start_method: how workers start (default :data:`DEFAULT_START_METHOD`).

    Returns:
        A generator of the source's frames, in order; close it (or exhaust it) to stop the
        reader and the workers.
    """
    if workers <= 0 or not isinstance(source, DecodingSource):
        return prefetched(source, depth)
    return _decoded_in_workers(source, workers, max(int(depth), 1),
                               start_method or DEFAULT_START_METHOD)


def _decoded_in_workers(source: DecodingSource, workers: int, depth: int,
                        start_method: StartMethod) -> Iterator[Frame]:
    # Started here, so that forked workers share it: it unlinks the image slots should this
    # process die without closing them.
    resource_tracker.ensure_running()
    context = multiprocessing.get_context(start_method)
    executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_ignore_sigint)
    log.debug('%s: decoding in %d %s worker processes', source.path, workers, start_method)
    jobs = prefetched(source.decode_jobs(), depth)
    decode = source.decode_function
    chunk = max(1, min(MAX_CHUNK, depth // (2 * workers)))
    window = depth + 2 * workers * chunk
    slots = _Slots(window + chunk)
    submitted: deque[tuple[list[tuple[DecodeJob, int]], Future[Any]]] = deque()

    def outcomes() -> Iterator[DecodeOutcome]:
        in_flight = 0
        for group in _chunks(jobs, chunk):
            taken = [(job, *slots.take()) for job in group]
            items = [(job.payload, name, size) for job, _, name, size in taken]
            try:
                future = executor.submit(_decode_chunk, decode, items)
            except BrokenProcessPool as err:
                # A worker died on a frame in flight: collecting them raises for that frame.
                for _, slot, _, _ in taken:
                    slots.release(slot)
                while submitted:
                    yield from _collect(source, slots, *submitted.popleft())
                raise _worker_died(source, group) from err
            submitted.append(([(job, slot) for job, slot, _, _ in taken], future))
            in_flight += len(group)
            while in_flight >= window:
                members, future = submitted.popleft()
                in_flight -= len(members)
                yield from _collect(source, slots, members, future)
        while submitted:
            yield from _collect(source, slots, *submitted.popleft())

    try:
        yield from source.assemble(outcomes())
    finally:
        jobs.close()  # type: ignore[attr-defined]  # stops the reader thread
        # Cancel what has not started; the workers finish their current image (milliseconds)
        # and exit; wait for them, so that no process outlives the run.
        executor.shutdown(wait=True, cancel_futures=True)
        slots.close()


MAX_CHUNK = 8
"""Most frames sent to a worker in one task (fewer round trips between the processes)."""


def _chunks(items: Iterable[DecodeJob], size: int) -> Iterator[list[DecodeJob]]:
    group: list[DecodeJob] = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _collect(source: DecodingSource, slots: _Slots, members: list[tuple[DecodeJob, int]],
             future: Future[Any]) -> Iterator[DecodeOutcome]:
    """The outcomes of one task, in order; its slots are released once read."""
    try:
        try:
            results = future.result()
        except BrokenProcessPool as err:
            raise _worker_died(source, [job for job, _ in members]) from err
        outcomes = []
        for (job, slot), (image, error, remote) in zip(members, results):
            if isinstance(image, _InSlot):
                image = slots.read(slot, image)
            elif image is not None:
                slots.saw(image.nbytes)
            if error is not None:
                error.__cause__ = _RemoteTraceback(remote)
                error.add_note(f'raised in a decoding worker process while decoding frame '
                               f'{job.frame.name} of {source.path}')
            outcomes.append(DecodeOutcome(job.frame, image, error))
    finally:
        for _, slot in members:
            slots.release(slot)
    yield from outcomes


def _worker_died(source: DecodingSource, group: list[DecodeJob]) -> SourceError:
    names = group[0].frame.name if len(group) == 1 else \
        f'{group[0].frame.name} .. {group[-1].frame.name}'
    return SourceError(
        f'a decoding worker process stopped (killed, out of memory, or unable to import the '
        f'decoding code) while decoding frame {names} of {source.path}; set '
        'source.decode_workers to 0 to decode in-process and see the error')


@dataclass(frozen=True)
class _InSlot:
    """A worker's answer: the image is in the shared-memory slot of its job."""

    shape: tuple[int, ...]
    dtype: str


class _Slots:
    """Shared-memory blocks that carry decoded images back from the workers, one per frame in
    flight (taken when a job is submitted, released when its frame is collected, both in
    order).

    Sent through the result pipe instead, an image of 1.5 MB crosses a 64 KiB pipe buffer in
    some 25 scheduler round trips: on a loaded machine that costs more than decoding it. The
    first images (before a size is known), larger ones, or all of them when shared memory
    cannot be allocated, still come through the pipe.
    """

    def __init__(self, count: int) -> None:
        self.blocks: list[shared_memory.SharedMemory | None] = [None] * count
        self.free = deque(range(count))
        self.size = 0  # bytes of the largest image seen; 0 before the first one
        self.enabled = True

    def take(self) -> tuple[int, str | None, int]:
        """``(slot, block name or None, block size)`` for the next job."""
        slot = self.free.popleft()
        if not (self.enabled and self.size):
            return slot, None, 0
        block = self.blocks[slot]
        if block is None or block.size < self.size:
            self._drop(slot)
            try:
                block = self.blocks[slot] = _allocate(self.size)
            except OSError as err:
                self.enabled = False
                log.warning('no shared memory for decoded images (%s); they come through a '
                            'pipe, which is slower. Enlarge /dev/shm, or set '
                            'source.decode_workers to 0', err)
                return slot, None, 0
        return slot, block.name, block.size

    def read(self, slot: int, found: _InSlot) -> np.ndarray:
        """A copy of the image a worker wrote into a slot."""
        block = self.blocks[slot]
        assert block is not None
        view = np.ndarray(found.shape, np.dtype(found.dtype), block.buf)
        image = view.copy()
        del view  # the block cannot be closed while a view of it exists
        return image

    def saw(self, nbytes: int) -> None:
        """Size the next blocks for an image that came through the pipe."""
        if nbytes > self.size:
            self.size = -(-nbytes // SLOT_ALIGN) * SLOT_ALIGN

    def release(self, slot: int) -> None:
        self.free.append(slot)

    def _drop(self, slot: int) -> None:
        block, self.blocks[slot] = self.blocks[slot], None
        if block is not None:
            block.close()
            block.unlink()

    def close(self) -> None:
        """Free every block (after the workers have stopped)."""
        for slot in range(len(self.blocks)):
            self._drop(slot)


SLOT_ALIGN = 1 << 16
"""Shared-memory blocks are sized in multiples of this many bytes."""


def _allocate(size: int) -> shared_memory.SharedMemory:
    """A shared-memory block whose pages are reserved now: a full ``/dev/shm`` (small in
    containers) is an OSError here rather than a SIGBUS in a worker writing to it."""
    block = shared_memory.SharedMemory(create=True, size=size)
    fd = getattr(block, '_fd', -1)
    if fd >= 0 and hasattr(os, 'posix_fallocate'):
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError:
            block.close()
            block.unlink()
            raise
    return block


class _RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process, as text."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


_ATTACHED: dict[str, shared_memory.SharedMemory] = {}
"""A worker's open slots, by name (the most recent few)."""


def _decode_chunk(decode: DecodeFunction, items: list[tuple[Any, str | None, int]]
                  ) -> list[tuple[np.ndarray | _InSlot | None, Exception | None, str]]:
    """Run in a worker: :func:`_decode_job` of each ``(payload, slot, size)``."""
    return [_decode_job(decode, *item) for item in items]


def _decode_job(decode: DecodeFunction, payload: Any, slot: str | None, size: int
                ) -> tuple[np.ndarray | _InSlot | None, Exception | None, str]:
    """Run in a worker: ``(image or _InSlot, None, '')``, or ``(None, error, traceback)``.

    The image goes into the shared-memory block ``slot`` when it fits in its ``size`` bytes.
    """
    try:
        image = decode(payload)
    except Exception as err:  # noqa: BLE001 - handed back to the source's assemble
        return None, _portable(err), traceback.format_exc()
    if slot is None or image.nbytes > size:
        return image, None, ''
    block = _ATTACHED.pop(slot, None) or shared_memory.SharedMemory(name=slot)
    _ATTACHED[slot] = block  # most recent last
    while len(_ATTACHED) > MAX_ATTACHED:
        _ATTACHED.pop(next(iter(_ATTACHED))).close()
    view = np.ndarray(image.shape, image.dtype, block.buf)
    view[...] = image
    del view
    return _InSlot(tuple(image.shape), image.dtype.str), None, ''


MAX_ATTACHED = 256
"""Slots a worker keeps open (a run uses ``depth + 2 * workers``; more after a resize)."""


def _portable(err: Exception) -> Exception:
    """``err`` if it survives pickling, else a :class:`SourceError` with its type and text."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001 - any pickling failure
        return SourceError(f'{type(err).__name__}: {err}')


__all__ = ['DEFAULT_START_METHOD', 'prefetched', 'read_frames', 'resolve_decode_workers',
           'usable_cores']
