"""Sample canary target: prices an order. Published versions differ by BEHAVIOUR: `stable` and `improved`
price every order; `buggy` fails on orders of more than five items (as a real regression would, only for
some requests, so a smoke test of one small order passes)."""

from __future__ import annotations

import os
from typing import Any

UNIT_PRICE_CENTS = 1250


class PricingError(Exception):
    """The order could not be priced."""


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    behaviour = os.environ.get("BEHAVIOUR", "stable")
    quantity = int(event.get("quantity", 1))
    if quantity < 1:
        raise PricingError(f"quantity {quantity} is not positive")
    if behaviour == "buggy" and quantity > 5:
        raise PricingError(f"bulk discount table missing for quantity {quantity}")
    discount = 0.1 if behaviour == "improved" and quantity >= 10 else 0.0
    total = round(quantity * UNIT_PRICE_CENTS * (1 - discount))
    return {"quantity": quantity, "total_cents": total, "behaviour": behaviour}
