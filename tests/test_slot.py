"""The slot hands each reader one whole model and is never emptied."""

from __future__ import annotations

import threading

import pytest

from service.slot import ModelSlot, ServedModel


def served(run_id: str) -> ServedModel:
    return ServedModel(model=object(), run_id=run_id, pathspec=f"F/{run_id}", loaded_at=0.0,
                       finished_at=None, item_json=(run_id,))


def test_swap_returns_the_old_model_and_refuses_none():
    slot = ModelSlot()
    assert slot.get() is None
    assert slot.swap(served("1")) is None
    assert slot.swap(served("2")).run_id == "1"
    with pytest.raises(ValueError):
        slot.swap(None)
    assert slot.get().run_id == "2"


def test_readers_always_see_a_consistent_value_during_swaps():
    slot = ModelSlot()
    slot.swap(served("0"))
    torn = []
    stop = threading.Event()

    def read():
        while not stop.is_set():
            value = slot.get()
            if value is None or value.item_json[0] != value.run_id:
                torn.append(value)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    for i in range(2000):
        slot.swap(served(str(i)))
    stop.set()
    for reader in readers:
        reader.join()
    assert torn == []
    assert slot.get().run_id == "1999"
