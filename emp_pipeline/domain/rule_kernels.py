"""Compiled rule evaluation: the array side of ``genome`` signals, in numba.

A population's rule trees are evaluated in two compiled passes instead of numpy calls per tree node:

1. **Leaves** (``left op right`` comparisons) are computed once per distinct leaf and kept as rows of a
   boolean matrix over the flattened (bar, instrument) cells; genomes of one population, and of successive
   GA generations, share most of their leaves, so most rows are computed once per run.
2. **Programs**: every rule tree is flattened into a postfix program over leaf rows (``LEAF row``,
   ``ALL n``, ``ANY n``), and one call runs every genome's three programs (long entry, short entry, exit)
   and its position-state machine, writing the int8 signals the backtest kernel reads.

The semantics are those documented in ``genome``: NaN compares false; a cross needs the comparison false and
both sides defined on the previous bar of the same instrument; exit, a disallowed regime, features still
warming up, or long and short entries on the same bar make the bar flat; the state carries forward between
events. This module knows nothing about genomes: ``genome`` compiles trees into these arrays.
"""

from __future__ import annotations

import numpy as np
from numba import njit

OP_GREATER, OP_LESS, OP_CROSSES_ABOVE, OP_CROSSES_BELOW = 0, 1, 2, 3
PROGRAM_LEAF, PROGRAM_ALL, PROGRAM_ANY = 0, 1, 2
SLOT_LONG, SLOT_SHORT, SLOT_EXIT = 0, 1, 2


@njit(cache=True)
def compute_leaves(
    values: np.ndarray,
    lefts: np.ndarray,
    ops: np.ndarray,
    rights: np.ndarray,
    thresholds: np.ndarray,
    rows: np.ndarray,
    out: np.ndarray,
) -> None:
    """Write leaf k into ``out[rows[k]]`` (flattened cells, bar-major).

    ``values`` is (n_features, n_bars, n_instruments), C-contiguous; a leaf compares feature ``lefts[k]``
    with feature ``rights[k]``, or with ``thresholds[k]`` when ``rights[k] < 0``.
    """
    n_instruments = values.shape[2]
    n_cells = values.shape[1] * n_instruments
    flat = values.reshape(values.shape[0], n_cells)
    now = np.empty(n_cells, dtype=np.bool_)
    for k in range(lefts.shape[0]):
        left = flat[lefts[k]]
        by_feature = rights[k] >= 0
        right = flat[rights[k] if by_feature else lefts[k]]
        threshold = thresholds[k]
        op = ops[k]
        row = out[rows[k]]
        crossing = op in (OP_CROSSES_ABOVE, OP_CROSSES_BELOW)
        compared = now if crossing else row
        if by_feature and op in (OP_GREATER, OP_CROSSES_ABOVE):
            for c in range(n_cells):
                compared[c] = left[c] > right[c]
        elif by_feature:
            for c in range(n_cells):
                compared[c] = left[c] < right[c]
        elif op in (OP_GREATER, OP_CROSSES_ABOVE):
            for c in range(n_cells):
                compared[c] = left[c] > threshold
        else:
            for c in range(n_cells):
                compared[c] = left[c] < threshold
        if not crossing:
            continue
        # A cross: true now, false on the previous bar of the instrument, with both sides defined there
        # (x == x is False only for NaN). Offset slices let the loop vectorise.
        for c in range(min(n_instruments, n_cells)):
            row[c] = False
        n_pairs = n_cells - n_instruments
        if n_pairs <= 0:
            continue
        current = now.view(np.uint8)[n_instruments:]
        previous = now.view(np.uint8)[:n_pairs]
        left_before = left[:n_pairs]
        right_before = right[:n_pairs]
        crossed = row.view(np.uint8)[n_instruments:]
        if by_feature:
            for c in range(n_pairs):
                defined = (left_before[c] == left_before[c]) & (right_before[c] == right_before[c])
                crossed[c] = current[c] & (previous[c] ^ np.uint8(1)) & np.uint8(defined)
        else:
            for c in range(n_pairs):
                defined = left_before[c] == left_before[c]
                crossed[c] = current[c] & (previous[c] ^ np.uint8(1)) & np.uint8(defined)


