"""The stabilization windows' structure, History's Recommendations, against a plain rescan.

Recommendations answer "the lowest and the highest value newer than a cutoff" from monotonic
stacks and a cursor (O(1) amortized per cycle); rescan_extremes scans each window, as
stabilize_recommendation did before there were stacks. Every answer must be the rescan's, and
a view must never change once made, whatever is appended to it or to the views after it.
"""

from __future__ import annotations

import copy
import pickle
import random
import threading
from bisect import bisect_right

import pytest

from autoscaler.model import History, Recommendations, TimedValue, rescan_extremes, window_extremes

Add = tuple[str, float, int]  # ("add", at_seconds, value): append to the newest view
Ask = tuple[str, float, float, tuple[int | None, int | None]]  # ("ask", low cutoff, high cutoff, expected)


def add(at_seconds: float, value: int) -> Add:
    return ("add", at_seconds, value)


def ask(low_cutoff_seconds: float, high_cutoff_seconds: float, lowest: int | None, highest: int | None) -> Ask:
    return ("ask", low_cutoff_seconds, high_cutoff_seconds, (lowest, highest))


# Each case appends to one growing Recommendations and asks for both windows' extremes between
# appends: (lowest newer than the low cutoff, highest newer than the high cutoff), None = empty.
WINDOW_CASES: dict[str, list[Add | Ask]] = {
    "empty": [ask(0, 0, None, None)],
    # time.After is strict in the HPA: an entry exactly at the cutoff has left the window.
    "cutoff-is-exclusive": [add(10, 3), ask(10, 10, None, None), ask(9.5, 10, 3, None)],
    "up-window-of-0-is-empty": [add(0, 5), add(1, 2), add(2, 4), ask(2, -1, None, 5)],
    "max-older-than-min": [
        add(0, 9), add(1, 1), add(2, 5),
        ask(-1, -1, 1, 9), ask(0.5, 0.5, 1, 5), ask(1.5, 1.5, 5, 5),
    ],
    "equal-values": [add(0, 4), add(1, 4), add(2, 4), ask(-1, -1, 4, 4), ask(1.5, 1.5, 4, 4)],
    "equal-times": [add(1, 2), add(1, 7), add(2, 3), ask(0.5, 0.5, 2, 7), ask(1, 1, 3, 3)],
    "window-slides-forward": [
        add(0, 3), add(1, 5), add(2, 2), ask(0, 0, 2, 5),
        add(3, 2), ask(1, 1, 2, 2),
        add(4, 6), ask(2, 2, 2, 6),
        add(5, 1), ask(3, 3, 1, 6),
    ],
    # A changed window (a reload) or a clock set back: the cursor has passed the new start.
    "cutoff-moves-back": [
        add(0, 9), add(1, 1), add(2, 5), add(3, 3),
        ask(2.5, 2.5, 3, 3), ask(-1, -1, 1, 9), ask(0.5, 0.5, 1, 5),
    ],
    # A new high pops the entries the cursor stood on.
    "pops-pass-the-cursor": [
        add(0, 9), add(1, 5), add(2, 4), ask(1.5, 1.5, 4, 4),
        add(3, 8), ask(1.5, 1.5, 4, 8), ask(2.5, 2.5, 8, 8),
        add(4, 0), ask(2.5, 2.5, 0, 8),
    ],
    # Entries out of time order (only a hand-built history has them) get no stacks: the
    # answer is the rescan's, bisection over the unordered times included.
    "out-of-order-as-the-rescan": [add(5, 2), add(3, 7), add(6, 1), ask(4, 4, 1, 1), ask(2, 2, 1, 7)],
}


@pytest.mark.parametrize("operations", WINDOW_CASES.values(), ids=list(WINDOW_CASES))
def test_window_extremes(operations: list[Add | Ask]) -> None:
    recommendations = Recommendations()
    for operation in operations:
        if operation[0] == "add":
            _, at_seconds, value = operation
            recommendations = recommendations.appended(TimedValue(at_seconds, value))  # type: ignore[arg-type]
            continue
        _, low_cutoff, high_cutoff, expected = operation
        entries = tuple(recommendations)
        assert recommendations.window_extremes(low_cutoff, high_cutoff) == expected  # type: ignore[arg-type]
        assert rescan_extremes(entries, low_cutoff, high_cutoff) == expected  # type: ignore[arg-type]
        assert window_extremes(entries, low_cutoff, high_cutoff) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(12), ids=[f"seed-{seed}" for seed in range(12)])
