"""Keep Python's cyclic garbage collector off the objects a large send holds for its whole run.

A send holds hundreds of thousands of long-lived objects (papers, compiled templates, rendered cards,
the store's rows), and each full collection walks all of them: one such pass takes over 100 ms in a
10,000-reader run, about a tenth of its rendering time, and frees nothing. ``frozen_heap`` collects
once, then moves everything alive into the collector's permanent generation (``gc.freeze``) for the
duration; objects made later are collected as usual. The heap is unfrozen afterwards, so a daemon's
later runs see it whole again.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["frozen_heap"]


@contextmanager
def frozen_heap() -> Iterator[None]:
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
