"""The tests' Prefect API helper retries what Prefect's server marks retryable (503 on a busy SQLite
database, as CI's loaded machine once saw) and nothing else."""

from __future__ import annotations

import json
import threading
import urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import integ_util
import pytest


def _server(codes: list[int]):
    """A loopback server that answers the given status codes in turn, then 200 with a JSON body."""
    seen: list[str] = []

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):  # keep the test output clean
            pass

        def do_POST(self):
            seen.append(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
            code = codes.pop(0) if codes else 200
            body = json.dumps({"ok": True} if code == 200 else {"exception_message": "x"}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, seen


def test_busy_server_is_retried_until_it_answers(monkeypatch):
    monkeypatch.setattr(integ_util, "API_RETRY_FOR_S", 30.0)
    srv, seen = _server([503, 503, 502])
    try:
        out = integ_util._api(f"http://127.0.0.1:{srv.server_address[1]}/x", "POST", {"a": 1})
    finally:
        srv.shutdown()
    assert out == {"ok": True}
    assert seen == ['{"a": 1}'] * 4  # three refusals, then the answer, each with the same body


def _refused(codes: list[int], monkeypatch, retry_for_s: float) -> tuple[int, int]:
    """The status ``_api`` raises against a server answering ``codes``, and how many requests it sent."""
    monkeypatch.setattr(integ_util, "API_RETRY_FOR_S", retry_for_s)
    srv, seen = _server(codes)
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            integ_util._api(f"http://127.0.0.1:{srv.server_address[1]}/x", "POST", {})
    finally:
        srv.shutdown()
    return e.value.code, len(seen)


def test_other_errors_are_raised_at_once(monkeypatch):
    assert _refused([404], monkeypatch, 30.0) == (404, 1)


def test_a_server_busy_past_the_deadline_is_raised(monkeypatch):
    assert _refused([503] * 3, monkeypatch, 0.0) == (503, 1)
