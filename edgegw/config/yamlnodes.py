"""Reading gateway.yaml with a line number on every value, and the value grammar.

``parse_tree`` turns YAML text into ``Node`` objects (value + line + path) after
``${VAR}`` / ``${VAR:-default}`` substitution; ``Reader`` converts nodes into typed values
and collects every problem instead of stopping at the first (``edgegw.config`` uses it).
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

from edgegw.errors import ConfigProblem

T = TypeVar("T")

_ENV = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|µs|ms|s|m|h)\s*$")
_DURATION_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_RESOLVER = yaml.resolver.Resolver()
_LINE_BREAK = re.compile("[\r\n\x85\u2028\u2029]")  # what PyYAML counts as a line break
_INDENTATION = "check the indentation of this line and the one above"
_TABS = "YAML does not allow tabs for indentation; indent with spaces"
# A hint per fixed ``problem`` or ``context`` string of PyYAML's syntax errors (both are
# constants in its scanner and parser; the tokens PyYAML names in some are not).
_SYNTAX_HINTS = {
    "mapping values are not allowed here": f"{_INDENTATION}, or quote a value holding ': '",
    "could not find expected ':'": f"a key needs a ':' after it; {_INDENTATION}",
    "while parsing a block mapping": _INDENTATION,
    "while parsing a block collection": _INDENTATION,
    "while parsing a flow sequence": "this '[' has no matching ']', or an item lacks its ','",
    "while parsing a flow mapping": "this '{' has no matching '}', or an entry lacks its ','",
    "while scanning a quoted scalar": "this quote is never closed",
}


@dataclass(frozen=True, slots=True)
class Node:
    """A YAML value with where it came from. Mappings hold ``dict[str, Node]``,
    sequences ``list[Node]``, scalars their Python value."""

    value: Any
    line: int
    path: str

    def key_path(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key


def parse_tree(text: str, env: Mapping[str, str] | None = None) -> tuple[Node, list[ConfigProblem]]:
    """Parse YAML text into a ``Node`` tree; problems are syntax and substitution errors."""
    problems: list[ConfigProblem] = []
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        problem = _syntax_problem(exc, text)
        return Node(None, problem.line or 1, ""), [problem]
    except yaml.YAMLError as exc:
        return Node(None, 1, ""), [ConfigProblem("", f"invalid YAML: {exc}", None)]
    if root is None:
        return Node({}, 1, ""), problems
    builder = _Builder(os.environ if env is None else env, problems)
    return builder.build(root, ""), problems


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str) -> ConfigProblem:
    """Where PyYAML stopped (line, column, the line's text) and a hint chosen by the
    error's marks and its fixed ``problem`` / ``context`` strings."""
    message = f"invalid YAML: {exc.problem or exc.context}"
    mark = exc.problem_mark
    # Stopped at the end of the input (an unclosed bracket or quote): where the unfinished
    # thing began (the context mark) is the place to show.
    if mark is None or (exc.context_mark is not None and not text[mark.index :].strip()):
        mark = exc.context_mark
    if mark is None:
        return ConfigProblem("", message)
    start = mark.index - mark.column
    excerpt = _LINE_BREAK.split(text[start:], maxsplit=1)[0]
    indent = excerpt[: len(excerpt) - len(excerpt.lstrip())]
    if "\t" in indent or text[mark.index : mark.index + 1] == "\t":
        hint = _TABS
    else:
        hint = _SYNTAX_HINTS.get(exc.problem or "") or _SYNTAX_HINTS.get(exc.context or "", "")
    return ConfigProblem("", message, mark.line + 1, mark.column + 1, excerpt, hint)


class _Builder:
    def __init__(self, env: Mapping[str, str], problems: list[ConfigProblem]) -> None:
        self.env = env
        self.problems = problems
        self.constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: str) -> Node:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            self.constructor.flatten_mapping(node)  # YAML merge keys (<<)
            out: dict[str, Node] = {}
            for key_node, value_node in node.value:
                key = str(self.constructor.construct_object(key_node, deep=True))
                child_path = f"{path}.{key}" if path else key
                if key in out:
                    where = key_node.start_mark.line + 1
                    self.problems.append(ConfigProblem(child_path, "duplicate key", where))
                out[key] = self.build(value_node, child_path)
            return Node(out, line, path)
        if isinstance(node, yaml.SequenceNode):
            items = [self.build(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
            return Node(items, line, path)
        assert isinstance(node, yaml.ScalarNode)
        if node.tag == "tag:yaml.org,2002:str" and "$" in node.value:
            text = self.substitute(node.value, path, line)
            if node.style is None:  # plain scalar: `${PORT}` may stand for a number
                tag = _RESOLVER.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
                node = yaml.ScalarNode(tag, text, node.start_mark, node.end_mark)
            else:
                return Node(text, line, path)
        return Node(self.constructor.construct_object(node, deep=True), line, path)

    def substitute(self, text: str, path: str, line: int) -> str:
        def repl(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            value = self.env.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    self.problems.append(
                        ConfigProblem(path, f"environment variable {name} is not set", line)
                    )
                    return ""
                return default
            return value

        return _ENV.sub(repl, text)


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` naming the known word closest to a misspelt one, or ``""``.
    The one suggestion helper for every unknown key, name or method in gateway.yaml."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def plain(node: Node) -> Any:
    """The node as plain Python data (for filter configs and flag tables)."""
    if isinstance(node.value, dict):
        return {k: plain(v) for k, v in node.value.items()}
    if isinstance(node.value, list):
        return [plain(v) for v in node.value]
    return node.value


class Reader:
    """Typed access to nodes that records a problem (with path and line) on bad input
    and returns ``None`` instead of raising, so every problem is reported at once."""

    def __init__(self) -> None:
        self.problems: list[ConfigProblem] = []

    def problem(self, node: Node, message: str, path: str | None = None) -> None:
        self.problems.append(ConfigProblem(node.path if path is None else path, message, node.line))

    def mapping(
        self,
        node: Node,
        allowed: tuple[str, ...] | None = None,
        required: tuple[str, ...] = (),
    ) -> dict[str, Node] | None:
        if not isinstance(node.value, dict):
            self.problem(node, f"expected a mapping, got {_kind(node.value)}")
            return None
        items: dict[str, Node] = node.value
        if allowed is not None:
            for key, child in items.items():
                if key not in allowed:
                    self.problem(child, f"unknown key '{key}'{did_you_mean(key, allowed)}")
        for key in required:
            if key not in items:
                self.problem(node, f"missing required key '{key}'", node.key_path(key))
        return items

    def sequence(self, node: Node) -> list[Node] | None:
        if not isinstance(node.value, list):
            self.problem(node, f"expected a list, got {_kind(node.value)}")
            return None
        items: list[Node] = node.value
        return items

    def convert(self, node: Node | None, parse: Callable[[Any], T], default: T) -> T:
        """``parse(value)`` raising ValueError(message) on bad input; None node → default."""
        if node is None:
            return default
        try:
            return parse(node.value)
        except ValueError as exc:
            self.problem(node, str(exc))
            return default


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}"
    )


def as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_kind(value)}")
    return value


def as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_kind(value)}")
    return value


def as_int(value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {_kind(value)}")
    if value < minimum:
        raise ValueError(f"must be at least {minimum}, got {value}")
    return value


def as_duration(value: Any) -> float:
    """``2s``, ``500ms``, ``1.5m``, ``100us`` or a number of seconds; must be positive."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError(f"invalid duration {value!r} (examples: 2s, 500ms, 1m)")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


def as_percent(value: Any) -> float:
    """``50%`` or a number of percent, 0 to 100 → a share 0.0 to 1.0."""
    number: Any = value
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            number = float(value.strip()[:-1])
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise ValueError(f"invalid percentage {value!r} (examples: 20%, 50%)")
    if not 0 <= number <= 100:
        raise ValueError(f"percentage must be between 0% and 100%, got {value!r}")
    return float(number) / 100


def as_size(value: Any) -> int:
    """``32MiB``, ``64KiB``, ``10MB``, ``512B`` or a number of bytes; must be positive."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])
    else:
        raise ValueError(f"invalid size {value!r} (examples: 32MiB, 512KiB, 10MB)")
    if size <= 0:
        raise ValueError(f"size must be positive, got {value!r}")
    return size


def one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return parse
