"""The columnar batch a shard actor gets and gives back (matcher.dist.wire): what is packed
comes back unpacked field for field and dtype for dtype, whatever the batch holds."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from matcher.config import Policy
from matcher.core.candidates import RequestBatch
from matcher.core.driver_table import Pings
from matcher.core.shard import Matches, TickInput, TickOutput
from matcher.dist.wire import (
    InputBatch,
    OutputBatch,
    from_bytes,
    pack_inputs,
    pack_outputs,
    to_bytes,
    unpack_inputs,
    unpack_outputs,
)


def _arrays(draw, n: int, dtypes: dict[str, str]) -> dict[str, np.ndarray]:
    return {
        name: np.array(draw(st.lists(st.integers(-5, 5), min_size=n, max_size=n)), dtype=dt)
        for name, dt in dtypes.items()
    }


_PING_DT = {
    f.name: dt
    for f, dt in zip(fields(Pings), ("i8", "f8", "f8", "f4", "f4", "i1", "i1", "f4", "f8", "?", "?"), strict=True)
}
_REQ_DT = {"idx": "i8", "lat": "f8", "lng": "f8", "ride_type": "i1", "wait_s": "f8"}
_MATCH_DT = {"req": "i8", "key": "i8", "eta": "f8", "dist": "f8", "lat": "f8", "lng": "f8"}


@st.composite
def tick_inputs(draw) -> TickInput:
    n, m, b, d = (draw(st.integers(0, 6)) for _ in range(4))
    return TickInput(
        draw(st.integers(0, 10**6)),
        draw(st.floats(0, 1e6)),
        Pings(**_arrays(draw, n, _PING_DT)),
        np.array(draw(st.lists(st.integers(0, 99), min_size=d, max_size=d)), np.int64),
        RequestBatch(**_arrays(draw, m, _REQ_DT), **_arrays(draw, b, {"barred_req": "i8", "barred_key": "i8"})),
        draw(st.sampled_from(list(Policy))),
        draw(st.sampled_from([float("inf"), 50.0])),
        reset=draw(st.booleans()),
        expect_state=draw(st.booleans()),
        solve=draw(st.booleans()),
    )


@st.composite
def tick_outputs(draw) -> TickOutput:
    m, d, r = (draw(st.integers(0, 5)) for _ in range(3))
    t = draw(st.none() | st.integers(0, 4))  # the tentative solve's matches (None: not solved)
    return TickOutput(
        draw(st.integers(0, 10**6)),
        3,
        Matches(**_arrays(draw, m, _MATCH_DT)),
        Matches(**_arrays(draw, d, _MATCH_DT)),
        np.array(draw(st.lists(st.integers(0, 99), min_size=r, max_size=r)), np.int64),
        draw(st.integers(0, 100)),
        ping_refusals={"bad_coordinate": draw(st.integers(0, 3)), "out_of_order": draw(st.integers(0, 3))},
        solve_ms=draw(st.floats(0, 100)),
        fallback=draw(st.booleans()),
        drivers=draw(st.integers(0, 100)),
        restarted=draw(st.booleans()),
        cpu_ms=draw(st.floats(0, 100)),
        halo_drivers=draw(st.integers(0, 100)),
        tentative=None if t is None else Matches(**_arrays(draw, t, _MATCH_DT)),
    )


def _same(a, b) -> None:
    """Equal field for field, arrays by value and dtype, nested dataclasses recursively."""
    assert type(a) is type(b)
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), f.name
        elif hasattr(x, "__dataclass_fields__") or hasattr(y, "__dataclass_fields__"):
            _same(x, y)
        else:
            assert x == y, f.name


@given(st.lists(tick_inputs(), min_size=1, max_size=6))
def test_inputs_come_back_as_they_were_packed(inputs):
    got = unpack_inputs(from_bytes(to_bytes(pack_inputs(inputs)), InputBatch))
    assert len(got) == len(inputs)
    for a, b in zip(inputs, got, strict=True):
        _same(a, b)


@given(st.lists(tick_outputs(), min_size=1, max_size=6))
def test_outputs_come_back_as_they_were_packed(outs):
    got = unpack_outputs(from_bytes(to_bytes(pack_outputs(3, outs)), OutputBatch))
    assert len(got) == len(outs)
    for a, b in zip(outs, got, strict=True):
        _same(a, b)


def test_a_batch_is_a_few_arrays_whatever_its_length():
    one = TickInput(1, 2.0, Pings(**{k: np.zeros(3, v) for k, v in _PING_DT.items()}), np.zeros(0, np.int64),
                    RequestBatch(**{k: np.zeros(2, v) for k, v in _REQ_DT.items()},
                                 barred_req=np.zeros(0, np.int64), barred_key=np.zeros(0, np.int64)))  # fmt: skip

    def n_arrays(batch) -> int:
        vals = [getattr(batch, f.name) for f in fields(batch)]
        return sum(isinstance(v, np.ndarray) for v in vals) + sum(len(v) for v in vals if isinstance(v, dict))

    assert n_arrays(pack_inputs([one] * 32)) == n_arrays(pack_inputs([one]))


def test_bytes_hold_one_object_of_the_kind_asked_for():
    batch = pack_outputs(0, [TickOutput(1, 0, Matches.empty(), Matches.empty(), np.empty(0, np.int64), 0)])
    blob = to_bytes(batch)
    assert isinstance(blob, bytes)
    assert isinstance(from_bytes(blob, OutputBatch), OutputBatch)
    with pytest.raises(TypeError, match="expected InputBatch, got OutputBatch"):
        from_bytes(blob, InputBatch)
