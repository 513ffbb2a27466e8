"""How often one client may start sessions, join, look codes up and guess: token buckets in this process.

A client is a network address, as the model's fair share counts it (app/security.py): a class behind
one school router shares one, so the joining limit leaves room for a whole class joining at once.
Several server processes each keep their own buckets, so behind a balancer a client gets that many
times the rate; the arithmetic in the README holds per process.

Code lookups are counted only when they miss: a bucket is taken before the store is asked (so a burst
of parallel guesses cannot all pass) and given back when the code was live, so students and teachers
who use real codes never run out, and someone trying codes at random gets one try a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    burst: int     # tries allowed at once
    per_s: float   # tries regained each second


class Buckets:
    """One token bucket per key: `burst` tries at once, then `per_s` a second."""

    MAX_KEYS = 20_000  # buckets kept; beyond, the full (idle) ones are dropped

    def __init__(self, rate: Rate):
        self.rate = rate
        self.buckets: dict[str, tuple[float, float]] = {}

    def _level(self, key: str, now: float) -> float:
        tokens, at = self.buckets.get(key, (self.rate.burst, now))
        return min(self.rate.burst, tokens + (now - at) * self.rate.per_s)

    def take(self, key: str, now: float) -> bool:
        """Take one try; False when none is left (nothing is taken then)."""
        tokens = self._level(key, now)
        allowed = tokens >= 1
        self.buckets[key] = (tokens - allowed, now)
        if len(self.buckets) > self.MAX_KEYS:
            idle = now - self.rate.burst / self.rate.per_s
            self.buckets = {k: v for k, v in self.buckets.items() if v[1] > idle}
        return allowed

    def give_back(self, key: str, now: float) -> None:
        self.buckets[key] = (min(self.rate.burst, self._level(key, now) + 1), now)

    def wait_s(self, key: str, now: float) -> int:
        """Whole seconds until the next try is allowed (at least 1), for the sentence."""
        return max(1, math.ceil((1 - self._level(key, now)) / self.rate.per_s))


STARTS = Rate(burst=5, per_s=1 / 60)   # a teacher restarting a few times; a squatter gets one a minute
JOINS = Rate(burst=60, per_s=1.0)      # a class of 60 behind one router joins at once
MISSES = Rate(burst=20, per_s=1.0)     # mistyped codes; guessing runs at one a second (see the README)
GUESSES = Rate(burst=5, per_s=3.0)     # a student's guesses; the latest counts


class ClientLimits:
    """The class routes' buckets, kept on app.state (tests may put more generous ones there)."""

    def __init__(self, starts: Rate = STARTS, joins: Rate = JOINS, misses: Rate = MISSES,
                 guesses: Rate = GUESSES):
        self.starts = Buckets(starts)
        self.joins = Buckets(joins)
        self.misses = Buckets(misses)
        self.guesses = Buckets(guesses)
