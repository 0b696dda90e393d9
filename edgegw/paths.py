"""The request path, normalized once: the router, the filters (``:path``) and the backend
all see the same string, so no layer can be told one path while another acts on another.

What ``normalize`` does (docs/proxying.md), the edge settings Envoy recommends (its
``normalize_path``, ``merge_slashes`` and ``path_with_escaped_slashes_action``), always on:

1. ``%XX`` of an unreserved character (ALPHA, DIGIT, ``-._~``) is decoded (RFC 3986 §2.3,
   §6.2.2.2: equivalent either way, so ``/%6cogin`` *is* ``/login``); every other escape
   stays escaped with upper-case hex (§6.2.2.1). A ``%`` not followed by two hex digits
   is refused (§2.1).
2. An encoded ``/`` (``%2F``) or ``\\`` (``%5C``) is refused (``reject_request``, the
   default) or kept escaped (``keep_escaped``): decoding it would change the path's
   segments. A literal ``\\`` is not valid in a URI path (§3.3) and is refused.
3. Runs of ``/`` become one (Envoy's ``merge_slashes``).
4. Dot segments are removed (§5.2.4): ``/a/./b/../c`` → ``/a/c``; ``..`` never climbs
   above the root. A dot segment carrying ``;`` parameters (``..;``, which Tomcat and
   others treat as ``..``) is refused.

The query string is not the caller's to pass here: it is never touched.
"""

from __future__ import annotations

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789ABCDEFabcdef")
_SLASHES = frozenset({"2F", "5C"})  # upper-cased escapes of "/" and "\"


def normalize(path: str, keep_escaped_slashes: bool = False) -> str | None:
    """``path``: the request path as sent, without the query (latin-1 text of its bytes).
    Returns the normalized path, or None when the request must be refused (400)."""
    # Fast path, the common case: nothing to decode, merge or remove.
    if "%" not in path and "//" not in path and "/." not in path and "\\" not in path:
        return path if path[:1] == "/" else None
    if path[:1] != "/" or "\\" in path:
        return None
    if "%" in path:
        decoded = _decode(path, keep_escaped_slashes)
        if decoded is None:
            return None
        path = decoded
    segments = path.split("/")
    out: list[str] = []
    for segment in segments[1:]:
        if segment == "" or segment == ".":
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        if segment[0] == "." and segment.partition(";")[0] in (".", ".."):
            return None
        out.append(segment)
    result = "/" + "/".join(out)
    # A path ending in "/", "/." or "/.." names a directory: keep its trailing slash.
    if out and segments[-1] in ("", ".", ".."):
        result += "/"
    return result


def _decode(path: str, keep_escaped_slashes: bool) -> str | None:
    parts = path.split("%")
    out = [parts[0]]
    for part in parts[1:]:
        code = part[:2]
        if len(code) != 2 or code[0] not in _HEX or code[1] not in _HEX:
            return None
        char = chr(int(code, 16))
        if char in _UNRESERVED:
            out.append(char)
        else:
            code = code.upper()
            if code in _SLASHES and not keep_escaped_slashes:
                return None
            out.append("%" + code)
        out.append(part[2:])
    return "".join(out)


def is_safe_segment(value: str) -> bool:
    """Whether a decoded path parameter may stand for one path segment: never ``.`` or
    ``..`` (they would move the path when put back into one) and never containing ``/``."""
    return value not in (".", "..", "") and "/" not in value
