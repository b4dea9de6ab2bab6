"""Frozen value types shared by the policy, the control loop and the tools.

Nothing here does I/O: a snapshot is what the loop observed, a decision is what the policy
concluded, history is what the policy remembers. The types built every cycle (and every step of
`simulate`) are NamedTuples: immutable like frozen dataclasses, several times cheaper to create.
History's recommendations are a Recommendations: as immutable, but appended to and asked for a
window's lowest and highest value in O(1) amortized, so a cycle costs the same whatever the
stabilization window. All times are seconds on one clock that the caller chooses (monotonic in
the daemon, trace time in the simulator).
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice
from operator import attrgetter
from typing import Literal, NamedTuple, overload


class Metric(StrEnum):
    CPU = "cpu"
    MEMORY = "memory"
    REQUESTS_PER_SECOND = "requests_per_second"
    RESPONSE_TIME_MS = "response_time_ms"
    QUEUE = "queue"


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"
    NONE = "none"


class ReplicaSample(NamedTuple):
    """One replica as the policy sees it. None = no reading ("missing"), never 0."""

    name: str
    ready: bool
    age_seconds: float
    cpu_percent: float | None = None
    memory_percent: float | None = None
    requests_per_second: float | None = None
    response_time_ms: float | None = None

    def value(self, metric: Metric) -> float | None:
        attribute = SAMPLE_ATTRIBUTES.get(metric)
        return getattr(self, attribute) if attribute else None


SAMPLE_ATTRIBUTES = {
    Metric.CPU: "cpu_percent",
    Metric.MEMORY: "memory_percent",
    Metric.REQUESTS_PER_SECOND: "requests_per_second",
    Metric.RESPONSE_TIME_MS: "response_time_ms",
}


class ExternalReading(NamedTuple):
    """One external metric's value this cycle (a query's result, a queue's length)."""

    name: str
    value: float | None  # None: the source gave no usable answer ("missing", never 0)
    error: str | None = None  # the source's own sentence when value is None


class ServiceSnapshot(NamedTuple):
    """Everything observed about one service in one cycle.

    `replicas` are the live replicas that count toward the current size (not draining).
    `metrics_error` is set when the replicas' metrics source failed as a whole this cycle
    (external metrics have their own errors, in `external`).
    """

    service: str
    replicas: tuple[ReplicaSample, ...]
    queue_current: float | None = None
    metrics_error: str | None = None
    external: tuple[ExternalReading, ...] = ()

    @property
    def current_replicas(self) -> int:
        return len(self.replicas)


# Why a metric proposes what it does; evaluate() decides on these codes, never on the message.
#   scale             target tracking computed ceil(ratio x count) (which may equal the count)
#   within_tolerance  the ratio is inside the tolerance band: the current count
#   hold              the missing/not-ready rework flipped the direction or landed in the band,
#                     or moved the count against the ratio: the current count
#   no_reading        no usable reading: no proposal (None)
#   step              a step band matched and adjusted the count
#   no_step_matches   step scaling with no matching band: the current count
ProposalReason = Literal["scale", "within_tolerance", "hold", "no_reading", "step", "no_step_matches"]


class MetricProposal(NamedTuple):
    """What one metric asks for, and why."""

    metric: Metric | str  # a built-in Metric, or an external metric's name
    utilization: float | None  # the pooled value compared with the target (percent, rps, ms)
    target: float
    proposal: int | None  # None = this metric could not be evaluated
    message: str  # for people; never parsed
    # Last and defaulted so that five-field positional construction keeps working; the policy
    # always sets it, "" only comes from callers that build proposals by hand.
    reason: ProposalReason | Literal[""] = ""


class Decision(NamedTuple):
    service: str
    current: int
    desired: int
    reason: str  # short machine-readable cause: a metric label and a log field
    message: str  # one human line: "cpu 87% > target 60% -> 2 -> 3"
    proposals: tuple[MetricProposal, ...] = ()
    recommendation: int | None = None  # desired before stabilization, rate limits and bounds

    @property
    def direction(self) -> Direction:
        if self.desired > self.current:
            return Direction.UP
        if self.desired < self.current:
            return Direction.DOWN
        return Direction.NONE


class TimedValue(NamedTuple):
    at_seconds: float
    value: int


_at_seconds = attrgetter("at_seconds")


