"""The harness as a LoadGen system under test: the query sample library is the crop cache, the SUT
batches what LoadGen issues and answers each sample as MLPerf's reference app answers for these
models, with one float32, the argmax over the 1,001 outputs minus one (background: -1)."""

from __future__ import annotations

import queue
import threading
from typing import Callable

import numpy as np


class SampleLibrary:
    """LoadGen's query sample library: sample k is the k-th evaluated image, row rows[k] of the crop
    cache. Loading copies the requested crops into memory as the model's input (the runtime's
    `inputs`: on its device, normalised); unloading drops them."""

    def __init__(self, images: np.ndarray, rows: np.ndarray, runtime):
        self.images, self.rows, self.runtime = images, rows, runtime
        self.arena = None
        self.position = np.full(len(rows), -1, dtype=np.int64)  # sample -> row of the arena

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, samples: list[int]) -> None:
        index = np.unique(np.asarray(samples, dtype=np.int64))
        self.arena = self.runtime.inputs(np.asarray(self.images[self.rows[index]]))
        self.position[:] = -1
        self.position[index] = np.arange(len(index))

    def unload(self, samples: list[int]) -> None:
        self.arena = None
        self.position[:] = -1

    def batch(self, samples: np.ndarray):
        positions = self.position[samples]
        if (positions < 0).any():
            raise RuntimeError(f"LoadGen issued samples it had not loaded: {samples[positions < 0][:5].tolist()}")
        return self.runtime.take(self.arena, positions)


class SystemUnderTest:
    """Answers LoadGen's queries `batch_size` samples at a time. With `inline` (SingleStream and
    MultiStream, where LoadGen issues the next query only when this one is answered) the query is
    answered in LoadGen's issue call, as MLPerf's reference app does: handing it to a worker thread
    added 1-2 ms to each query (measured). Otherwise a worker thread answers: an Offline query is split
    into batches, Server queries that arrive while a batch runs join the next one.

    Any error (in the backend or while loading samples) goes to `on_failure`, which must not return
    into LoadGen as if nothing happened: LoadGen would wait for answers that never come."""

    def __init__(self, lgm, library: SampleLibrary, runtime, batch_size: int, class_offset: int,
                 keep_logits: bool, on_failure: Callable[[BaseException], None], inline: bool = False):
        self.lgm, self.library, self.runtime = lgm, library, runtime
        self.batch_size, self.offset = batch_size, class_offset
        self.keep_logits, self.on_failure = keep_logits, on_failure
        self.logits: np.ndarray | None = None  # per sample, when kept (accuracy mode)
        self.answered = np.zeros(len(library), dtype=np.int64)
        self.inline = inline
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._work, name="sut", daemon=True)
        if not inline:
            self.thread.start()

    # LoadGen's callbacks (its own threads)
    def issue(self, query_samples) -> None:
        samples = [(q.id, q.index) for q in query_samples]
        if not self.inline:
            self.queue.put(samples)
            return
        try:
            for start in range(0, len(samples), self.batch_size):
                self.answer(samples[start:start + self.batch_size])
        except BaseException as e:  # noqa: BLE001 (reported, then the run stops)
            self.on_failure(e)

    def flush(self) -> None:
        pass

    def load(self, samples) -> None:
        try:
            self.library.load(samples)
        except BaseException as e:  # noqa: BLE001 (reported, then the run stops)
            self.on_failure(e)

    def unload(self, samples) -> None:
        self.library.unload(samples)

    def stop(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()

    def _work(self) -> None:
        try:
            while (pending := self.queue.get()) is not None:
                while len(pending) < self.batch_size:  # what else has arrived joins this batch
                    try:
                        more = self.queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        self.queue.put(None)
                        break
                    pending += more
                for start in range(0, len(pending), self.batch_size):
                    self.answer(pending[start:start + self.batch_size])
        except BaseException as e:  # noqa: BLE001 (reported, then the run stops)
            self.on_failure(e)

    def answer(self, chunk: list[tuple[int, int]]) -> None:
        samples = np.fromiter((index for _, index in chunk), dtype=np.int64, count=len(chunk))
        logits = self.runtime(self.library.batch(samples))
        # MLPerf's reference app: argmax minus the background offset, answered as float32.
        answers = (logits.argmax(axis=1) - self.offset).astype(np.float32)
        if self.keep_logits:
            if self.logits is None:
                self.logits = np.zeros((len(self.library), logits.shape[1]), np.float32)
            # LoadGen may issue a sample again (to fill a MultiStream query); as MLPerf's scorer
            # counts a sample's first answer only, the first answer's logits are the ones kept.
            first = np.zeros(len(samples), dtype=bool)
            first[np.unique(samples, return_index=True)[1]] = True
            first &= self.answered[samples] == 0
            self.logits[samples[first]] = logits[first]
        np.add.at(self.answered, samples, 1)
        base, size = answers.ctypes.data, answers.itemsize
        self.lgm.QuerySamplesComplete([self.lgm.QuerySampleResponse(qid, base + j * size, size)
                                       for j, (qid, _) in enumerate(chunk)])
