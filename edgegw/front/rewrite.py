"""``routes[].rewrite``: the path sent upstream, rewritten by a regular expression."""

from __future__ import annotations

from edgegw.front.model import Rewrite
from edgegw.paths import normalize


def rewrite_path(rewrite: Rewrite, target: str, keep_escaped_slashes: bool) -> str | None:
    """``target`` (path and query) with every match of ``path_regex`` in its path
    replaced by ``to`` (``\\1`` groups; Envoy's ``regex_rewrite`` substitutes all matches
    too); the query is kept as it came. The result is normalized again
    (edgegw/paths.py): a rewrite never sends a backend ``//`` or a dot segment the
    router did not see. None when it is not a valid path."""
    path, mark, query = target.partition("?")
    new = rewrite.pattern.sub(rewrite.to, path)
    if new == path:
        return target
    normalized = normalize(new if new.startswith("/") else "/" + new, keep_escaped_slashes)
    if normalized is None:
        return None
    return normalized + mark + query