@njit(cache=True)
def run_program(
    leaves: np.ndarray, program: np.ndarray, start: int, stop: int, scratch: np.ndarray, empty: np.ndarray
) -> np.ndarray:
    """The cells where the postfix program ``program[start:stop]`` holds (``empty`` when it has no code).

    Leaves are read in place; groups combine into ``scratch`` rows (one per stack level). The result is a
    leaf row, a scratch row or ``empty``: read it before the scratch is reused.
    """
    n_cells = empty.shape[0]
    if start == stop:
        return empty
    # A stack entry is a leaf row (>= 0) or scratch row ``-1 - level``.
    stack = np.empty(stop - start, dtype=np.int64)
    depth = 0
    for pc in range(start, stop):
        code = program[pc, 0]
        argument = program[pc, 1]
        if code == PROGRAM_LEAF:
            stack[depth] = argument
            depth += 1
            continue
        base = depth - argument
        target = scratch[base]
        for k in range(base, depth):
            entry = stack[k]
            source = leaves[entry] if entry >= 0 else scratch[-1 - entry]
            if k == base:
                if entry != -1 - base:
                    for c in range(n_cells):
                        target[c] = source[c]
            elif code == PROGRAM_ALL:
                for c in range(n_cells):
                    target[c] = target[c] & source[c]
            else:
                for c in range(n_cells):
                    target[c] = target[c] | source[c]
        stack[base] = -1 - base
        depth = base + 1
    return leaves[stack[0]] if stack[0] >= 0 else scratch[0]


@njit(cache=True)
def population_signal_states(
    leaves: np.ndarray,
    program: np.ndarray,
    bounds: np.ndarray,
    regime_masks: np.ndarray,
    regime_bits: np.ndarray,
    n_instruments: int,
    stack_depth: int,
    out: np.ndarray,
) -> None:
    """Signals of every genome into ``out`` (n_genomes, n_bars, n_instruments) int8.

    ``bounds[g, slot]`` = (start, stop) of genome g's long-entry, short-entry and exit programs in
    ``program`` (start == stop: no rule). ``regime_bits`` (flattened cells, uint8) has bit ``code`` set for
    the cell's regime (0 where features are still warming up or no regime is known); ``regime_masks[g]`` has
    the bits of the regimes genome g may hold a position in.
    """
    n_cells = regime_bits.shape[0]
    depth = max(stack_depth, 1)
    scratch = np.empty((3, depth, n_cells), dtype=np.bool_)
    empty = np.zeros(n_cells, dtype=np.bool_)
    event_value = np.empty(n_cells, dtype=np.int8)
    event_mask = np.empty(n_cells, dtype=np.int8)
    for g in range(bounds.shape[0]):
        long_event = run_program(leaves, program, bounds[g, 0, 0], bounds[g, 0, 1], scratch[0], empty)
        short_event = run_program(leaves, program, bounds[g, 1, 0], bounds[g, 1, 1], scratch[1], empty)
        exit_event = run_program(leaves, program, bounds[g, 2, 0], bounds[g, 2, 1], scratch[2], empty)
        mask = np.uint8(regime_masks[g])
        # What each bar does to the state: stay open (or open) long/short, go flat, or nothing (mask 0).
        for c in range(n_cells):
            going_long = long_event[c]
            going_short = short_event[c]
            stays_open = (
                (not exit_event[c]) & ((regime_bits[c] & mask) != 0) & (not (going_long & going_short))
            )
            event_mask[c] = -np.int8((not stays_open) | going_long | going_short)
            event_value[c] = np.int8(stays_open & going_long) - np.int8(stays_open & going_short)
        # Carry the state forward per instrument without branches: events are too irregular to predict.
        signals = out[g].reshape(n_cells)
        for i in range(n_instruments):
            state = np.int8(0)
            for c in range(i, n_cells, n_instruments):
                taken = event_mask[c]
                state = (event_value[c] & taken) | (state & ~taken)
                signals[c] = state
