"""The world's structure: one handler per kind of happening, in a dispatch table."""

from __future__ import annotations

from matcher.sim.world import Happening, World


def test_every_happening_has_its_own_handler():
    assert len(World._HANDLERS) == len(Happening)
    assert World._HANDLERS[Happening.ARRIVAL] is None  # arrivals come from the trace, not the heap
    for h in Happening:
        if h is not Happening.ARRIVAL:
            assert World._HANDLERS[h].__name__ == f"_on_{h.name.lower()}"
    handlers = [f for f in World._HANDLERS if f is not None]
    assert len(set(handlers)) == len(handlers)


def test_happening_values_are_fixed():
    # stored in checkpoints' heaps: renumbering would misread every old checkpoint
    assert [(h.name, int(h)) for h in Happening] == [
        ("ARRIVAL", 0),
        ("RESPOND", 1),
        ("AT_PICKUP", 2),
        ("AT_DROPOFF", 3),
        ("RIDER_CANCEL", 4),
        ("EXPIRE", 5),
        ("SHIFT_START", 6),
        ("SHIFT_END", 7),
        ("FAULT", 8),
        ("BACK", 9),
    ]
