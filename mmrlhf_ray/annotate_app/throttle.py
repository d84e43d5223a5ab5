"""Login throttling: failed passwords counted per user name and per client address in a
sliding window; past the limit, attempts are refused before any password is checked.

Each try costs scrypt's 16 MiB and ~50 ms, so unlimited guessing is both a brute force
and a denial of service. With the defaults a name takes 5 wrong passwords a minute and an
address 20 (several raters may share one office address); a correct password clears the
name's count. State is per process, in memory (one app process serves a team).

The clock is injectable (``clock()`` returns seconds), so tests move time instead of
sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_KEYS = 100_000  # bound the memory an attacker can make us hold


@dataclass
class LoginThrottle:
    """``retry_after(user, address)`` -> seconds to wait (0: may try); ``failed`` and
    ``succeeded`` record outcomes."""

    per_user: int = 5
    per_address: int = 20
    window_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _fails: dict[str, deque] = field(default_factory=dict)

    def _recent(self, key: str, now: float) -> deque:
        times = self._fails.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._fails[key]
        return times

    def retry_after(self, user: str, address: str) -> float:
        now = self.clock()
        wait = 0.0
        for key, limit in ((f"u:{user}", self.per_user), (f"a:{address}", self.per_address)):
            times = self._recent(key, now)
            if len(times) >= limit:
                wait = max(wait, times[0] + self.window_s - now)
        return wait

    def failed(self, user: str, address: str) -> None:
        now = self.clock()
        if len(self._fails) >= MAX_KEYS:  # drop windows that have passed, then the oldest
            for key in list(self._fails):
                self._recent(key, now)
            while len(self._fails) >= MAX_KEYS:
                self._fails.pop(next(iter(self._fails)))
        for key in (f"u:{user}", f"a:{address}"):
            self._fails.setdefault(key, deque()).append(now)

    def succeeded(self, user: str) -> None:
        self._fails.pop(f"u:{user}", None)
