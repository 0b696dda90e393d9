"""The buffered access log: formats, config, sampling, batching, reopening."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgegw.config import parse_config
from edgegw.config.access_log import DEFAULT_FIELDS
from edgegw.errors import ConfigError
from edgegw.model import AccessLogConfig
from edgegw.observe import access_log

SCOPE = {
    "client": ("203.0.113.7", 4242),
    "http_version": "1.1",
    "headers": [(b"user-agent", b'curl "8"'), (b"referer", b"http://a.example/")],
}
WHEN = 1_700_000_000.25  # 2023-11-14T22:13:20.250Z


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "runtime"
    folder.mkdir()
    access_log.set_runtime_dir(folder)
    yield folder
    access_log.set_runtime_dir(None)


def record(status: int = 200, path: str = "/a?b=1", request_id: bytes = b"abc") -> tuple:  # type: ignore[type-arg]
    return (WHEN, "r", "POST", path, status, 0.0123456, None, 3, 4, request_id, "",
            "203.0.113.7", SCOPE)  # fmt: skip


def line(config: AccessLogConfig, rec: tuple, tmp_path: Path) -> str:  # type: ignore[type-arg]
    log = access_log.AccessLog(config)
    log.records.append(rec)
    log.flush()
    log.close()
    return Path(config.path).read_text()


def test_default_json_line(tmp_path: Path) -> None:
    text = line(AccessLogConfig(path=str(tmp_path / "a.log")), record(), tmp_path)
    assert text.endswith("\n") and text.count("\n") == 1
    assert json.loads(text) == {
        "time": "2023-11-14T22:13:20.250Z",
        "route": "r",
        "method": "POST",
        "path": "/a?b=1",
        "status": 200,
        "duration_ms": 12.346,
        "backend": None,
        "bytes_in": 3,
        "bytes_out": 4,
        "client": "203.0.113.7",
        "request_id": "abc",
        "trace_id": "",
    }
    assert list(json.loads(text)) == list(DEFAULT_FIELDS)


def test_hostile_values_stay_inside_their_json_string(tmp_path: Path) -> None:
    # A path or a client's request id with quotes, backslashes, controls and latin-1
    # bytes must not end the string or the line (a forged log entry).
    path = '/x"},"status":200,"a":"\\\n\x00\xff'
    rid = b'"}\\'
    fields = ("path", "request_id", "user_agent")
    config = AccessLogConfig(path=str(tmp_path / "a.log"), fields=fields)
    text = line(config, record(path=path, request_id=rid), tmp_path)
    assert text.count("\n") == 1
    assert json.loads(text) == {"path": path, "request_id": '"}\\', "user_agent": 'curl "8"'}


def test_combined_line(tmp_path: Path) -> None:
    config = AccessLogConfig(path=str(tmp_path / "a.log"), format="combined")
    text = line(config, record(path='/p"q'), tmp_path)
    assert text == (
        '203.0.113.7 - - [14/Nov/2023:22:13:20 +0000] "POST /p\\x22q HTTP/1.1" 200 4 '
        '"http://a.example/" "curl \\x228\\x22"\n'
    )


def test_config_forms() -> None:
    base = "version: 1\naccess_log: "
    assert parse_config(base + "false").access_log == AccessLogConfig(enabled=False)
    assert parse_config(base + "true").access_log == AccessLogConfig()
    config = parse_config(
        base + "{path: /var/log/edgegw.log, fields: [time, status], sample_2xx: 0.5}"
    ).access_log
    assert (config.path, config.fields, config.sample_2xx) == (
        "/var/log/edgegw.log", ("time", "status"), 0.5,
    )  # fmt: skip
    with pytest.raises(ConfigError) as err:
        parse_config(base + "{fields: [stauts], sample_2xx: 2, format: xml, pth: x}")
    text = str(err.value)
    for expected in ("did you mean 'status'", "from 0 to 1", "json, combined", "pth"):
        assert expected in text, text


def test_sampling_keeps_every_non_2xx(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = access_log.AccessLog(AccessLogConfig(path=str(path), sample_2xx=0.0))
    for status in (200, 204, 404, 503, 200):  # no loop: each written at once
        log.add("r", "GET", "/", status, 0.001, None, 0, 0, b"id", "", SCOPE)
    log.close()
    assert [json.loads(t)["status"] for t in path.read_text().splitlines()] == [404, 503]


async def test_lines_wait_for_the_batch_then_a_timer_writes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(access_log, "FLUSH_SECONDS", 0.05)
    path = tmp_path / "a.log"
    log = access_log.AccessLog(AccessLogConfig(path=str(path)))
    log.add("r", "GET", "/1", 200, 0.001, "b", 0, 0, b"id-1", "", SCOPE)
    log.add("r", "GET", "/2", 200, 0.001, "b", 0, 0, b"id-2", "", SCOPE)
    assert not path.exists()  # nothing written on the request path
    for _ in range(100):
        await asyncio.sleep(0.02)
        if path.exists() and path.read_text().count("\n") == 2:
            break
    assert [json.loads(t)["request_id"] for t in path.read_text().splitlines()] == ["id-1", "id-2"]
    log.close()


def test_trace_id_is_a_field(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = access_log.AccessLog(AccessLogConfig(path=str(path)))
    log.add("r", "GET", "/", 200, 0.001, None, 0, 0, b"1", "4bf92f3577b34da6a3ce929d0e0e4736", {})
    log.add("r", "GET", "/", 200, 0.001, None, 0, 0, b"2", "", {})
    lines = [json.loads(t) for t in path.read_text().splitlines()]
    assert [line["trace_id"] for line in lines] == ["4bf92f3577b34da6a3ce929d0e0e4736", ""]
    log.close()


async def test_only_the_client_address_is_kept_by_default() -> None:
    log = access_log.AccessLog(AccessLogConfig(path="stdout"))
    log.add("r", "GET", "/", 200, 0.001, None, 0, 0, b"id", "", SCOPE)
    assert [r[11:] for r in log.records] == [("203.0.113.7", None)]  # no scope kept
    log.records.clear()


def test_reopen_after_rotation(tmp_path: Path, runtime_dir: Path) -> None:
    path = tmp_path / "a.log"
    log = access_log.AccessLog(AccessLogConfig(path=str(path)))
    log.add("r", "GET", "/before", 200, 0.001, None, 0, 0, b"1", "", {})  # no loop: written now
    path.rename(tmp_path / "a.log.1")
    log.add("r", "GET", "/late", 200, 0.001, None, 0, 0, b"2", "", {})  # still the open file
    access_log.request_reopen(runtime_dir)
    log.add("r", "GET", "/after", 200, 0.001, None, 0, 0, b"3", "", {})
    log.close()
    rotated = [json.loads(t)["path"] for t in (tmp_path / "a.log.1").read_text().splitlines()]
    assert rotated == ["/before", "/late"]
    assert [json.loads(t)["path"] for t in path.read_text().splitlines()] == ["/after"]
