"""The ``edgegw`` command line.

Each subcommand is one ``_cmd_<name>(sub)`` function that adds its parser and sets
``func`` (``(args) -> exit code``); list it in ``COMMANDS`` to add a subcommand.
Heavy modules are imported inside the handlers so ``edgegw --version`` stays fast and
``serve`` can export PROMETHEUS_MULTIPROC_DIR before prometheus_client is imported.

Exit codes: 0 ok, 1 runtime failure, 2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edgegw import __version__
from edgegw.observe.loglevels import LEVELS

if TYPE_CHECKING:
    from edgegw.model import GatewayConfig

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def load_or_report(path: Path) -> GatewayConfig | None:
    """Load and validate ``path``; on failure print every problem (``FILE: problem``; a
    YAML syntax error as ``FILE:LINE:COLUMN: problem`` with the line, a caret and a hint)."""
    from edgegw.config import load_config
    from edgegw.errors import ConfigError

    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            _err(problem.render(str(path)))
        if not exc.problems:
            _err(f"{path}: {exc}")
    except OSError as exc:
        _err(f"{path}: cannot read: {exc.strerror or exc}")
    return None


def _add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=Path("gateway.yaml"),
        help="path of gateway.yaml (default: ./gateway.yaml)",
    )


# --- check -------------------------------------------------------------------------------


def check_filters(config: GatewayConfig, path: Path) -> bool:
    """Load every filter as `serve` would (compile, link, start, configure); print why a
    filter cannot load. True when all load."""
    from edgegw.errors import FilterLoadError
    from edgegw.wasm import check_filter

    ok = True
    clusters = frozenset(config.backends)
    for spec in config.filters.values():
        try:
            check_filter(spec, clusters)
        except FilterLoadError as exc:
            _err(f"{path}: filters.{spec.name}: {exc.reason}")
            ok = False
    return ok


def admin_refused(config: GatewayConfig, path: Path) -> bool:
    """Print why ``serve`` would refuse the admin listener (config.open_admin_refusal)."""
    from edgegw.config import open_admin_refusal

    refusal = open_admin_refusal(config.admin)
    if refusal is not None:
        _err(f"{path}: {refusal}")
    return refusal is not None


def _check(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None or admin_refused(config, args.config):
        return EXIT_CONFIG
    if not check_filters(config, args.config):
        return EXIT_CONFIG
    from edgegw.store.policy import policy_conflicts

    for conflict in policy_conflicts(config):
        _err(f"{args.config}: warning: {conflict}")
    print("OK")
    return EXIT_OK


def _cmd_check(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help="validate gateway.yaml and exit")
    _add_config_arg(p)
    p.set_defaults(func=_check)


# --- serve -------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    # Refused before anything binds a port or loads a filter.
    if config is None or admin_refused(config, args.config):
        return EXIT_CONFIG
    if not check_filters(config, args.config):
        return EXIT_CONFIG
    overrides: dict[str, object] = {}
    if args.server is not None:
        overrides["server"] = args.server
    if args.workers is not None:
        if args.workers < 1:
            _err("edgegw serve: --workers must be at least 1")
            return EXIT_CONFIG
        overrides["workers"] = args.workers
    config = dataclasses.replace(config, **overrides)  # type: ignore[arg-type]

    from edgegw.server import serve

    return serve(config, args.config, log_level=args.log_level)


def _cmd_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the gateway")
    _add_config_arg(p)
    p.add_argument("--server", choices=["granian", "hypercorn"], help="override `server:`")
    p.add_argument("--workers", type=int, help="override `workers:`")
    p.add_argument(
        "--log-level",
        choices=list(LEVELS),
        default="info",
        help="the level of every edgegw log without its own (filters: `log_level:`)",
    )
    p.set_defaults(func=_serve)


# --- demo --------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from edgegw.demo import run_demo

    if args.token:
        import os

        from edgegw.demo import DEMO_JWT_SECRET, demo_token

        print(demo_token(args.token, os.environ.get("EDGEGW_DEMO_JWT_SECRET", DEMO_JWT_SECRET)))
        return EXIT_OK

    try:
        asyncio.run(run_demo(args.host, args.base_port))
    except KeyboardInterrupt:
        return EXIT_OK
    except OSError as exc:
        _err(f"edgegw demo: cannot listen: {exc}")
        return EXIT_FAILURE
    return EXIT_OK


def _cmd_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from edgegw.demo import DEFAULT_BASE_PORT

    p = sub.add_parser("demo", help="run the demo microservices of gateway.yaml.example")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument(
        "--base-port",
        type=int,
        default=DEFAULT_BASE_PORT,
        help=f"users on this port, then orders, recommendations, shop-v1, shop-v2 "
        f"(default {DEFAULT_BASE_PORT})",
    )
    p.add_argument(
        "--token",
        metavar="SUBJECT",
        help="print a JWT for SUBJECT that gateway.yaml.example's jwt filter accepts, and exit",
    )
    p.set_defaults(func=_demo)


# --- filters -----------------------------------------------------------------------------


def _filters_build(args: argparse.Namespace) -> int:
    try:
        from edgegw.filterbuild import build_all
    except ImportError as exc:
        _err(f"edgegw filters build: the filter builder is not available ({exc})")
        return EXIT_FAILURE
    from edgegw.errors import FilterBuildError

    try:
        build_all(args.src, args.out, force=args.force, only=args.only or None)
    except FilterBuildError as exc:
        _err(str(exc))
        return EXIT_FAILURE
    return EXIT_OK


def _cmd_filters(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("filters", help="work with the bundled wasm filters")
    fsub = p.add_subparsers(dest="filters_command", required=True, metavar="COMMAND")
    b = fsub.add_parser("build", help="compile filters/*/ to filters/dist/*.wasm with Zig")
    b.add_argument("--src", type=Path, default=Path("filters"))
    b.add_argument("--out", type=Path, default=Path("filters/dist"))
    b.add_argument("--force", action="store_true", help="rebuild even if up to date")
    b.add_argument("only", nargs="*", help="filter names (default: all)")
    b.set_defaults(func=_filters_build)


# --- flags -------------------------------------------------------------------------------


def _flags(args: argparse.Namespace) -> int:
    import json
    import os

    import httpx

    token = args.token or os.environ.get("EDGEGW_ADMIN_TOKEN") or ""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = args.admin.rstrip("/") + "/admin/flags"
    try:
        with httpx.Client(timeout=10, headers=headers) as client:
            if args.flags_command == "list":
                r = client.get(base)
            elif args.flags_command == "get":
                r = client.get(f"{base}/{args.name}")
            elif args.flags_command == "rm":
                r = client.delete(f"{base}/{args.name}")
            else:
                try:
                    definition = json.loads(args.definition)
                except ValueError as exc:
                    _err(f"edgegw flags set: DEFINITION is not JSON: {exc}")
                    return EXIT_CONFIG
                r = client.put(f"{base}/{args.name}", json=definition)
    except httpx.HTTPError as exc:
        _err(f"edgegw flags: cannot reach the admin API at {args.admin}: {exc}")
        return EXIT_FAILURE
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        _err(f"edgegw flags {args.flags_command}: {r.status_code}: {detail}")
        return EXIT_CONFIG if r.status_code in (400, 404) else EXIT_FAILURE
    print(json.dumps(r.json(), indent=2, sort_keys=True))
    return EXIT_OK


def _cmd_flags(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("flags", help="list and edit feature flags through the admin API")
    p.add_argument("--admin", default="http://127.0.0.1:9901", help="admin base URL")
    p.add_argument("--token", help="admin token (default: $EDGEGW_ADMIN_TOKEN)")
    fsub = p.add_subparsers(dest="flags_command", required=True, metavar="COMMAND")
    fsub.add_parser("list", help="every flag and the table version")
    for name, text in (("get", "one flag"), ("rm", "delete a flag")):
        fsub.add_parser(name, help=text).add_argument("name")
    s = fsub.add_parser("set", help="create or replace a flag")
    s.add_argument("name")
    s.add_argument("definition", help='JSON, e.g. \'{"enabled": true, "rollout": 25}\' or true')
    p.set_defaults(func=_flags)


# --- wiring ------------------------------------------------------------------------------

COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _cmd_check,
    _cmd_serve,
    _cmd_demo,
    _cmd_filters,
    _cmd_flags,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgegw", description="edge API gateway")
    parser.add_argument("--version", action="version", version=f"edgegw {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgegw`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
