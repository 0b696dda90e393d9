"""edgegw.paths: the one normalization of request paths (RFC 3986 §2.3, §5.2.4, §6.2.2)."""

from __future__ import annotations

import pytest

from edgegw.paths import is_safe_segment, normalize

UNCHANGED = ["/", "/users", "/users/1", "/a/b/", "/a.b/c.d", "/a/.b", "/a/b.", "/%C3%A9", "/a%20b"]


@pytest.mark.parametrize("path", UNCHANGED)
def test_normal_paths_come_back_unchanged(path: str) -> None:
    assert normalize(path) == path


@pytest.mark.parametrize(
    ("sent", "normalized"),
    [
        # RFC 3986 §5.2.4 dot-segment removal; ".." never climbs above the root.
        ("/users/../secure/data", "/secure/data"),
        ("/a/./b/../c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/..", "/"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/.", "/"),
        ("/a/..", "/"),
        # Encoded dots are unreserved characters: decoded first, then removed (§2.3).
        ("/users/%2e%2e/secure/data", "/secure/data"),
        ("/users/%2E%2E/secure/data", "/secure/data"),
        ("/users/.%2e/secure", "/secure"),
        ("/users/%2E/x", "/users/x"),
        # Unreserved characters decode (§6.2.2.2); other escapes keep upper-case hex.
        ("/%6cogin/x", "/login/x"),
        ("/publi%63/x", "/public/x"),
        ("/%7Euser", "/~user"),
        ("/a%2db_c%5F", "/a-b_c_"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a%20b/%3f", "/a%20b/%3F"),
        ("/%25", "/%25"),  # an escaped "%" stays escaped: never decoded twice
        ("/%252e%252e/x", "/%252e%252e/x"),
        # Merged slashes (Envoy's merge_slashes).
        ("//secure/data", "/secure/data"),
        ("/a//b///c", "/a/b/c"),
        ("/a//", "/a/"),
        ("/a//../b", "/b"),
    ],
)
def test_hostile_paths_are_normalized(sent: str, normalized: str) -> None:
    assert normalize(sent) == normalized
    assert normalize(normalized) == normalized  # idempotent


@pytest.mark.parametrize(
    "sent",
    [
        "/users/..%2Fsecure",  # an encoded "/": refused by default
        "/users/..%2fsecure",
        "/users%2F..%2F..%2Fsecure",
        "/users/..%5Csecure",  # an encoded "\"
        "/users/..%5csecure",
        "/users/%2E%2E%2Fsecure/data",
        "/users\\..\\secure",  # a literal "\" is not allowed in a URI path (§3.3)
        "/users/..\\secure",
        "/a%",  # "%" needs two hex digits (§2.1)
        "/a%2",
        "/a%zz",
        "/a%+1/x",
        "/a% 1",
        "/users/..;/secure",  # "..;" is ".." to Tomcat and friends
        "/users/.;x/secure",
        "users",  # not an absolute path
        "*",
        "http://h/x",
        "",
    ],
)
def test_hostile_paths_are_refused(sent: str) -> None:
    assert normalize(sent) is None


def test_keep_escaped_keeps_encoded_slashes_as_data() -> None:
    assert normalize("/a%2fb/c", keep_escaped_slashes=True) == "/a%2Fb/c"
    assert normalize("/a/..%2F..%2Fb", keep_escaped_slashes=True) == "/a/..%2F..%2Fb"
    assert normalize("/a%5cb/../c", keep_escaped_slashes=True) == "/c"
    assert normalize("/a\\b", keep_escaped_slashes=True) is None  # literal "\" still refused


def test_fast_path_returns_the_same_object() -> None:
    path = "/api/users/42/orders"
    assert normalize(path) is path


@pytest.mark.parametrize(
    ("value", "safe"),
    [("42", True), ("a b", True), ("...", True), (".", False), ("..", False), ("a/b", False)],
)
def test_safe_segment(value: str, safe: bool) -> None:
    assert is_safe_segment(value) is safe
