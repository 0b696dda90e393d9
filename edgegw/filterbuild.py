"""Build the Zig proxy-wasm filters in ``filters/`` into ``filters/dist/*.wasm``.

The compiler is the ``ziglang`` wheel pinned in pyproject.toml, run as
``sys.executable -m ziglang``, so a fresh checkout builds with no other install. Every
``filters/<name>/main.zig`` (except ``sdk``) becomes ``<out>/<name>.wasm``; the SDK is the
module ``proxy_wasm`` (``filters/sdk/proxy_wasm.zig``).

Builds are incremental: a stamp file next to each output holds a SHA-256 of the compiler
version, the flags and every ``.zig`` input (the filter's and the SDK's). Outputs are
written to a temporary file and renamed, so a watcher never loads a half-written module.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from edgegw.errors import FilterBuildError

SDK_DIR = "sdk"
SDK_MODULE = "proxy_wasm"
TARGET = "wasm32-freestanding"
# Speed over size: the bundled filters' guest code costs 15-28% less per request than
# with ReleaseSmall (docs/filters/sdk.md, "Layout and build"); both drop safety checks.
OPTIMIZE = "ReleaseFast"
BUILD_TIMEOUT = 600.0  # seconds; a cold Zig cache compiles std for the target once

Progress = Callable[[str], object]


def zig_command() -> list[str]:
    """The command prefix that runs the pinned Zig compiler."""
    return [sys.executable, "-m", "ziglang"]


def discover(src: Path) -> list[Path]:
    """Filter source directories: every ``src/<name>/main.zig`` except the SDK."""
    if not src.is_dir():
        return []
    return sorted(
        d for d in src.iterdir() if d.is_dir() and d.name != SDK_DIR and (d / "main.zig").is_file()
    )


def _zig_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.zig") if ".zig-cache" not in p.parts)


def _flags(optimize: str) -> list[str]:
    # -fstrip: no DWARF sections in the .wasm (ReleaseFast would keep them: 10x the size).
    return ["-target", TARGET, "-O", optimize, "-fno-entry", "-rdynamic", "-fstrip"]


def input_digest(filter_dir: Path, sdk_dir: Path, optimize: str = OPTIMIZE) -> str:
    """SHA-256 over the toolchain, flags and every .zig input of one filter."""
    h = hashlib.sha256()
    h.update(_zig_version().encode())
    h.update("\0".join(_flags(optimize)).encode())
    for base in (filter_dir, sdk_dir):
        for path in _zig_files(base):
            h.update(f"\0{base.name}/{path.relative_to(base).as_posix()}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


_version_cache: dict[str, str] = {}


def _zig_version() -> str:
    if "v" not in _version_cache:
        try:
            done = subprocess.run(
                [*zig_command(), "version"], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise FilterBuildError("*", f"cannot run the Zig compiler: {exc}") from exc
        if done.returncode != 0:
            raise FilterBuildError("*", f"cannot run the Zig compiler:\n{done.stderr.strip()}")
        _version_cache["v"] = done.stdout.strip()
    return _version_cache["v"]


def build_one(
    filter_dir: Path,
    sdk_dir: Path,
    out: Path,
    *,
    optimize: str = OPTIMIZE,
    force: bool = False,
) -> tuple[Path, bool]:
    """Build one filter; returns (output path, whether it was compiled)."""
    name = filter_dir.name
    target = out / f"{name}.wasm"
    stamp = out / f".{name}.wasm.sha256"
    digest = input_digest(filter_dir, sdk_dir, optimize)
    if not force and target.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return target, False
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{name}.wasm.tmp"
    cmd = [
        *zig_command(),
        "build-exe",
        *_flags(optimize),
        "--cache-dir",
        str(out / ".zig-cache"),
        "--dep",
        SDK_MODULE,
        f"-Mroot={filter_dir / 'main.zig'}",
        f"-M{SDK_MODULE}={sdk_dir / (SDK_MODULE + '.zig')}",
        "--name",
        name,
        f"-femit-bin={tmp}",
    ]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise FilterBuildError(name, f"compiler timed out after {BUILD_TIMEOUT:.0f}s") from exc
    except OSError as exc:
        raise FilterBuildError(name, f"cannot run the Zig compiler: {exc}") from exc
    if done.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        text = (done.stderr + done.stdout).strip() or f"zig exited with {done.returncode}"
        raise FilterBuildError(name, text)
    os.replace(tmp, target)
    stamp.write_text(digest + "\n")
    return target, True


def build_all(
    src: Path = Path("filters"),
    out: Path = Path("filters/dist"),
    progress: Progress = print,
    *,
    force: bool = False,
    optimize: str = OPTIMIZE,
    only: list[str] | None = None,
) -> list[Path]:
    """Build every filter under ``src`` into ``out``; returns the .wasm paths.

    Raises FilterBuildError (with the compiler output) on the first failure.
    """
    sdk_dir = src / SDK_DIR
    if not (sdk_dir / f"{SDK_MODULE}.zig").is_file():
        raise FilterBuildError(SDK_DIR, f"SDK not found at {sdk_dir / (SDK_MODULE + '.zig')}")
    dirs = discover(src)
    if only is not None:
        unknown = sorted(set(only) - {d.name for d in dirs})
        if unknown:
            raise FilterBuildError(",".join(unknown), f"no such filter under {src}")
        dirs = [d for d in dirs if d.name in only]
    outputs: list[Path] = []
    for i, d in enumerate(dirs, 1):
        progress(f"[{i}/{len(dirs)}] {d.name}: checking")
        path, compiled = build_one(d, sdk_dir, out, optimize=optimize, force=force)
        state = "built" if compiled else "up to date"
        progress(f"[{i}/{len(dirs)}] {d.name}: {state} -> {path} ({path.stat().st_size} bytes)")
        outputs.append(path)
    return outputs
