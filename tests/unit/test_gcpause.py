"""frozen_heap: the collector leaves what was alive alone for the block's duration, and sees it again after."""

from __future__ import annotations

import gc

from digest.gcpause import frozen_heap


def test_objects_alive_before_are_frozen_during_and_unfrozen_after() -> None:
    before = gc.get_freeze_count()
    kept = [[i] for i in range(1000)]
    with frozen_heap():
        assert gc.get_freeze_count() >= before + len(kept)
        cycle: list[object] = []
        cycle.append(cycle)  # garbage made inside is still collected
        del cycle
        assert gc.collect() >= 1
    assert gc.get_freeze_count() == before
    assert kept[999] == [999]


def test_the_heap_is_unfrozen_when_the_block_fails() -> None:
    before = gc.get_freeze_count()
    try:
        with frozen_heap():
            raise RuntimeError("send failed")
    except RuntimeError:
        pass
    assert gc.get_freeze_count() == before
