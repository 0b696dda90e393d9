"""Hot reload: watch gateway.yaml and the filters' .wasm files, build a complete new
runtime off the request path, and swap it in only if every step succeeded.

Each worker process runs its own ``Reloader``. Triggers: a change to a watched file
(debounced, so an editor's save burst is one reload), or the reload-request file in the
runtime dir, which the supervisor touches on SIGHUP and ``POST /admin/reload``. Each worker
writes its state to ``status-<pid>.json`` there; the admin listener serves them as
``/admin/status``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import watchfiles
from prometheus_client import Counter

from edgegw.config import load_config, redacted
from edgegw.errors import ConfigError, EdgegwError, FilterLoadError
from edgegw.model import GatewayConfig
from edgegw.observe import loglevels

log = logging.getLogger("edgegw.reload")

RELOADS = Counter("edgegw_reloads", "Configuration reloads by result", ["result"])
REQUEST_FILE = "reload-request"
DEBOUNCE_MS = 150


@dataclass
class FilterStatus:
    sha256: str
    loaded_at: float
    last_error: str = ""
    size: int = 0  # bytes of the .wasm loaded


@dataclass
class ReloadStatus:
    """What ``/admin/status`` shows for one worker."""

    pid: int = field(default_factory=os.getpid)
    generation: int = 0  # successful loads, the initial one included
    loaded_at: float = 0.0
    last_result: str = ""  # "ok" | "error" | "unchanged"
    last_error: str = ""
    last_attempt: float = 0.0
    request_seen: str = ""  # content of the reload-request file last acted on
    filters: dict[str, FilterStatus] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        doc = {k: v for k, v in self.__dict__.items() if k != "filters"}
        doc["filters"] = {name: f.__dict__ for name, f in self.filters.items()}
        return doc


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def watched_paths(config_path: Path, config: GatewayConfig) -> set[Path]:
    return {config_path.resolve(), *(spec.wasm.resolve() for spec in config.filters.values())}


MAX_SYMLINKS = 40  # as Linux's path resolution (path_resolution(7))


def symlinks_on(path: Path) -> set[Path]:
    """Every symlink met while resolving ``path``, by the name it has in its folder.

    A Kubernetes ConfigMap volume serves ``gateway.yaml`` as a symlink to
    ``..data/gateway.yaml``, ``..data`` being a symlink to a ``..<timestamp>`` folder;
    kubelet updates it by renaming a new ``..data`` over the old one and deleting the old
    folder. The swap is seen only by watching these links, never the resolved file.
    """
    found: set[Path] = set()
    current = Path(path.anchor or "/")
    pending = list(Path(os.path.abspath(path)).parts[1:])
    hops = 0  # links followed, a loop included
    while pending and hops < MAX_SYMLINKS:
        part = pending.pop(0)
        candidate = current / part
        if part == "..":
            current = current.parent
        elif candidate.is_symlink():
            found.add(candidate)
            hops += 1
            target = Path(os.readlink(candidate))
            if target.is_absolute():
                current = Path(target.anchor)
                pending[:0] = target.parts[1:]
            else:  # relative to the folder holding the link
                pending[:0] = target.parts
        else:
            current = candidate
    return found


class Reloader:
    """Reloads ``app`` (a ``GatewayApp``) when its inputs change."""

    def __init__(self, app: Any, config_path: Path, runtime_dir: Path | None) -> None:
        self.app = app
        # Absolute, not resolved: each reload follows the symlinks as they are then (a
        # ConfigMap update swaps them and deletes the file the old ones led to).
        self.config_path = Path(os.path.abspath(config_path))
        self.runtime_dir = runtime_dir
        self.status = ReloadStatus()
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._digests: dict[Path, str] = {}

    def start(self) -> None:
        """Record the running config as generation 1 and start watching."""
        self._record(self.app.config, "ok", "")
        self._read_request()  # a request older than this process is not for it
        self._task = asyncio.ensure_future(self._watch())

    async def aclose(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def reload(self, reason: str) -> bool:
        """Build and swap in a new runtime; on any failure keep the old one. Returns
        whether the new one is serving."""
        async with self._lock:
            self.status.last_attempt = time.time()
            loglevels.refresh(self.runtime_dir)  # PUT /admin/log-levels asks by a reload
            try:
                config = await asyncio.to_thread(load_config, self.config_path)
                digests = await asyncio.to_thread(self._digest, config)
                if config == self.app.config and digests == self._digests:
                    if self.status.last_result == "error":
                        # The rejection was logged; say that it is over, or the log
                        # ends on an error that no longer holds.
                        log.info(
                            "reload (%s): config valid again, unchanged from generation %d",
                            reason,
                            self.status.generation,
                        )
                    self.status.last_result, self.status.last_error = "unchanged", ""
                    self._write_status()
                    return True
                pipeline = await self.app.build(config)
            except (ConfigError, EdgegwError, OSError) as exc:
                return self._failed(reason, exc)
            except Exception as exc:  # a bug must not take the worker (and its traffic) down
                log.exception("reload (%s) failed unexpectedly", reason)
                return self._failed(reason, exc)
            self.app.swap(pipeline)
            self._digests = digests
            self._record(config, "ok", "")
            RELOADS.labels("ok").inc()
            log.info("reloaded (%s): generation %d", reason, self.status.generation)
            return True

    def _failed(self, reason: str, exc: BaseException) -> bool:
        message = str(exc) or type(exc).__name__
        log.error("reload (%s) rejected, the previous config keeps serving: %s", reason, message)
        self.status.last_result, self.status.last_error = "error", message
        if isinstance(exc, FilterLoadError) and exc.filter_name in self.status.filters:
            self.status.filters[exc.filter_name].last_error = exc.reason
        RELOADS.labels("error").inc()
        self._write_status()
        return False

    def _digest(self, config: GatewayConfig) -> dict[Path, str]:
        return {p: file_sha256(p) for p in watched_paths(self.config_path, config) if p.is_file()}

    def _record(self, config: GatewayConfig, result: str, error: str) -> None:
        now = time.time()
        if not self._digests:
            self._digests = self._digest(config)
        self.status.generation += 1
        self.status.loaded_at = now
        self.status.last_result, self.status.last_error = result, error
        self.status.filters = {
            name: FilterStatus(
                self._digests.get(spec.wasm.resolve(), ""), now, "", _size(spec.wasm)
            )
            for name, spec in config.filters.items()
        }
        self._write_status()
        # What /admin/config shows: the config this worker serves now (secrets redacted).
        self._write("config", {"pid": os.getpid(), "loaded_at": now, "config": redacted(config)})

    def _write_status(self) -> None:
        self._write("status", self.status.as_json())

    def _write(self, kind: str, doc: dict[str, Any]) -> None:
        """This worker's ``<kind>-<pid>.json`` in the runtime dir (``live_worker_files``)."""
        if self.runtime_dir is None:
            return
        target = self.runtime_dir / f"{kind}-{os.getpid()}.json"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(target)  # atomic: the admin never reads half a file

    def _read_request(self) -> bool:
        """True if the reload-request file changed since we last acted on it."""
        if self.runtime_dir is None:
            return False
        try:
            content = (self.runtime_dir / REQUEST_FILE).read_text()
        except OSError:
            return False
        if content == self.status.request_seen:
            return False
        self.status.request_seen = content
        return True

    def _watch_set(self) -> set[Path]:
        """The files and links whose change triggers a reload, as they are now."""
        return watched_paths(self.config_path, self.app.config) | symlinks_on(self.config_path)

    async def _watch(self) -> None:
        while not self._stop.is_set():
            files = self._watch_set()
            if self.runtime_dir is not None:
                files.add((self.runtime_dir / REQUEST_FILE).resolve())
            # Watch folders, not files: editors replace a file on save (a new inode).
            folders = {str(f.parent) for f in files if f.parent.is_dir()}
            names = {str(f) for f in files}

            # Folders are resolved, so reported paths compare as plain strings.
            def wanted(_change: watchfiles.Change, path: str, names: set[str] = names) -> bool:
                return os.path.abspath(path) in names

            watcher = watchfiles.awatch(
                *folders,
                watch_filter=wanted,
                debounce=DEBOUNCE_MS,
                step=50,
                stop_event=self._stop,
                recursive=False,
            )
            # A change made while no watcher ran (between two watchers) is caught here.
            if await asyncio.to_thread(self._digest, self.app.config) != self._digests:
                await self.reload("file change")
            async for changes in watcher:
                paths = {p for _c, p in changes}
                requested = self.runtime_dir is not None and any(
                    p.endswith("/" + REQUEST_FILE) for p in paths
                )
                if requested and not self._read_request() and len(paths) == 1:
                    continue
                before = self._watch_set()
                await self.reload("requested" if requested else "file change")
                if self._watch_set() != before:
                    break  # other files to watch now: start a new watcher


# --- supervisor side -------------------------------------------------------------------


def request_reload(runtime_dir: Path) -> str:
    """Ask every worker to reload (SIGHUP, ``POST /admin/reload``); returns the token
    workers echo in their status once they acted on it."""
    token = f"{time.time_ns()}-{os.getpid()}"
    tmp = runtime_dir / (REQUEST_FILE + ".tmp")
    tmp.write_text(token)
    tmp.replace(runtime_dir / REQUEST_FILE)
    return token


def worker_statuses(runtime_dir: Path) -> list[dict[str, Any]]:
    """The status of every live worker (files of exited workers are ignored)."""
    return live_worker_files(runtime_dir, "status")


def live_worker_files(runtime_dir: Path, kind: str) -> list[dict[str, Any]]:
    """The ``<kind>-<pid>.json`` documents of live workers (each names its ``pid``; files
    of exited workers are ignored)."""
    out = []
    for path in sorted(runtime_dir.glob(f"{kind}-*.json")):
        try:
            doc: dict[str, Any] = json.loads(path.read_text())
            os.kill(int(doc["pid"]), 0)
        except (OSError, ValueError, KeyError):
            continue
        out.append(doc)
    return out