def test_windows_match_the_rescan_on_random_histories(seed: int) -> None:
    """Random cycles through recorded(), as stabilize() runs them, mostly on the newest view
    and sometimes on an older one (a branch); windows that change now and then (a reload), a
    clock that sometimes stands still or goes back, pruning; every answer against the rescan,
    and in the end every view made still holds exactly what it held when made."""
    rng = random.Random(seed)
    views: list[Recommendations] = [Recommendations()]
    contents: list[tuple[TimedValue, ...]] = [()]
    windows_seconds = [0.0, 1.0, 5.0, 30.0, 300.0]
    up_window, down_window = 0.0, 30.0
    now = 0.0
    for _ in range(600):
        index = len(views) - 1 if rng.random() < 0.9 else rng.randrange(len(views))
        view, entries = views[index], contents[index]
        now += rng.choice([0.0, 0.5, 1.0, 1.0, 1.0, 5.0, 40.0]) if rng.random() > 0.02 else -3.0
        if rng.random() < 0.05:
            up_window, down_window = rng.choice(windows_seconds), rng.choice(windows_seconds)
        last = entries[-1].value if entries else 3
        value = last if rng.random() < 0.5 else rng.randint(1, 9)
        entry = TimedValue(now, value)
        low_cutoff, high_cutoff = now - up_window, now - down_window

        lowest, highest, extended = view.recorded(entry, low_cutoff, high_cutoff)
        assert (lowest, highest) == rescan_extremes(entries, low_cutoff, high_cutoff)
        grown = entries + (entry,)
        assert extended == grown
        # Asked again with other cutoffs, the new view answers as the rescan too.
        other = now - rng.choice(windows_seconds), now - rng.choice(windows_seconds)
        assert extended.window_extremes(*other) == rescan_extremes(grown, *other)
        if rng.random() < 0.05:
            cutoff = now - rng.choice(windows_seconds)
            extended = extended.newer_than(cutoff)
            grown = grown[bisect_right(grown, cutoff, key=lambda e: e.at_seconds) :]
            assert extended == grown
        views.append(extended)
        contents.append(grown)
    for view, entries in zip(views, contents):
        assert tuple(view) == entries
        assert len(view) == len(entries)


@pytest.mark.parametrize(
    "make",
    [
        lambda entries: entries,
        lambda entries: Recommendations(entries),
        lambda entries: Recommendations(entries[:-1]).appended(entries[-1]),
        # A view that is no longer the newest of its list.
        lambda entries: _older_view(entries),
    ],
    ids=["tuple", "recommendations", "newest-view", "older-view"],
)
@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (500.0, ((0, 9), (200, 2), (450, 5))),  # nothing 2 x 300 s old yet: kept as is
        (700.0, ((450, 5),)),  # the 0 s entry is: everything older than 300 s goes
        (1000.0, ()),
    ],
    ids=["lazy-keeps-all", "prunes-to-the-window", "prunes-everything"],
)
def test_history_pruned_whatever_holds_the_recommendations(
    make: object, now: float, expected: tuple[tuple[float, int], ...]
) -> None:
    entries = (TimedValue(0, 9), TimedValue(200, 2), TimedValue(450, 5))
    pruned = History(make(entries)).pruned(now, 300.0)  # type: ignore[operator]
    assert pruned.recommendations == tuple(TimedValue(at, value) for at, value in expected)
    assert len(pruned.recommendations) == len(expected)


def _older_view(entries: tuple[TimedValue, ...]) -> Recommendations:
    view = Recommendations(entries)
    view.appended(TimedValue(entries[-1].at_seconds + 1, 1))
    return view


def test_appending_twice_to_one_view_branches_and_changes_neither() -> None:
    base = Recommendations((TimedValue(0, 5),)).appended(TimedValue(1, 7))
    high = base.appended(TimedValue(2, 9))
    low = base.appended(TimedValue(2, 1))
    assert base == (TimedValue(0, 5), TimedValue(1, 7))
    assert high == (TimedValue(0, 5), TimedValue(1, 7), TimedValue(2, 9))
    assert low == (TimedValue(0, 5), TimedValue(1, 7), TimedValue(2, 1))
    # Each branch keeps answering for itself: the newest view of its own list, or a rescan.
    assert high.window_extremes(0.5, 0.5) == (7, 9)
    assert low.window_extremes(0.5, 0.5) == (1, 7)
    assert base.window_extremes(0.5, 0.5) == (7, 7)


def test_threads_appending_to_one_view_each_get_their_own_branch() -> None:
    base = Recommendations((TimedValue(0, 5),))
    results: dict[int, list[Recommendations]] = {}

    def grow(value: int) -> None:
        results[value] = [base.appended(TimedValue(1, value)) for _ in range(2000)]

    threads = [threading.Thread(target=grow, args=(value,)) for value in (1, 2, 3, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert base == (TimedValue(0, 5),)
    for value, branches in results.items():
        assert all(branch == (TimedValue(0, 5), TimedValue(1, value)) for branch in branches)


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [
        (Recommendations(), (), True),
        (Recommendations((TimedValue(1, 2),)), (TimedValue(1, 2),), True),
        (Recommendations((TimedValue(1, 2),)), Recommendations((TimedValue(1, 2),)), True),
        (Recommendations((TimedValue(1, 2),)), (TimedValue(1, 3),), False),
        (Recommendations((TimedValue(1, 2),)), [TimedValue(1, 2)], False),  # as a tuple would
    ],
    ids=["empty-tuple", "tuple", "other-view", "different", "list"],
)
def test_recommendations_compare_as_the_tuple_of_their_entries(left: Recommendations, right: object, equal: bool) -> None:
    assert (left == right) is equal
    assert (right == left) is equal
    if equal:
        assert hash(left) == hash(tuple(left))


@pytest.mark.parametrize(
    "clone",
    [copy.copy, copy.deepcopy, lambda view: pickle.loads(pickle.dumps(view))],
    ids=["copy", "deepcopy", "pickle"],
)
def test_recommendations_copy_and_pickle_as_their_entries(clone: object) -> None:
    view = Recommendations((TimedValue(0, 5),)).appended(TimedValue(1, 7))
    cloned = clone(view)  # type: ignore[operator]
    assert cloned == (TimedValue(0, 5), TimedValue(1, 7))
    assert cloned.window_extremes(-1, -1) == (5, 7)
    assert cloned.appended(TimedValue(2, 1)) == (TimedValue(0, 5), TimedValue(1, 7), TimedValue(2, 1))
    assert view == (TimedValue(0, 5), TimedValue(1, 7))
