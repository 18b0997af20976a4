"""TimerSettings arithmetic and the TimerHeap (schedule / cancel / pop_due / next_deadline)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callkeeper.sip.timers import TimerHeap, TimerSettings


def test_rfc3261_defaults() -> None:
    s = TimerSettings()
    assert (s.t1, s.t2, s.t4, s.trying_delay) == (0.5, 4.0, 5.0, 0.2)
    assert s.timer_a == s.timer_e == s.timer_g == 0.5
    assert s.timer_b == s.timer_f == s.timer_h == 32.0
    assert s.timer_l == s.timer_m == 32.0  # RFC 6026
    assert s.timer_d(reliable=False) == 32.0 and s.timer_d(reliable=True) == 0.0
    assert s.timer_i(reliable=False) == 5.0 and s.timer_i(reliable=True) == 0.0
    assert s.timer_j(reliable=False) == 32.0 and s.timer_j(reliable=True) == 0.0
    assert s.timer_k(reliable=False) == 5.0 and s.timer_k(reliable=True) == 0.0


def test_derived_timers_follow_t1_and_t4() -> None:
    s = TimerSettings(t1=0.1, t2=1.0, t4=2.0, timer_d_unreliable=40.0)
    assert s.timer_b == s.timer_f == s.timer_h == s.timer_l == s.timer_m == pytest.approx(6.4)
    assert s.timer_j(False) == pytest.approx(6.4)
    assert s.timer_i(False) == s.timer_k(False) == 2.0
    assert s.timer_d(False) == 40.0


@pytest.mark.parametrize(
    "kwargs",
    [{"t1": 0.0}, {"t1": 1.0, "t2": 0.5}, {"t4": -1.0}, {"trying_delay": -0.1}],
)
def test_inconsistent_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TimerSettings(**kwargs)


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        TimerSettings().t1 = 1.0  # type: ignore[misc]


# --- TimerHeap ------------------------------------------------------------------------------


def test_pop_due_returns_keys_in_deadline_order_ties_in_scheduling_order() -> None:
    heap: TimerHeap[str] = TimerHeap()
    heap.schedule(3.0, "c")
    heap.schedule(1.0, "a")
    heap.schedule(2.0, "b1")
    heap.schedule(2.0, "b2")
    assert heap.next_deadline() == 1.0
    assert heap.pop_due(0.5) == []
    assert heap.pop_due(2.0) == ["a", "b1", "b2"]
    assert len(heap) == 1 and "c" in heap and "a" not in heap
    assert heap.pop_due(10.0) == ["c"]
    assert heap.next_deadline() is None


def test_rescheduling_moves_a_key_and_cancel_forgets_it() -> None:
    heap: TimerHeap[str] = TimerHeap()
    heap.schedule(1.0, "x")
    heap.schedule(5.0, "x")  # moved later: the old entry is stale
    assert heap.deadline("x") == 5.0
    assert heap.next_deadline() == 5.0
    assert heap.pop_due(4.0) == []
    heap.schedule(2.0, "y")
    assert heap.cancel("y") is True
    assert heap.cancel("y") is False
    assert heap.deadline("y") is None
    assert heap.pop_due(10.0) == ["x"]
    assert len(heap) == 0


def test_cancel_compacts_so_stale_entries_do_not_pile_up() -> None:
    heap: TimerHeap[int] = TimerHeap()
    for key in range(10_000):
        heap.schedule(float(key), key)
    for key in range(9_990):
        heap.cancel(key)
    assert len(heap) == 10
    assert len(heap._heap) <= 2 * len(heap) + 64
    assert heap.next_deadline() == 9_990.0
    assert heap.pop_due(1e9) == list(range(9_990, 10_000))


def test_clear() -> None:
    heap: TimerHeap[str] = TimerHeap()
    heap.schedule(1.0, "a")
    heap.clear()
    assert len(heap) == 0 and heap.next_deadline() is None and heap.pop_due(5.0) == []


operations = st.lists(
    st.one_of(
        st.tuples(st.just("schedule"), st.integers(0, 8), st.integers(0, 50)),
        st.tuples(st.just("cancel"), st.integers(0, 8), st.just(0)),
        st.tuples(st.just("pop"), st.just(0), st.integers(0, 50)),
    ),
    max_size=80,
)


@given(operations)
def test_heap_behaves_like_a_dict_of_deadlines(ops: list[tuple[str, int, int]]) -> None:
    heap: TimerHeap[int] = TimerHeap()
    model: dict[int, tuple[float, int]] = {}
    order = 0
    for op, key, value in ops:
        if op == "schedule":
            order += 1
            heap.schedule(float(value), key)
            model[key] = (float(value), order)
        elif op == "cancel":
            assert heap.cancel(key) == (key in model)
            model.pop(key, None)
        else:
            due = sorted((v for v in model.items() if v[1][0] <= value), key=lambda kv: kv[1])
            assert heap.pop_due(float(value)) == [k for k, _ in due]
            for k, _ in due:
                del model[k]
        expected = min((when for when, _ in model.values()), default=None)
        assert heap.next_deadline() == expected
        assert len(heap) == len(model)
