"""Log levels: the gateway's (``edgegw serve --log-level``), each filter's (``log_level:``
in gateway.yaml) and the admin API's overrides (``PUT /admin/log-levels``), as Envoy's
component log levels.

A filter's ``proxy_log`` lines go to logger ``edgegw.filter.<name>``; the hostcall asks
``Logger.isEnabledFor`` (a cached dict lookup) before it reads or formats anything, so a
line below the level costs a few hundred nanoseconds (edgegw/wasm/hostcalls.py).

Precedence, most specific first: an admin override of a logger, the filter's
``log_level``, then the level of ``edgegw`` (the command line's). The admin listener runs
in the supervisor; it writes the overrides to ``log-levels.json`` in the runtime dir and
asks the workers to reload (edgegw/reload.py), which apply them before anything else.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

#: Names accepted everywhere, proxy-wasm's and Envoy's (``warn``) spelling included.
LEVELS: dict[str, int] = {
    "trace": 5,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
}
ROOT = "edgegw"
FILTER_PREFIX = "edgegw.filter."
OVERRIDES_FILE = "log-levels.json"
ENV_LOG_LEVEL = "EDGEGW_LOG_LEVEL"  # the command line's level, handed to the workers

_overrides: dict[str, str] = {}  # logger -> level name, from the admin API
_configured: dict[str, str] = {}  # logger -> level name from gateway.yaml ("" inherits)


def level_name(level: int) -> str:
    return next((n for n, v in LEVELS.items() if v == level), str(level))


def _apply(name: str) -> None:
    wanted = _overrides.get(name) or _configured.get(name, "")
    logging.getLogger(name).setLevel(LEVELS[wanted] if wanted else logging.NOTSET)


def configure_filter(filter_name: str, level: str) -> logging.Logger:
    """The logger of filter ``filter_name`` at its configured ``level`` ("" inherits),
    unless an admin override holds."""
    name = FILTER_PREFIX + filter_name
    _configured[name] = level
    _apply(name)
    return logging.getLogger(name)


def set_overrides(overrides: dict[str, str]) -> None:
    """Replace the admin overrides; loggers no longer named go back to their config."""
    touched = set(_overrides) | set(overrides)
    _overrides.clear()
    _overrides.update(overrides)
    for name in touched:
        _apply(name)


def configure_root(level: str) -> None:
    """The level of every ``edgegw`` logger without one of its own (the command line's)."""
    _configured[ROOT] = level
    _apply(ROOT)


def validate(doc: object) -> dict[str, str]:
    """``{"<logger>": "<level>" | null}`` from the admin API; raises ValueError."""
    if not isinstance(doc, dict) or not doc:
        raise ValueError('expected a JSON object such as {"edgegw.filter.auth": "debug"}')
    out: dict[str, str] = {}
    for name, level in doc.items():
        if not isinstance(name, str) or not (name == ROOT or name.startswith(ROOT + ".")):
            raise ValueError(f"unknown logger {name!r} (edgegw or edgegw.<component>)")
        if level is not None and level not in LEVELS:
            raise ValueError(f"unknown level {level!r} (one of {', '.join(LEVELS)})")
        out[name] = level or ""
    return out


def read_overrides(runtime_dir: Path | None) -> dict[str, str]:
    if runtime_dir is None:
        return {}
    try:
        doc = json.loads((runtime_dir / OVERRIDES_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in doc.items() if isinstance(v, str) and v in LEVELS}


def write_overrides(runtime_dir: Path, changes: dict[str, str]) -> dict[str, str]:
    """Merge ``changes`` ("" removes an override) into the file; returns the result."""
    merged = read_overrides(runtime_dir)
    for name, level in changes.items():
        if level:
            merged[name] = level
        else:
            merged.pop(name, None)
    tmp = runtime_dir / (OVERRIDES_FILE + ".tmp")
    tmp.write_text(json.dumps(merged))
    tmp.replace(runtime_dir / OVERRIDES_FILE)
    return merged


def refresh(runtime_dir: Path | None) -> None:
    """Apply the overrides file (a worker, at each reload)."""
    set_overrides(read_overrides(runtime_dir))
