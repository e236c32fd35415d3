"""Kubernetes quantities (`512Mi`, `2G`, `250m`) as numbers: pure, so that the
config layer and the components share one parser without importing each other."""

from __future__ import annotations

import re

# A Kubernetes quantity: a number, then a binary or decimal SI suffix or a decimal exponent.
_QUANTITY = re.compile(
    r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:(?P<unit>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)|[eE](?P<exponent>[+-]?[0-9]+))?"
)
_BINARY_UNITS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
                 "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity_bytes(quantity: str) -> float:
    """Value of a Kubernetes quantity such as `512Mi` or `2G` (also cpu `250m`)."""
    match = _QUANTITY.fullmatch(str(quantity))
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    number = float(match["number"])
    if match["exponent"] is not None:
        return number * 10.0 ** int(match["exponent"])
    return number * _BINARY_UNITS[match["unit"]]
