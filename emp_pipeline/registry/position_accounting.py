"""Average-price position accounting: how one fill changes a net position and its realised PnL.

Pure arithmetic, kept apart from the SQL so it can be reasoned about (and property-tested) on its own.
Quantities are signed (long > 0, short < 0). Realised PnL is net of fees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FLAT_TOLERANCE = 1e-9  # relative to the larger of the two quantities involved; absorbs float residue


@dataclass(frozen=True)
class PositionState:
    quantity: float
    avg_price: float
    realised_pnl: float


def apply_fill(state: PositionState, signed_quantity: float, price: float, fee: float) -> PositionState:
    """Return the position after a fill of `signed_quantity` at `price` paying `fee`.

    Adding to a position moves the average price to the quantity-weighted mean; reducing it realises
    (price - avg_price) on the closed part and keeps the average; crossing zero closes the old position
    entirely and opens the remainder at the fill price.
    """
    held = state.quantity
    scale = max(abs(held), abs(signed_quantity), 1.0)
    new_quantity = held + signed_quantity
    if abs(new_quantity) <= FLAT_TOLERANCE * scale:
        new_quantity = 0.0
    realised = state.realised_pnl - fee

    if held == 0.0 or math.copysign(1.0, held) == math.copysign(1.0, signed_quantity):
        total = abs(held) + abs(signed_quantity)
        avg_price = (abs(held) * state.avg_price + abs(signed_quantity) * price) / total
        return PositionState(quantity=new_quantity, avg_price=avg_price, realised_pnl=realised)

    closed = min(abs(signed_quantity), abs(held))
    realised += closed * (price - state.avg_price) * math.copysign(1.0, held)
    if new_quantity == 0.0:
        avg_price = 0.0
    elif math.copysign(1.0, new_quantity) == math.copysign(1.0, held):
        avg_price = state.avg_price
    else:
        avg_price = price
    return PositionState(quantity=new_quantity, avg_price=avg_price, realised_pnl=realised)
