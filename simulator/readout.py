"""The meter's optical readout (IEC 62056-21 style data block) as the report reads it."""

from __future__ import annotations


def parse_readout(text: str) -> dict:
    """OBIS code -> value text from an IEC 62056-21 style data block."""
    values = {}
    for line in text.replace("\x02", "\r\n").split("\r\n"):
        if "(" in line and line.endswith(")"):
            code, _, rest = line.partition("(")
            values[code] = rest[:-1].split("*")[0]
    return values


def kwh_text_to_wh(text: str | None) -> float | None:
    """'12.345678' kWh -> 12345.678 Wh, exactly from the digits."""
    if text is None:
        return None
    whole, _, frac = text.partition(".")
    frac = (frac + "000000")[:6]
    return (int(whole) * 1_000_000 + int(frac)) / 1000

