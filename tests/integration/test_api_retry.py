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


def test_other_errors_and_a_server_busy_past_the_deadline_are_raised(monkeypatch):
    srv, seen = _server([404])
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            integ_util._api(f"http://127.0.0.1:{srv.server_address[1]}/x", "POST", {})
        assert e.value.code == 404 and len(seen) == 1  # not retried
        monkeypatch.setattr(integ_util, "API_RETRY_FOR_S", 0.0)
        srv_busy, seen_busy = _server([503] * 50)
        try:
            with pytest.raises(urllib.error.HTTPError) as e:
                integ_util._api(f"http://127.0.0.1:{srv_busy.server_address[1]}/x", "POST", {})
            assert e.value.code == 503 and len(seen_busy) == 1
        finally:
            srv_busy.shutdown()
    finally:
        srv.shutdown()
