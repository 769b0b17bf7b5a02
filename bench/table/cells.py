"""The markdown table's cells: numbers as text, and whether a target is met."""

from __future__ import annotations

Row = tuple[str, str, str, str]  # measure, result, target, met


def fmt(value, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value < 10:
        return f"{value:.3g}{unit}"
    return f"{round(value):,}{unit}"


def met(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "no")


def at_most(value, limit) -> bool | None:
    return None if value is None else value <= limit


def spread(d: dict, unit: str) -> str:
    return f"{fmt(d['first'])} / {fmt(d['last'])} / {fmt(d['max'])}{unit}"
