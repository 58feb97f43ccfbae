"""`RouteMemo` against the router it remembers: the same answers, computed only for points that moved."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from matcher.dist.memo import RouteMemo

_coord = st.sampled_from([0.0, -0.0, 1.5, 40.75, float("nan"), 1e-300])


@st.composite
def calls(draw):
    """Ticks of (ids, lat, lng, router version): ids repeat (within a call too), points move or
    stay, the version moves now and then."""
    out, version = [], 0
    for _ in range(draw(st.integers(1, 8))):
        version += draw(st.sampled_from([0, 0, 0, 1]))
        n = draw(st.integers(0, 6))
        ids = draw(st.lists(st.integers(0, 2000), min_size=n, max_size=n))
        lat = draw(st.lists(_coord, min_size=n, max_size=n))
        lng = draw(st.lists(_coord, min_size=n, max_size=n))
        out.append((np.array(ids, np.int64), np.array(lat), np.array(lng), version))
    return out


def _router(version):
    """A pure function of the point and the version (as the Router protocol promises)."""

    def f(lat, lng):
        h = np.nan_to_num(lat * 7.0 + lng * 3.0 + version, nan=-5.0)
        return h.astype(np.int32), np.signbit(lat).astype(np.uint64) * np.uint64(2**63) + np.uint64(version)

    return f


@given(calls())
def test_the_memo_answers_as_the_router_and_computes_only_what_moved(ticks):
    memo = RouteMemo((np.int32, np.uint64))
    seen: dict[int, tuple[bytes, int]] = {}
    for ids, lat, lng, version in ticks:
        asked = []

        def compute(la, ln, version=version, asked=asked):
            asked.append(len(la))
            return _router(version)(la, ln)

        got = memo.get(ids, lat, lng, version, compute)
        want = _router(version)(lat, lng)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and np.array_equal(g, w)
        # computed: exactly the ids whose point (as bits) or version differ from what the memo held
        expect = sum(
            seen.get(int(i)) != (np.array([a, b]).tobytes(), version) for i, a, b in zip(ids, lat, lng, strict=True)
        )
        assert sum(asked) == expect
        for i, a, b in zip(ids, lat, lng, strict=True):
            seen[int(i)] = (np.array([a, b]).tobytes(), version)
