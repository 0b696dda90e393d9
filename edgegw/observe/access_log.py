"""The access log, written off the request path.

A request appends one tuple of raw values to ``AccessLog.records`` (``add``); lines are
formatted and written in batches by a loop timer at most ``FLUSH_SECONDS`` later, sooner
once ``BATCH`` records wait, and at shutdown (the app's lifespan shutdown, and ``atexit``
for anything left). One ``write`` per batch, none per request: the per-request cost is the
tuple (docs/benchmarks.md, scenario plain-log). The tuple holds atoms only (no container
the garbage collector would traverse while it waits); the ASGI scope, read for the user
agent, referer and protocol when the line is written, is kept only when those are logged.

A file is opened for appending (``O_APPEND``: the workers' batches never overwrite each
other) and reopened before the next batch once ``request_reopen`` ran: the supervisor calls
it on SIGUSR1 (logrotate's ``postrotate``), each worker sees the marker file change.

The request's trace id (edgegw.tracing) is passed in by the pipeline; it is empty when
tracing is off.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import time
from pathlib import Path
from random import random

from edgegw.config.access_log import DEFAULT_FIELDS
from edgegw.model import AccessLogConfig
from edgegw.observe.access_log_formats import formatter, needs_scope
from edgegw.types import Scope

FLUSH_SECONDS = 0.2
BATCH = 1024  # records that make a flush due at once
REOPEN_FILE = "reopen-logs"
#: One record: time, route, method, path, status, seconds, backend, bytes in, bytes out,
#: request id, trace id, client address, the ASGI scope (None unless a field needs it).
Record = tuple[
    float, str, str, str, int, float, str | None, int, int, bytes, str, str, Scope | None
]

_logs: dict[AccessLogConfig, AccessLog] = {}
_runtime_dir: Path | None = None


class AccessLog:
    """The buffered access log of one ``access_log:`` config (shared by every pipeline
    built with an equal one, so a reload keeps the file and the pending lines)."""

    def __init__(self, config: AccessLogConfig) -> None:
        self.config = config
        self.records: list[Record] = []
        self.sample = config.sample_2xx
        fields = config.fields or DEFAULT_FIELDS
        self._format = formatter(config.format, fields)
        self._keep_scope = needs_scope(config.format, fields)
        self._fd = -1
        self._reopen_seen = _marker()
        self._timer: asyncio.TimerHandle | None = None

    def add(
        self,
        route: str,
        method: str,
        path: str,
        status: int,
        seconds: float,
        backend: str | None,
        bytes_in: int,
        bytes_out: int,
        request_id: bytes,
        trace_id: str,
        scope: Scope,
    ) -> None:
        """Record one request (its line is written later)."""
        if self.sample < 1.0 and 200 <= status < 300 and random() >= self.sample:
            return
        records = self.records
        client = scope.get("client")
        records.append(
            (time.time(), route, method, path, status, seconds, backend, bytes_in,
             bytes_out, request_id, trace_id, client[0] if client else "",
             scope if self._keep_scope else None)
        )  # fmt: skip
        if self._timer is None:
            self._schedule(FLUSH_SECONDS)
        elif len(records) == BATCH:
            self._schedule(0)

    def _schedule(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to defer to
            self.flush()
            return
        self._timer = loop.call_later(delay, self.flush)

    def flush(self) -> None:
        """Format and write every pending record."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        records, self.records = self.records, []
        if not records:
            return
        data = "".join(map(self._format, records)).encode("utf-8", "backslashreplace")
        fd = self._open()
        while data:
            try:
                written = os.write(fd, data)
            except InterruptedError:
                continue
            except OSError:  # a full disk or a closed stdout: the lines are lost, not the request
                return
            data = data[written:]

    def _open(self) -> int:
        if self.config.path == "stdout":
            return 1
        marker = _marker()
        if self._fd >= 0 and marker == self._reopen_seen:
            return self._fd
        self._reopen_seen = marker
        self.close()
        self._fd = os.open(self.config.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def reopen(self) -> None:
        """Write what is pending, then reopen the file at its path (a rotated file keeps
        the lines written before)."""
        self.flush()
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _marker() -> int:
    if _runtime_dir is None:
        return 0
    try:
        return (_runtime_dir / REOPEN_FILE).stat().st_mtime_ns
    except OSError:
        return 0


def set_runtime_dir(path: Path | None) -> None:
    """Where ``request_reopen`` leaves its marker (a worker of ``edgegw serve``)."""
    global _runtime_dir
    _runtime_dir = path


def for_config(config: AccessLogConfig) -> AccessLog | None:
    """The access log of ``config``, None when it is off."""
    if not config.enabled:
        return None
    log = _logs.get(config)
    if log is None:
        log = _logs[config] = AccessLog(config)
    return log


def flush_all() -> None:
    """Write every pending line (shutdown, tests)."""
    for log in list(_logs.values()):
        log.flush()


def request_reopen(runtime_dir: Path) -> None:
    """Make every worker reopen its log files before its next batch (SIGUSR1)."""
    marker = runtime_dir / REOPEN_FILE
    marker.touch()
    now = time.time_ns()
    os.utime(marker, ns=(now, now))


atexit.register(flush_all)
