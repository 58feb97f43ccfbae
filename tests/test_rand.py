"""Named random streams: fixed values, pinned first outputs, scalar == vector draws."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from matcher.sim import rand
from matcher.sim.rand import RandStream

# The value of each stream is a key of every draw: changing one changes every run.
FIXED = {
    "ACCEPT": 0,
    "RESPONSE": 1,
    "CANCEL": 2,
    "CANCEL_AT": 3,
    "TRIP_LEN": 4,
    "TRIP_DIR": 5,
    "GPS_GAP": 6,
    "GPS_LEN": 7,
    "FAULT": 8,
    "FLEET": 9,
    "REPOSITION": 10,
}

# uniform(seed=0, stream, [0, 1, 2]) and uniform(seed=7, stream, 5, 2), as of the first release.
FIRST = {
    0: ([0.8833108082136426, 0.5665615751722809, 0.5911897341980794], 0.24564222574645145),
    1: ([0.02916616716160869, 0.4850803699281717, 0.47915364289749585], 0.7441898893751617),
    2: ([0.3939488902140399, 0.514549014518314, 0.6943404098388213], 0.3112648539286267),
    3: ([0.17886969812975784, 0.6255880488453088, 0.6559851692995312], 0.5046365056362797),
    4: ([0.9549295288426328, 0.6588946773613341, 0.31714737786547165], 0.7600986997562084),
    5: ([0.545935644327051, 0.9384100621217674, 0.7782384878611591], 0.4874161725922451),
    6: ([0.938632617199761, 0.5495172458370153, 0.7647466138375614], 0.11095894624351021),
    7: ([0.846415495341654, 0.8576523483242526, 0.8335783603395372], 0.28681844761361175),
    8: ([0.22200910619180658, 0.5413224087580052, 0.3652793512332161], 0.917065495652633),
    9: ([0.4943891211368344, 0.12240475134270112, 0.8448286633637137], 0.9175784569576758),
    10: ([0.24823626263867582, 0.6141873493590908, 0.3219800143798419], 0.5759791492539039),
}


def test_stream_values_are_fixed():
    assert {s.name: int(s) for s in RandStream} == FIXED


def test_every_stream_has_pinned_first_outputs():
    assert set(FIRST) == {int(s) for s in RandStream}, "a new stream: pin its first outputs here"
    for s in RandStream:
        vec, one = FIRST[int(s)]
        assert rand.uniform(0, s, np.arange(3)).tolist() == vec
        assert rand.uniform(7, s, 5, 2).tolist() == [one]
        assert rand.uniform1(7, s, 5, 2) == one


ids = st.integers(min_value=-1, max_value=2**40)


@given(
    seed=st.integers(min_value=0, max_value=2**32),
    stream=st.sampled_from(list(RandStream)),
    key=st.lists(ids, min_size=1, max_size=3),
)
def test_scalar_draw_is_the_vector_draw(seed, stream, key):
    u = rand.uniform1(seed, stream, *key)
    assert u == rand.uniform(seed, stream, *key)[0]
    assert 0.0 <= u < 1.0


@given(seed=st.integers(min_value=0, max_value=2**32), key=st.lists(ids, min_size=1, max_size=3))
def test_streams_are_independent_keys(seed, key):
    draws = [rand.uniform1(seed, s, *key) for s in RandStream]
    assert len(set(draws)) == len(draws)