def _window_head(stack: list[TimedValue], head: int, cutoff_seconds: float) -> int:
    """Index of the first stack entry newer than cutoff_seconds, from the previous one: forward
    while cutoffs move forward (amortized O(1)), by bisection when one moved back. The stack's
    last entry is newer than the cutoff."""
    if head and stack[head - 1].at_seconds > cutoff_seconds:
        return bisect_right(stack, cutoff_seconds, key=_at_seconds)
    while stack[head].at_seconds <= cutoff_seconds:
        head += 1
    return head
_value = attrgetter("value")
# Makes a Recommendations view of a list that exists already, without __init__'s copy.
_new_object = object.__new__


class _Log:
    """The list behind Recommendations views, and what it knows about their windows.

    `highs` holds the entries whose value is above every later value (so values strictly
    decrease along it) and `lows` those below every later value (strictly increasing). The
    highest value among the entries newer than a cutoff is then that of the first entry of
    `highs` newer than it: the last occurrence of that maximum has nothing as high after it, so
    it is in `highs`, and everything in `highs` before it is older. Likewise for `lows`. A push
    pops what the new entry outdoes, O(1) amortized; a cursor per stack remembers where the last
    cutoff fell, so while cutoffs move forward (a clock) finding the first entry newer than the
    cutoff is O(1) amortized too.
    """

    __slots__ = ("entries", "highs", "lows", "high_head", "low_head", "ordered", "lock")
    entries: list[TimedValue]
    highs: list[TimedValue]
    lows: list[TimedValue]
    high_head: int  # every entry of highs before it is no newer than the last high cutoff
    low_head: int
    ordered: bool  # entries are oldest first; only then do the stacks exist
    lock: threading.Lock

    def __init__(
        self, entries: list[TimedValue], stacks: tuple[list[TimedValue], list[TimedValue]] | None = None
    ) -> None:
        """`stacks`: highs and lows, when the caller has them already (ordered entries only)."""
        self.entries = entries
        self.high_head = self.low_head = 0
        # Views are shared freely, between threads too: claiming the end of the list to append
        # and using the stacks that belong to that end happen under this lock.
        self.lock = threading.Lock()
        if stacks is not None:
            self.highs, self.lows = stacks
            self.ordered = True
            return
        self.highs = []
        self.lows = []
        # History keeps entries in time order. One built by hand out of order gets no stacks:
        # its windows are scanned, as before there were stacks.
        self.ordered = all(a.at_seconds <= b.at_seconds for a, b in zip(entries, islice(entries, 1, None)))
        if self.ordered:
            for entry in entries:
                self.push(entry)

    def push(self, entry: TimedValue) -> None:
        """Adds `entry`, no older than any entry, to the stacks (not to `entries`)."""
        value = entry.value
        highs, lows = self.highs, self.lows
        if highs and value == highs[-1].value:
            # The usual cycle: the same value as the newest entry, which ends both stacks and
            # which the new entry outdoes in both.
            highs[-1] = lows[-1] = entry
            return
        while highs and highs[-1].value <= value:
            highs.pop()
        # A cursor the pops went past stays true at the new end: what is left before it is
        # still no newer than its cutoff.
        if self.high_head > len(highs):
            self.high_head = len(highs)
        highs.append(entry)
        while lows and lows[-1].value >= value:
            lows.pop()
        if self.low_head > len(lows):
            self.low_head = len(lows)
        lows.append(entry)

    def extremes(self, low_cutoff_seconds: float, high_cutoff_seconds: float) -> tuple[int | None, int | None]:
        """Recommendations.window_extremes of all the entries, from the stacks. The caller holds
        the lock, and the log is ordered and not empty."""
        newest = self.entries[-1].at_seconds
        lowest = highest = None
        # The newest entry ends both stacks, so a window without it is empty (the up window of
        # 0 s). Else the window starts at the first stack entry newer than the cutoff; a cutoff
        # moves back when the window changed or the clock was set back.
        if newest > low_cutoff_seconds:
            self.low_head = _window_head(self.lows, self.low_head, low_cutoff_seconds)
            lowest = self.lows[self.low_head].value
        if newest > high_cutoff_seconds:
            self.high_head = _window_head(self.highs, self.high_head, high_cutoff_seconds)
            highest = self.highs[self.high_head].value
        return lowest, highest


