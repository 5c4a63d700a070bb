"""The genetic algorithm's random numbers: numpy's ``Generator(PCG64(seed))`` stream, drawn cheaply.

The GA makes tens of scalar draws per child (which feature, which operator, which node), and a numpy call
costs microseconds of Python overhead each (``Generator.integers`` ~2 us, ``Generator.choice`` ~10 us) against
well under one for the arithmetic. ``RandomStream`` draws the same numbers, bit for bit, from the same bit
generator:

* ``integers(low, high)`` is numpy's bounded integer for a range below 2**32: Lemire's multiply-and-reject on
  the generator's 32-bit stream, where each 64-bit PCG64 word serves two 32-bit draws (low half first).
* ``sample(n, k)`` is ``Generator.choice(n, k, replace=False)`` for small ``k``: Floyd's algorithm, then a
  Fisher-Yates shuffle of the k picks, both with those bounded integers.
* ``random``, ``uniform`` and ``normal`` are the generator's own methods: they read whole 64-bit words and
  never touch the 32-bit half-word buffer, so the two kinds of draws interleave exactly as in numpy.

A unit test replays long mixed sequences against numpy for many seeds; a numpy release that changed these
algorithms would fail it (and change every GA result with it).
"""

from __future__ import annotations

import numpy as np

_UINT32_MAX = 0xFFFF_FFFF


class RandomStream:
    """One seeded stream for one GA run (``generator`` is the numpy Generator underneath)."""

    def __init__(self, seed: int) -> None:
        self.generator = np.random.Generator(np.random.PCG64(seed))
        self._next_word = self.generator.bit_generator.random_raw
        self._high_half: int | None = None
        self.random = self.generator.random
        self.uniform = self.generator.uniform
        self.normal = self.generator.normal

    def _uint32(self) -> int:
        if self._high_half is not None:
            half, self._high_half = self._high_half, None
            return half
        word = self._next_word()
        self._high_half = word >> 32
        return word & _UINT32_MAX

    def _at_most(self, limit: int) -> int:
        """A uniform integer in [0, limit], limit < 2**32 (numpy's buffered bounded Lemire)."""
        if limit == 0:
            return 0
        if limit == _UINT32_MAX:
            return self._uint32()
        span = limit + 1
        scaled = self._uint32() * span
        if (scaled & _UINT32_MAX) < span:
            threshold = (_UINT32_MAX - limit) % span
            while (scaled & _UINT32_MAX) < threshold:
                scaled = self._uint32() * span
        return scaled >> 32

    def integers(self, low: int, high: int | None = None) -> int:
        """``Generator.integers(low, high)`` (or ``integers(high)`` from 0): low <= value < high."""
        if high is None:
            low, high = 0, low
        if not 0 < high - low <= _UINT32_MAX + 1:
            raise ValueError(f"integers needs 0 < high - low <= 2**32; got low={low}, high={high}")
        return low + self._at_most(high - 1 - low)

    def sample(self, n: int, k: int) -> list[int]:
        """``Generator.choice(n, k, replace=False)``: k distinct integers from [0, n), in random order."""
        if not 0 <= k <= n <= _UINT32_MAX or (n > 10_000 and k > n // 50):
            # numpy shuffles a whole range for many picks from a large n: a different algorithm.
            raise ValueError(
                f"sample needs 0 <= k <= n < 2**32 and, above n=10,000, k <= n/50; got {n=}, {k=}"
            )
        picked: list[int] = []
        for top in range(n - k, n):
            value = self._at_most(top)
            picked.append(top if value in picked else value)
        for position in range(k - 1, 0, -1):
            other = self._at_most(position)
            picked[position], picked[other] = picked[other], picked[position]
        return picked
