"""Client country from a MaxMind database (``geoip: {database: PATH}``), exposed to
filters as the property ``edgegw.geo.country`` (read by filters/geo)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import maxminddb

from edgegw.errors import FilterLoadError

CountryLookup = Callable[[str], str | None]


def open_country_lookup(database: Path) -> CountryLookup:
    """A cached ``ip -> ISO country code`` function; blocking (opens the file)."""
    try:
        reader = maxminddb.open_database(str(database))
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise FilterLoadError("geoip", f"cannot open {database}: {exc}") from exc

    @functools.lru_cache(maxsize=65536)
    def country(ip: str) -> str | None:
        try:
            record = reader.get(ip)
        except ValueError:  # not an IP address (a unix socket peer, say)
            return None
        if not isinstance(record, dict):
            return None
        for key in ("country", "registered_country"):
            section = record.get(key)
            code = section.get("iso_code") if isinstance(section, dict) else None
            if isinstance(code, str):
                return code
        return None

    return country
