"""The admin UI (GET /ui/ on the admin port) in Debian's chromium: log in, every route of
gateway.yaml.example, live req/s, flags, reload, a broken .wasm, a wrong token.

The tests of this module share one gateway and run in file order (the last one breaks a
filter)."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.ui.conftest import SHOTS, TOKEN, ExampleGateway, shot

pytestmark = pytest.mark.timeout(180)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def wait_until(check: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: still {last!r} after {timeout}s")


@pytest.fixture(scope="module")
def gw(example: ExampleGateway) -> ExampleGateway:
    def ready() -> bool:
        try:
            status = httpx.get(example.admin_url + "/admin/status", headers=AUTH, timeout=5)
            readyz = httpx.get(example.admin_url + "/readyz", timeout=5)
        except httpx.HTTPError:
            return False
        return readyz.status_code == 200 and len(status.json()["workers"]) == 2

    wait_until(ready, "two workers serving", timeout=90)
    return example


def log_in(page: Any, gw: ExampleGateway, token: str = TOKEN) -> None:
    page.goto(gw.admin_url + "/ui/")
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Log in").click()


def flags_header(gw: ExampleGateway, key: str) -> str:
    r = httpx.get(gw.url + "/shop/cart", cookies={"edgegw_uid": key}, timeout=10)
    assert r.status_code == 200, r.text
    seen = dict(r.json()["headers"])
    return str(seen.get("x-edgegw-flags", ""))


def test_a_wrong_token_is_refused(page: Any, gw: ExampleGateway) -> None:
    log_in(page, gw, token="not-the-token")
    page.locator("#login-error").get_by_text("Refused: wrong token.").wait_for()
    assert page.locator("#nav").is_hidden()
    assert page.locator("#open-warning").is_hidden()
    # The token never reaches a URL, and the tab forgot the wrong one.
    assert "not-the-token" not in page.url
    assert page.evaluate("sessionStorage.length") == 0


def test_log_in_and_see_every_route(page: Any, gw: ExampleGateway) -> None:
    log_in(page, gw)
    page.locator("#nav").wait_for()
    assert page.locator("#open-warning").is_hidden()
    for name in gw.route_names:
        page.locator(f'#overview-table tr[data-route="{name}"]').wait_for()
    page.get_by_role("link", name="Routes").click()
    for name in gw.route_names:
        assert page.locator(f'#route-list > li[data-route="{name}"]').is_visible()
    # The pipeline of account: its four filters in config order, then its backend.
    stages = page.locator('#route-list > li[data-route="account"] .stage').all_inner_texts()
    assert [s.split("\n")[1].split(" ")[0] for s in stages[1:5]] == [
        "jwt", "ratelimit", "ab", "geo"]  # fmt: skip
    assert "users" in stages[-1]
    assert "on_error: fail_open" in stages[2]  # ratelimit's, from the config
    shot(page, "routes")


def test_req_per_second_moves_while_traffic_is_sent(page: Any, gw: ExampleGateway) -> None:
    log_in(page, gw)
    cell = page.locator('#overview-table tr[data-route="orders"] td.rps .value')
    cell.wait_for()
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                client.get(gw.url + "/orders?user=42")
                time.sleep(0.02)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:

        def rate() -> float:
            text = cell.inner_text()
            return float(text) if re.fullmatch(r"[0-9.]+", text) else 0.0

        assert wait_until(rate, "req/s of route orders", timeout=30) > 0
        points = page.locator('#overview-table tr[data-route="orders"] td.rps polyline')
        assert points.get_attribute("points")
        p99 = page.locator('#overview-table tr[data-route="orders"] td.p99-ms .value')
        assert p99.inner_text().endswith("ms")
        if SHOTS:  # a few more seconds of history for the picture
            time.sleep(10)
        shot(page, "overview")
    finally:
        stop.set()
        sender.join(10)


def test_toggle_a_flag_and_see_x_edgegw_flags_change(page: Any, gw: ExampleGateway) -> None:
    log_in(page, gw)
    page.get_by_role("link", name="Flags").focus()
    page.keyboard.press("Enter")  # views are reachable from the keyboard
    page.get_by_role("button", name="Edit new-ui").focus()
    page.keyboard.press("Enter")
    assert page.get_by_label("Name", exact=True).input_value() == "new-ui"
    slider = page.get_by_label("Rollout")
    slider.focus()
    slider.press("End")  # the keyboard moves the slider to 100
    assert page.locator("#f-rollout-out").inner_text() == "100"
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Saved 'new-ui'").first.wait_for()
    wait_until(lambda: flags_header(gw, "user-7") == "new-ui=on", "new-ui on for user-7")

    box = page.get_by_label("new-ui enabled")
    assert box.is_checked()
    box.uncheck()
    page.get_by_text("Saved 'new-ui'").first.wait_for()
    wait_until(lambda: flags_header(gw, "user-7") == "new-ui=off", "new-ui off for user-7")

    # The API validates, and the editor shows its reason as is.
    page.get_by_role("button", name="Edit new-ui").click()
    page.get_by_label("Countries").fill("DEU")
    page.get_by_role("button", name="Save").click()
    page.locator("#flag-error").get_by_text("countries must be a list of 2-letter codes").wait_for()
    assert flags_header(gw, "user-7") == "new-ui=off"

    # The preview of the editor's (now reloaded) definition agrees.
    page.get_by_role("button", name="Edit new-ui").click()
    page.get_by_label("Sample key").fill("user-7")
    page.get_by_role("button", name="Preview").click()
    page.get_by_text("x-edgegw-flags: new-ui=off").wait_for()
    assert "disabled" in page.locator('#preview-result li[data-flag="new-ui"]').inner_text()
    shot(page, "flags")


def test_preview_matches_the_ab_flags_filter(gw: ExampleGateway) -> None:
    definition = {"enabled": True, "rollout": 50}
    r = httpx.put(gw.admin_url + "/admin/flags/new-ui", json=definition, headers=AUTH)
    assert r.status_code == 200, r.text
    keys = [f"key-{i}" for i in range(24)]
    expected = {}
    for key in keys:
        p = httpx.post(gw.admin_url + "/admin/preview/flags", json={"key": key}, headers=AUTH)
        assert p.status_code == 200, p.text
        expected[key] = p.json()["x-edgegw-flags"]
    # Both answers occur, or the comparison proves little.
    assert {"new-ui=on", "new-ui=off"} <= set(expected.values())
    wait_until(lambda: all(flags_header(gw, k) == v for k, v in expected.items()),
               "the filter's x-edgegw-flags equal to the preview's")  # fmt: skip
    refused = httpx.post(gw.admin_url + "/admin/preview/flags", json={"key": "k"})
    assert refused.status_code == 401
    # An unsaved edit is validated as PUT /admin/flags would.
    bad = {"key": "k", "name": "new-ui", "definition": {"rollout": 500}}
    r = httpx.post(gw.admin_url + "/admin/preview/flags", json=bad, headers=AUTH)
    assert r.status_code == 400 and "rollout must be a number" in r.json()["detail"]
    draft = {"key": "k", "name": "new-ui", "definition": {"enabled": False}}
    r = httpx.post(gw.admin_url + "/admin/preview/flags", json=draft, headers=AUTH)
    assert r.json()["flags"]["new-ui"]["reason"] == "disabled"


def generation(page: Any) -> int:
    cells = page.locator("#workers-table td.generation").all_inner_texts()
    return min(int(c) for c in cells) if cells else 0


def test_reload_bumps_the_generation(page: Any, gw: ExampleGateway) -> None:
    log_in(page, gw)
    page.get_by_role("link", name="Filters").click()
    page.locator("#workers-table td.generation").nth(1).wait_for()
    before = generation(page)
    assert before >= 1
    assert page.locator('#filters-table tr[data-key="ab"] td').nth(1).inner_text().startswith(
        tuple("0123456789abcdef"))  # fmt: skip
    # A changed config file: the reload has something to load.
    gw.config_path.write_text(gw.config_path.read_text() + "\n# touched by the UI test\n")
    page.get_by_role("button", name="Reload configuration and filters").click()
    page.get_by_text(re.compile(r"^Reloaded")).wait_for()
    wait_until(lambda: generation(page) > before, "the generation shown after a reload")
    shot(page, "filters")


def test_a_broken_wasm_shows_its_error(page: Any, gw: ExampleGateway) -> None:
    log_in(page, gw)
    page.get_by_role("link", name="Filters").click()
    page.locator("#workers-table td.generation").first.wait_for()
    wasm = gw.root / "filters" / "ab_flags.wasm"
    wasm.write_bytes(b"\0asm\x01\0\0\0 not a module")
    page.get_by_role("button", name="Reload configuration and filters").click()
    result = page.locator("#reload-result")
    page.get_by_text(re.compile(r"^Rejected")).wait_for(timeout=40_000)
    assert "ab" in result.inner_text()
    row_error = page.locator('#filters-table tr[data-key="ab"] td.last-error')
    wait_until(lambda: row_error.inner_text() not in ("", "—"), "the ab filter's last error")
    assert "error" in page.locator("#workers-table tbody").inner_text()
    # The gateway still serves with the filters it had.
    assert httpx.get(gw.url + "/orders", timeout=10).status_code == 200


def test_backends_and_store_health(page: Any, gw: ExampleGateway) -> None:
    log_in(page, gw)
    page.get_by_role("link", name="Backends").click()
    page.get_by_text("up", exact=True).wait_for()
    for name in gw.backends:
        page.locator(f'#backends-table tr[data-backend="{name}"]').first.wait_for()


def test_only_the_ui_files_are_served(gw: ExampleGateway) -> None:
    page = httpx.get(gw.admin_url + "/ui/", timeout=5)
    assert (
        page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    )
    for path in ("/ui/..%2fpreview.py", "/ui/%2e%2e/routes.py", "/ui/nope.js"):
        assert httpx.get(gw.admin_url + path, timeout=5).status_code == 404, path
    # The live endpoint is admin API: the token guards it.
    assert httpx.get(gw.admin_url + "/admin/live", timeout=5).status_code == 401


def test_live_sums_every_worker(gw: ExampleGateway) -> None:
    sent = 40
    for _ in range(sent):  # a new connection each: the two workers share them out
        assert httpx.get(gw.url + "/recommendations", timeout=10).status_code == 200

    def counted() -> float:
        doc = httpx.get(gw.admin_url + "/admin/live", headers=AUTH, timeout=5).json()
        return float(doc["route_totals"].get("recommendations", 0))

    wait_until(lambda: counted() == sent, f"{sent} requests of route recommendations counted")


def test_an_open_admin_is_said_to_be_open(
    page: Any, run_gateway: Any, backend_factory: Any
) -> None:
    """No admin.token: no login, a warning; and the Backends view of a balanced backend
    with one live endpoint and one closed loopback port."""
    backend = backend_factory(name="b")
    closed = f"http://127.0.0.1:{free_port()}"
    health = {"path": "/healthz", "interval": "1s", "timeout": "500ms", "healthy": 1,
              "unhealthy": 1}  # fmt: skip
    config = {
        "backends": {"pool": {"endpoints": [backend.url, closed], "health_check": health}},
        "routes": [{"name": "everything", "match": {"prefix": "/"}, "backend": "pool"}],
    }
    open_gw = run_gateway(config)
    page.goto(open_gw.admin_url + "/ui/")
    page.locator('#overview-table tr[data-route="everything"]').wait_for()
    assert page.get_by_role("alert").filter(has_text="The admin API is open").is_visible()
    assert page.locator("#login").is_hidden()
    page.get_by_role("link", name="Backends").click()
    rows = page.locator('#backends-table tr[data-backend="pool"]')
    row_of = {backend.url: rows.filter(has_text=backend.url), closed: rows.filter(has_text=closed)}
    state = {url: row.locator(".badge").first for url, row in row_of.items()}

    def states() -> tuple[str, str]:
        return state[backend.url].inner_text(), state[closed].inner_text()

    # Until their first checks both may be down (panic): wait for the checks' verdicts.
    wait_until(lambda: states() == ("healthy", "unhealthy"), "one endpoint up, one down")
    shot(page, "backends")
