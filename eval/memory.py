"""Peak RAM per system: a sampler of this process's resident memory, and a release of cached models.

An eval run loads several readers in turn in one process. Each system's peak RAM is the process's peak
while that system loaded and answered; it includes what the process already held (Python, torch), so
the previous reader and the retriever's embedder are released first (`release_models`).
"""

from __future__ import annotations

import gc
import threading


class PeakRSS:
    """Samples this process's resident memory in a thread; .peak_mb is the maximum seen since start."""

    def __init__(self, every_s: float = 0.05):
        import psutil

        self._proc = psutil.Process()
        self.every_s = every_s
        self.peak_mb = self._rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> float:
        return self._proc.memory_info().rss / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak_mb = max(self.peak_mb, self._rss())

    def __enter__(self) -> PeakRSS:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak_mb = max(self.peak_mb, self._rss())


def release_models() -> None:
    """Drop the per-process model caches so the next reader's RAM is its own.

    The model store keeps loaded models for the process's lifetime (right for `rag ask`); an eval run
    loads several in turn, and without this each system's peak RAM would include the previous ones.
    """
    from assets import models
    from indexing import embed

    models.unload()
    embed._CACHE.clear()  # the retriever's query embedder, kept per process like the models
    gc.collect()
