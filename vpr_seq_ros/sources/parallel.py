"""Reading a run ahead of its consumer: a reader thread, and image decoding in worker processes.

:func:`read_frames` is what the offline tools iterate while they encode. With no workers the
frames are read (and decoded) one batch ahead on a background thread (:func:`prefetched`);
torch and onnxruntime release the GIL, so this overlaps with encoding. With workers, a
:class:`~vpr_seq_ros.sources.base.DecodingSource` is read on that thread (file and bag I/O stay
in this process) and its images are decoded by a bounded pool of worker processes:

* **order**: frames come out in the source's order, whatever order the workers finish in;
* **memory**: at most ``depth`` jobs wait on the reader thread and ``2 * depth`` frames are
  submitted and not yet consumed, so memory stays a few batches whatever the run's length;
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
"""``source.decode_workers = auto`` uses ``min(usable cores - 1, 4)`` workers."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def resolve_decode_workers(setting: str | int) -> int:
    """The number of decoding worker processes for a ``source.decode_workers`` setting.

    Args:
        setting: ``'auto'`` (``min(usable cores - 1, 4)``: one core is left to the encoder's
            process; 0 on a single core) or a count ``>= 0`` (0 decodes in-process).

    Raises:
        ConfigError: neither ``auto`` nor a non-negative integer.
    """
    text = str(setting).strip().lower()
    if text == 'auto':
        return max(0, min(usable_cores() - 1, MAX_AUTO_WORKERS))
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
        depth: read-ahead in frames (the encoder's batch size): ``2 * depth`` frames are
            decoded ahead at most.
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
    context = multiprocessing.get_context(start_method)
    executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_ignore_sigint)
    log.debug('%s: decoding in %d %s worker processes', source.path, workers, start_method)
    jobs = prefetched(source.decode_jobs(), depth)
    decode = source.decode_function
    window = 2 * depth
    submitted: deque[tuple[DecodeJob, Future[Any]]] = deque()

    def outcomes() -> Iterator[DecodeOutcome]:
        for job in jobs:
            submitted.append((job, executor.submit(_decode_job, decode, job.payload)))
            if len(submitted) >= window:
                yield _outcome(source, *submitted.popleft())
        while submitted:
            yield _outcome(source, *submitted.popleft())

    try:
        yield from source.assemble(outcomes())
    finally:
        jobs.close()  # type: ignore[attr-defined]  # stops the reader thread
        # Cancel what has not started; the workers finish their current image (milliseconds)
        # and exit; wait for them, so that no process outlives the run.
        executor.shutdown(wait=True, cancel_futures=True)


def _outcome(source: DecodingSource, job: DecodeJob, future: Future[Any]) -> DecodeOutcome:
    try:
        image, error, remote = future.result()
    except BrokenProcessPool as err:
        raise SourceError(
            f'a decoding worker process stopped (killed, out of memory, or unable to import '
            f'the decoding code) while decoding frame {job.frame.name} of {source.path}; set '
            'source.decode_workers to 0 to decode in-process and see the error') from err
    if error is not None:
        error.__cause__ = _RemoteTraceback(remote)
        error.add_note(f'raised in a decoding worker process while decoding frame '
                       f'{job.frame.name} of {source.path}')
    return DecodeOutcome(job.frame, image, error)


class _RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process, as text."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode_job(decode: DecodeFunction, payload: Any
                ) -> tuple[np.ndarray | None, Exception | None, str]:
    """Run in a worker: ``(image, None, '')``, or ``(None, error, traceback text)``."""
    try:
        return decode(payload), None, ''
    except Exception as err:  # noqa: BLE001 - handed back to the source's assemble
        return None, _portable(err), traceback.format_exc()


def _portable(err: Exception) -> Exception:
    """``err`` if it survives pickling, else a :class:`SourceError` with its type and text."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001 - any pickling failure
        return SourceError(f'{type(err).__name__}: {err}')


__all__ = ['DEFAULT_START_METHOD', 'prefetched', 'read_frames', 'resolve_decode_workers',
           'usable_cores']
