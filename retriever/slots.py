"""Bounded admission to the model: a few generations at once, a short queue, then "busy".

A llama.cpp context runs one generation at a time, and every waiting request holds a server
thread. `GenerationSlots` admits a request only if it can run now or wait in a bounded queue;
otherwise it raises `SlotsBusy` at once (the API answers 429 with Retry-After), so an overload
is refused early instead of piling up. Waiting is first come, first served.
"""

from __future__ import annotations

import math
import threading
import time
from types import TracebackType


class SlotsBusy(RuntimeError):
    """Every slot is taken and the queue is full; try again in `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the model is busy with other questions; retry in about {retry_after} s")
        self.retry_after = retry_after


def retry_after_estimate(mean_hold_s: float, waiting: int, slots: int) -> int:
    """Roughly when a queue place frees up: the queue ahead drains through the slots."""
    return max(1, min(120, math.ceil(mean_hold_s * (waiting + 1) / slots)))


class GenerationSlots:
    def __init__(self, slots: int = 1, queue: int = 8) -> None:
        if slots < 1 or queue < 0:
            raise ValueError("slots must be >= 1 and queue >= 0")
        self.slots = slots
        self.queue = queue
        self._cond = threading.Condition()
        self._active = 0
        self._waiting = 0
        self._mean_hold_s = 1.0  # moving average of how long a generation holds a slot

    def admit(self) -> Ticket:
        """A place now (running or queued), never blocking; `SlotsBusy` when there is none."""
        with self._cond:
            # Nobody overtakes a waiting request: a free slot goes to the queue first.
            if self._active < self.slots and self._waiting == 0:
                self._active += 1
                return Ticket(self, "", running=True)
            if self._waiting < self.queue:
                self._waiting += 1
                return Ticket(self, "", running=False)
            raise SlotsBusy(self._retry_after())

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {
                "slots": self.slots,
                "queue": self.queue,
                "active": self._active,
                "waiting": self._waiting,
            }

    def _retry_after(self) -> int:
        return retry_after_estimate(self._mean_hold_s, self._waiting, self.slots)

    # The two steps a Ticket delegates; shared slots (retriever/shared_slots.py) replace them.
    def _wait(self, ticket_id: str, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._active >= self.slots:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            self._waiting -= 1
            self._active += 1
            return True

    def _release(self, ticket_id: str, running: bool, held_s: float | None) -> None:
        with self._cond:
            if not running:
                self._waiting -= 1  # left the queue without running (client gone)
                return
            self._active -= 1
            if held_s is not None:
                self._mean_hold_s = 0.7 * self._mean_hold_s + 0.3 * held_s
            self._cond.notify()  # Condition wakes its waiters in arrival order


class Ticket:
    """One admitted request. `wait()` blocks until it holds a slot; `release()` gives back
    whatever it holds (idempotent). As a context manager: wait on enter, release on exit."""

    def __init__(self, slots: GenerationSlots, ticket_id: str, running: bool) -> None:
        self._slots = slots
        self.id = ticket_id  # how shared slots know it; empty for in-process slots
        self._running = running
        self._released = False
        self._since = time.perf_counter() if running else None

    @property
    def running(self) -> bool:
        return self._running

    def wait(self, timeout: float | None = None) -> bool:
        """Block until this request holds a slot (True), or `timeout` seconds pass (False; the
        ticket is still queued until `release()`)."""
        if self._running:
            return True
        if self._released or not self._slots._wait(self.id, timeout):
            return False
        self._running = True
        self._since = time.perf_counter()
        return True

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        held = time.perf_counter() - self._since if self._since is not None else None
        self._slots._release(self.id, self._running, held)

    def __enter__(self) -> Ticket:
        self.wait()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
