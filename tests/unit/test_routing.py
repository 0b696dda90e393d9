"""Route matching: prefix segments, path templates, methods, hosts, config order."""

from __future__ import annotations

import pytest

from edgegw.model import Match, Route
from edgegw.routing import Router, compile_template


def route(name: str, **match: object) -> Route:
    return Route(name=name, match=Match(**match), backend="b")  # type: ignore[arg-type]


ROUTER = Router(
    (
        route("profile", path="/api/profile/{user_id}", methods=("GET",)),
        route("orders", path="/api/users/{uid}/orders/{oid}"),
        route("admin", prefix="/admin", host="admin.example.com"),
        route("wild", prefix="/w", host="*.example.com"),
        route("users", prefix="/users"),
        route("users-post", prefix="/users", methods=("POST",)),
        route("root", prefix="/"),
    )
)


@pytest.mark.parametrize(
    ("method", "path", "host", "name", "params"),
    [
        ("GET", "/users", "h", "users", {}),
        ("GET", "/users/", "h", "users", {}),
        ("GET", "/users/1", "h", "users", {}),
        ("GET", "/usersx", "h", "root", {}),  # prefix matches whole segments only
        ("GET", "/api/profile/42", "h", "profile", {"user_id": "42"}),
        ("POST", "/api/profile/42", "h", "root", {}),  # method not allowed on profile
        ("GET", "/api/profile/42/extra", "h", "root", {}),  # a param is one segment
        ("GET", "/api/profile/", "h", "root", {}),  # and never empty
        ("PUT", "/api/users/7/orders/9", "h", "orders", {"uid": "7", "oid": "9"}),
        ("GET", "/admin/x", "admin.example.com", "admin", {}),
        ("GET", "/admin/x", "ADMIN.example.com:8080", "admin", {}),  # case and port ignored
        ("GET", "/admin/x", "other.example.com", "root", {}),
        ("GET", "/w", "a.example.com", "wild", {}),
        ("GET", "/w", "example.com", "root", {}),  # *.suffix needs a subdomain
        ("GET", "/w", "[::1]:80", "root", {}),
        # The path comes normalized and still escaped; parameters come back decoded.
        ("GET", "/api/profile/j%C3%B6rg", "h", "profile", {"user_id": "jörg"}),
        ("GET", "/api/profile/a%20b", "h", "profile", {"user_id": "a b"}),
        # A value that is a dot segment or holds "/" (a %2F kept by keep_escaped) would
        # move any path it is put back into: the template does not match.
        ("GET", "/api/profile/a%2Fb", "h", "root", {}),
        ("GET", "/api/profile/..", "h", "root", {}),
        ("GET", "/api/profile/%2E%2E", "h", "root", {}),
        ("GET", "/api/profile/.", "h", "root", {}),
    ],
)
def test_match(method: str, path: str, host: str, name: str, params: dict[str, str]) -> None:
    found = ROUTER.match(method, path, host)
    assert found is not None
    assert (found[0].name, found[1]) == (name, params)


def test_first_match_in_config_order_wins() -> None:
    found = ROUTER.match("POST", "/users/1", "h")
    assert found is not None and found[0].name == "users"  # listed before users-post


def test_no_match() -> None:
    router = Router((route("users", prefix="/users"),))
    assert router.match("GET", "/orders", "h") is None


def test_template_escapes_literal_parts() -> None:
    pattern = compile_template("/v1.0/{id}")
    assert pattern.match("/v1.0/x") is not None
    assert pattern.match("/v1x0/x") is None


def test_allowed_lists_methods_of_routes_fitting_path_and_host() -> None:
    router = Router(
        (
            route("list", prefix="/users", methods=("GET", "HEAD")),
            route("one", path="/users/{id}", methods=("DELETE", "GET")),
            route("admin", prefix="/admin", host="admin.example.com", methods=("POST",)),
            route("open", prefix="/open"),
        )
    )
    assert router.match("PUT", "/users/1", "h") is None
    assert router.allowed("/users/1", "h") == ("GET", "HEAD", "DELETE")  # config order, once
    assert router.allowed("/users", "h") == ("GET", "HEAD")
    assert router.allowed("/admin/x", "ADMIN.example.com:8443") == ("POST",)
    assert router.allowed("/admin/x", "other.example.com") == ()  # another host: no resource
    assert router.allowed("/nope", "h") == ()
