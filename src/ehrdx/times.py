"""Times as ehrdx reads them: ISO 8601, with or without a UTC offset.

Inside ehrdx every time is a naive UTC time (seconds since 1970-01-01 UTC). A time written with an
offset (`2020-01-01T10:00:00+02:00`, `2020-01-01T08:00:00Z`) is converted to UTC
(`2020-01-01T08:00:00`); a time without one is taken as written. The same rule holds in events
tables, prediction times files, label maps (`introduced_at`), `--until` and `--time`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

# Tried only for the cells that none of the plain ISO forms parsed (%#z reads +02:00, +0200 and Z).
OFFSET_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z", "%Y-%m-%d %H:%M%#z")


def utc_seconds(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 date or time; raises ValueError when unreadable."""
    moment = datetime.fromisoformat(text.strip())
    moment = moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return moment.timestamp()


def naive_utc(times: pl.Series) -> pl.Series:
    """Times with a time zone as naive UTC times; naive times unchanged."""
    if isinstance(times.dtype, pl.Datetime) and times.dtype.time_zone is not None:
        return times.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return times


def parse_offset_times(text: pl.Series, parsed: pl.Series) -> pl.Series:
    """Fill the cells of `parsed` (naive, from `text`) left empty by the plain forms with times that carry
    a UTC offset, converted to UTC."""
    left = parsed.is_null() & text.is_not_null() & (text != "")
    if not left.any():
        return parsed
    tries = [naive_utc(text.str.to_datetime(format=f, strict=False, exact=True, time_unit="us")).cast(parsed.dtype)
             for f in OFFSET_FORMATS]
    return pl.select(pl.coalesce([parsed, *tries])).to_series().alias(parsed.name)