def rescan_extremes(
    entries: Sequence[TimedValue],
    low_cutoff_seconds: float,
    high_cutoff_seconds: float,
    size: int | None = None,
) -> tuple[int | None, int | None]:
    """window_extremes by scanning each window: the reference that the stacks must match, and
    the answer where there are none (a tuple, an older view, entries out of order). Only the
    first `size` entries count (by default all)."""
    if size is None:
        size = len(entries)
    if not size:
        return None, None
    lowest = highest = None
    # Oldest first, so each window is a suffix: find it by bisection, take min/max at C speed.
    newest = entries[size - 1].at_seconds
    if newest > low_cutoff_seconds:
        start = bisect_right(entries, low_cutoff_seconds, 0, size, key=_at_seconds)
        lowest = min(map(_value, entries[start:size]))
    if newest > high_cutoff_seconds:
        start = bisect_right(entries, high_cutoff_seconds, 0, size, key=_at_seconds)
        highest = max(map(_value, entries[start:size]))
    return lowest, highest


class Recommendations(Sequence[TimedValue]):
    """History.recommendations as evaluate() keeps them: an immutable sequence of TimedValue,
    oldest first, equal to the tuple of its entries, that also answers the stabilization
    windows' question (the lowest and the highest value newer than a cutoff) in amortized O(1)
    instead of a scan of each window.

    Views share one append-only list and each sees only its own length. Appending to the newest
    view extends the list in place, which no existing view can see; appending to an older one
    copies what it sees. So a view never changes once made, and the daemon's and the
    simulator's one-way use (append to what the last append returned) never copies.
    """

    __slots__ = ("_log", "_size", "oldest_seconds")
    oldest_seconds: float  # of the first entry (inf when empty), read by History.pruned every cycle

    def __init__(self, entries: Sequence[TimedValue] = ()) -> None:
        self._log = _Log(list(entries))
        self._size = len(self._log.entries)
        self.oldest_seconds = self._log.entries[0].at_seconds if self._size else math.inf

    @classmethod
    def of(cls, entries: Sequence[TimedValue]) -> Recommendations:
        return entries if isinstance(entries, Recommendations) else cls(entries)

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> TimedValue: ...
    @overload
    def __getitem__(self, index: slice) -> Recommendations: ...
    def __getitem__(self, index: int | slice) -> TimedValue | Recommendations:
        if isinstance(index, slice):
            return Recommendations(self._log.entries[: self._size][index])
        if index < 0:
            index += self._size
        if not 0 <= index < self._size:
            raise IndexError("Recommendations index out of range")
        return self._log.entries[index]

    def __iter__(self) -> Iterator[TimedValue]:
        return islice(self._log.entries, self._size)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Recommendations):
            return self._size == other._size and (
                self._log is other._log or self._log.entries[: self._size] == other._log.entries[: other._size]
            )
        if isinstance(other, tuple):
            return tuple(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"Recommendations({tuple(self)!r})"

    def __reduce__(self) -> tuple[type[Recommendations], tuple[tuple[TimedValue, ...]]]:
        # Copied and pickled as its entries: the shared list and its lock stay behind.
        return Recommendations, (tuple(self),)

    def window_extremes(self, low_cutoff_seconds: float, high_cutoff_seconds: float) -> tuple[int | None, int | None]:
        """(the lowest value of the entries newer than low_cutoff_seconds, the highest of those
        newer than high_cutoff_seconds); None for a window with no entry. O(1) amortized on the
        newest view of a list, a scan of each window on others."""
        log = self._log
        if self._size:
            with log.lock:
                if self._size == len(log.entries) and log.ordered:
                    return log.extremes(low_cutoff_seconds, high_cutoff_seconds)
        return rescan_extremes(log.entries, low_cutoff_seconds, high_cutoff_seconds, self._size)

    def recorded(
        self, entry: TimedValue, low_cutoff_seconds: float, high_cutoff_seconds: float
    ) -> tuple[int | None, int | None, Recommendations]:
        """window_extremes, then these recommendations with `entry` after them: what a cycle
        does, under one lock. O(1) amortized when self is the newest view of its list (and
        `entry` no older than its entries); else a scan and a copy."""
        log = self._log
        size = self._size
        with log.lock:
            entries = log.entries
            if size and size == len(entries):
                if log.ordered and entry.at_seconds >= entries[-1].at_seconds:
                    lowest, highest = log.extremes(low_cutoff_seconds, high_cutoff_seconds)
                    log.push(entry)
                else:
                    lowest, highest = rescan_extremes(entries, low_cutoff_seconds, high_cutoff_seconds, size)
                    log.ordered = False
                entries.append(entry)
                extended = _new_object(Recommendations)
                extended._log = log
                extended._size = size + 1
                extended.oldest_seconds = self.oldest_seconds
                return lowest, highest, extended
        # An older view (or an empty one, which has no list worth sharing): a list of its own.
        lowest, highest = rescan_extremes(log.entries, low_cutoff_seconds, high_cutoff_seconds, size)
        return lowest, highest, Recommendations([*islice(log.entries, size), entry])

    def appended(self, entry: TimedValue) -> Recommendations:
        """These recommendations and `entry` after them (see recorded)."""
        return self.recorded(entry, math.inf, math.inf)[2]

    def newer_than(self, cutoff_seconds: float) -> Recommendations:
        """The entries newer than cutoff_seconds, a suffix, for pruning. Slices the entries and
        the stacks at C speed when self is the newest view of its list."""
        log = self._log
        with log.lock:
            if self._size == len(log.entries) and log.ordered:
                # The stacks of a suffix are the stacks' entries in that suffix: whether an entry
                # is outdone depends only on the entries after it.
                return Recommendations._over(
                    _Log(
                        log.entries[bisect_right(log.entries, cutoff_seconds, key=_at_seconds) :],
                        (
                            log.highs[bisect_right(log.highs, cutoff_seconds, key=_at_seconds) :],
                            log.lows[bisect_right(log.lows, cutoff_seconds, key=_at_seconds) :],
                        ),
                    )
                )
        start = bisect_right(log.entries, cutoff_seconds, 0, self._size, key=_at_seconds)
        return Recommendations(log.entries[start : self._size])

    @classmethod
    def _over(cls, log: _Log) -> Recommendations:
        """A view of all of `log`, without __init__'s copy."""
        view = _new_object(cls)
        view._log = log
        view._size = len(log.entries)
        view.oldest_seconds = log.entries[0].at_seconds if log.entries else math.inf
        return view


def window_extremes(
    entries: Sequence[TimedValue], low_cutoff_seconds: float, high_cutoff_seconds: float
) -> tuple[int | None, int | None]:
    """Recommendations.window_extremes of any sequence of entries, oldest first."""
    if isinstance(entries, Recommendations):
        return entries.window_extremes(low_cutoff_seconds, high_cutoff_seconds)
    return rescan_extremes(entries, low_cutoff_seconds, high_cutoff_seconds)


class History(NamedTuple):
    """What the policy remembers between cycles; replaced, never mutated.

    recommendations: raw per-cycle recommendations, for the stabilization windows. evaluate()
      returns them as Recommendations (an append and a window query in O(1) amortized); a tuple
      given by a caller works the same, and is converted on the first append.
    scale_up_events / scale_down_events: replicas added/removed and when, for rate limits.
    consecutive_failures: cycles in a row whose metrics failed as a whole.
    last_active_seconds: with scale to zero, the last cycle when an external metric was above
      its activation value or could not be read (None: not yet evaluated).
    Every sequence is oldest first.
    """

    recommendations: Sequence[TimedValue] = ()
    scale_up_events: tuple[TimedValue, ...] = ()
    scale_down_events: tuple[TimedValue, ...] = ()
    consecutive_failures: int = 0
    last_active_seconds: float | None = None

    def pruned(self, now: float, keep_seconds: float) -> History:
        """Drops entries older than keep_seconds, lazily: only once some entry is twice that
        old, so that most cycles copy nothing and copying costs O(1) amortized per cycle. Every
        reader filters by time, so entries kept a little longer change no result; memory stays
        bounded by twice the window."""
        lazy_cutoff = now - 2 * keep_seconds
        recommendations, up, down = self.recommendations, self.scale_up_events, self.scale_down_events
        # An attribute, not recommendations[0]: that is a Python-level call, and this runs every cycle.
        oldest_recommendation_seconds = (
            recommendations.oldest_seconds
            if isinstance(recommendations, Recommendations)
            else recommendations[0].at_seconds if recommendations else math.inf
        )
        if (
            oldest_recommendation_seconds > lazy_cutoff
            and (not up or up[0].at_seconds > lazy_cutoff)
            and (not down or down[0].at_seconds > lazy_cutoff)
        ):
            return self
        cutoff = now - keep_seconds

        def fresh(entries: tuple[TimedValue, ...]) -> tuple[TimedValue, ...]:
            # Entries are in time order: only a prefix can be stale.
            if not entries or entries[0].at_seconds > cutoff:
                return entries
            return entries[bisect_right(entries, cutoff, key=_at_seconds):]

        return History(
            Recommendations.of(recommendations).newer_than(cutoff)
            if oldest_recommendation_seconds <= cutoff
            else recommendations,
            fresh(up),
            fresh(down),
            self.consecutive_failures,
            self.last_active_seconds,
        )


@dataclass(frozen=True)
class Bounds:
    min_replicas: int
    max_replicas: int
    source: str = "config"  # or the name of the schedule window in force
