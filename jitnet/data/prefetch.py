"""Batches read ahead on a background thread, as Caffe's BasePrefetchingDataLayer does.

A data layer describes its batches as a *pure function of a position*: given a state (a
small JSON-able dict: where in the data, which batch number), ``make_batches(state,
buffers)`` yields ``(batch, state after it)`` pairs. The :class:`Prefetcher` runs that on
a daemon thread, keeping up to ``depth`` batches ready in a queue, and remembers the
state after the batch it last *delivered*: that is what a snapshot records, however far
the thread has read ahead, so a run resumed from it gets exactly the batches the
uninterrupted run got. ``restart(state)`` drops what was read ahead and starts over
from ``state``.

An exception on the thread is handed over in the queue and raised by ``next()`` in the
training thread, after the batches that came before it. ``depth`` 0 produces each batch
in ``next()`` itself, without a thread.

Batch arrays are recycled: after copying a batch into its tops, the layer gives the
arrays back (``recycle``) and ``buffers.get(shape, dtype)`` hands them out again, so a
large batch is not allocated (and page-faulted) anew every iteration.

:func:`decode_pool` is a small thread pool shared by the layers for decoding images
within a batch; Pillow releases the GIL while it decodes, so the threads overlap.
"""
import collections
import concurrent.futures
import os
import queue
import threading
import weakref

import numpy as np

_POOL = None
_POOL_LOCK = threading.Lock()


def decode_threads():
    """How many threads decode images within a batch: JITNET_DECODE_THREADS, else up to 4."""
    value = os.environ.get("JITNET_DECODE_THREADS")
    if value:
        return max(1, int(value))
    return max(1, min(4, os.cpu_count() or 1))


def decode_pool():
    """The shared ThreadPoolExecutor for decoding (None when one thread is configured)."""
    global _POOL
    threads = decode_threads()
    if threads == 1:
        return None
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers != threads:
            _POOL = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="jitnet-decode")
        return _POOL


def map_decode(function, items):
    """[function(x) for x in items], on the decode pool when there is more than one item."""
    pool = decode_pool() if len(items) > 1 else None
    if pool is None:
        return [function(x) for x in items]
    return list(pool.map(function, items))


class Buffers:
    """Arrays handed back by the consumer, handed out again to the producer."""

    def __init__(self, keep):
        self.free = collections.deque(maxlen=keep)

    def get(self, shape, dtype):
        shape, dtype = tuple(shape), np.dtype(dtype)
        for _ in range(len(self.free)):
            try:
                array = self.free.popleft()
            except IndexError:
                break
            if array.shape == shape and array.dtype == dtype:
                return array
        return np.empty(shape, dtype)

    def give_back(self, arrays):
        for array in arrays:
            if isinstance(array, np.ndarray):
                self.free.append(array)


class _Failure:
    def __init__(self, error):
        self.error = error


_STOP = object()


def _produce(make_batches, state, buffers, out, stop):
    """The thread's body: run the batch iterator into the queue until told to stop."""
    try:
        for item in make_batches(state, buffers):
            if stop.is_set():
                return
            out.put(item)
            if stop.is_set():
                return
    except BaseException as e:          # handed to the training thread, raised there
        out.put(_Failure(e))
        return
    out.put(_Failure(RuntimeError("the batch iterator ended")))


def _shut_down(stop, out, thread):
    """Stop a producer thread: signal, then drain the queue until it leaves its put()."""
    stop.set()
    while thread.is_alive():
        try:
            while True:
                out.get_nowait()
        except queue.Empty:
            pass
        thread.join(0.01)


class Prefetcher:
    """Batches of ``make_batches(state, buffers)`` read ahead on a daemon thread."""

    def __init__(self, make_batches, state, depth=4, name="jitnet-prefetch"):
        self.make_batches = make_batches
        self.depth = int(depth)
        self.name = name
        self.buffers = Buffers(keep=self.depth + 2)
        self.state = state
        self._thread = self._finalizer = None
        self._start(state)

    def _start(self, state):
        self.state = state
        self._failure = None
        if self.depth == 0:
            self._iterator = self.make_batches(state, self.buffers)
            return
        self._queue = queue.Queue(maxsize=self.depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=_produce, name=self.name, daemon=True,
                                        args=(self.make_batches, state, self.buffers,
                                              self._queue, self._stop))
        self._thread.start()
        # Stop the thread when this object is collected (a layer dropped without close()).
        self._finalizer = weakref.finalize(self, _shut_down, self._stop, self._queue, self._thread)

    def next(self):
        """The next batch; raises what the producer raised, in this thread."""
        if self._failure is not None:
            raise self._failure.error
        if self.depth == 0:
            batch, state = next(self._iterator)
        else:
            item = self._queue.get()
            if isinstance(item, _Failure):
                self._failure = item
                raise item.error
            batch, state = item
        self.state = state
        return batch

    def recycle(self, batch):
        """Give a delivered batch's arrays back for reuse (after copying them out)."""
        self.buffers.give_back(batch)

    def restart(self, state):
        """Drop what was read ahead and continue from ``state``."""
        self.close()
        self._start(state)

    def close(self):
        """Stop the thread (if any)."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._iterator = None
