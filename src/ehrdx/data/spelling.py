"""Names written more than one way: the same label or code in another case or with surrounding spaces."""

from __future__ import annotations

from collections.abc import Iterable


def spelling_clashes(names: Iterable[str]) -> list[list[str]]:
    """Groups of names that differ only in case or surrounding spaces (``Disease_A``, ``disease_a``),
    each ordered most frequent first; empty when every name is written one way."""
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    groups: dict[str, list[str]] = {}
    for name in counts:
        groups.setdefault(name.strip().casefold(), []).append(name)
    return [sorted(g, key=lambda n: (-counts[n], n)) for g in groups.values() if len(g) > 1]

