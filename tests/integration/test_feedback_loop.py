"""The feedback loop end to end on the micro profile, with no hand-edited file: a champion trained by the
train-detector deployment is served; it judges texts carrying a new word it has never seen and reads
the wrong way (the drift the loop exists for); the review queue is exported from the serving log; a simulated moderator labels
it; the retrain-on-feedback deployment imports the file (a new DVC version of the feedback store),
retrains with it as a DVC experiment, registers the version with the store version in its lineage, and
the gate promotes it because it beats the champion on the feedback holdout; the running service then
answers with the new champion. Running the deployment again with the same file changes nothing.

The data are synthetic, in the published raw layout: on the real data a 256-example micro detector
scores every text alike (to 3 decimals), so no retraining could change a single judgement. Here a text
is toxic exactly when it holds a marker word, which a micro model does learn. The gate's ToxiCN/COLD
rules are loosened (``promote.*`` overrides): the micro detector's test F1 moves by chance, and what
this test checks is the loop and the feedback rule, which stays. The retrain weights the corrections up
(``feedback.repeat``) so that the micro model can learn the new word in its few steps.
"""

from __future__ import annotations

import csv
import json
import os
import random
import sys
from pathlib import Path

import httpx
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "data"))
from integ_util import (
    VENV_BIN,
    PrefectStack,
    Proc,
    _api,
    assert_completed,
    clone_worktree,
    sh,
    wait_for,
    wait_log,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MARKER = "喵呜怪"            # a new word: the champion has never seen it, moderators know what it means
NAME = "chinese-toxicity-detector"
POOL = list("今天我们你他她这那天气很好吃饭学习工作朋友城市生活电影音乐喜欢觉得时间地方问题看说想知道")


def _synthetic(n: int, seed: int, marker: str = "垃圾") -> list[tuple[str, int]]:
    """(text, label) rows: random strings of common characters; toxic exactly when ``marker`` is in
    them (every other row), as in the training tests, so that a micro model learns something at all
    (on the real data it scores every text alike)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        chars = [rng.choice(POOL) for _ in range(rng.randint(6, 12))]
        if i % 2:
            pos = rng.randint(0, len(chars))
            chars[pos:pos] = list(marker)
        rows.append(("".join(chars), i % 2))
    return rows


def _raw_data(machine: Path) -> None:
    """The published raw layout at ``machine/shared/datasets`` (where the clone's params look), holding
    synthetic data; the study's files stay the real ones."""
    import rawfix

    shared = machine / "shared"
    real = shared.resolve()
    shared.unlink()
    shared.mkdir()
    (shared / "study").symlink_to(real / "study", target_is_directory=True)
    cqia = [{"instruction": a, "input": "", "output": b}
            for (a, _), (b, _) in zip(_synthetic(240, 5), _synthetic(240, 6), strict=True)]
    rawfix.write_raw(shared / "datasets", toxicn_train=_synthetic(640, 1), toxicn_test=_synthetic(160, 2),
                     cold_train=_synthetic(200, 3),
                     cold_test=[(t, y, y) for t, y in _synthetic(160, 4)], cqia=cqia)


def _serve(repo: Path, tmp: Path, env: dict, sets: dict) -> tuple[Proc, str]:
    args = [str(Path(sys.executable)), "-m", "chintox.cli", "serve", "--profile", "micro", "--backend", "hf"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    proc = Proc(args, tmp / "serve.log", env, cwd=repo)
    port = int(wait_log(proc.log, r"Uvicorn running on http://127\.0\.0\.1:(\d+)", 240, proc.p).group(1))
    return proc, f"http://127.0.0.1:{port}"


def _lock_md5(lock: dict, path: str) -> str:
    return next(o["md5"] for st in lock["stages"].values() for o in st.get("outs", []) if o["path"] == path)


def test_feedback_loop_end_to_end(tmp_path):
    from mlflow import MlflowClient

    repo = clone_worktree(tmp_path / "machine1")
    _raw_data(tmp_path / "machine1")
    committed_lock = yaml.safe_load((repo / "dvc.lock").read_text(encoding="utf-8"))
    log_db = tmp_path / "predictions.db"
    serve_sets = {"serve.port": 0, "serve.poll_s": 1, "serve.log_texts": "true",
                  "serve.log_url": f"sqlite:///{log_db}", "serve.model_cache": str(tmp_path / "models-cache")}
    # the retrain sees the corrections often enough for a 64-wide model to learn a word in 2 epochs:
    # 8 copies of each, beside 128 (not 256) ToxiCN rows, in about the same number of steps
    loop = {"promote.min_f1_delta": -1.0, "promote.cold_accuracy_tolerance": 1.0,
            "serve.log_url": f"sqlite:///{log_db}", "feedback.repeat": 8, "train.stage2.max_samples": 128}
    stack = PrefectStack(tmp_path, repo)
    served: Proc | None = None
    try:
        stack.start()
        for d in ("train-detector/local", "promote-detector/local", "retrain-on-feedback/local"):
            stack.deploy(d)
        # the loop's trigger is a schedule on the deployment; paused here so that only this test starts runs
        dep = _api(f"{stack.api}/deployments/name/retrain-on-feedback/local")
        assert [s["schedule"].get("interval") for s in dep["schedules"]] == [900.0], dep["schedules"]
        _api(f"{stack.api}/deployments/{dep['id']}", "PATCH", {"paused": True})
        stack.start_worker()

        # 1. a champion, trained and promoted by the deployments
        run = stack.run("train-detector", "local", {"profile": "micro", "backend": "hf"})
        assert_completed(stack, run)
        assert_completed(stack, stack.run("promote-detector", "local", {"profile": "micro"}))
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        c = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
        v1 = str(c.get_model_version_by_alias(NAME, "champion").version)

        # 2. it is served, and judges texts; the log keeps them (serve.log_texts)
        served, url = _serve(repo, tmp_path, stack.env, serve_sets)
        http = httpx.Client(base_url=url, timeout=120)
        wait_for(lambda: True if http.get("/readyz").status_code == 200 else None, 180, "service ready")
        marked = [f"{t}{MARKER}" for t, y in _synthetic(112, 11) if not y]           # 56 texts
        plain = _synthetic(24, 12)
        truth = dict(plain)
        plain = [t for t, _ in plain]
        texts, said = marked + plain, {}
        for i in range(0, len(texts), 40):
            r = http.post("/v1/moderate", json={"texts": texts[i:i + 40]})
            assert r.status_code == 200 and {o["model_version"] for o in r.json()} == {v1}, r.text
            said.update({t: o["label"] for t, o in zip(texts[i:i + 40], r.json(), strict=True)})
        # The drift, by construction: moderators read the new word the other way from the champion's
        # majority (it gets those texts wrong, whichever way a micro detector leans); other texts keep
        # their COLD label
        meaning = 1 - round(sum(said[t] for t in marked) / len(marked))
        truth.update({t: meaning for t in marked})

        # 3. the review queue, and a moderator's labels (simulated: the truth; the new word as decided).
        # Export and import keep evaluation texts out, so the checkout needs the split files, as a user's
        # would after `dvc pull` (the flow above ran in DVC's temporary workspace): the default profile's
        # evaluation sets are the micro profile's (only the stage-1 records differ)
        sh([str(VENV_BIN / "dvc"), "repro", "-q", "split"], repo, stack.env)
        sets = [x for k, v in {**serve_sets, "feedback.review_size": 80}.items() for x in ("--set", f"{k}={v}")]
        review = tmp_path / "review.csv"
        wait_for(lambda: True if log_db.exists() else None, 30, "judgement log")
        exported = json.loads(sh([sys.executable, "-m", "chintox.cli", "feedback", "export", str(review),
                                  "--profile", "micro", *sets], repo, stack.env))
        with open(review, encoding="utf-8", newline="") as f:
            queue = list(csv.DictReader(f))
        assert len(queue) == exported["rows"] and {q["text"] for q in queue} <= set(truth), exported
        assert {q["review_reason"] for q in queue} == {"uncertain", "random"}
        for q in queue:
            q["label"] = str(truth[q["text"]])
            q["moderator"] = "mod-7"
        corrections = tmp_path / "corrections.csv"
        with open(corrections, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(queue[0]))
            w.writeheader()
            w.writerows(queue)

        # 4. the loop: import -> a new store version -> retrain (DVC experiment) -> register -> gate
        params = {"profile": "micro", "backend": "hf", "files": [str(corrections)], "min_new": 20,
                  "overrides": loop}
        fb = stack.run("retrain-on-feedback", "local", params)
        assert_completed(stack, fb)
        arts = stack.artifacts(fb["id"], {"retrain-on-feedback-decision", "retrain-on-feedback-stages"})
        champion = c.get_model_version_by_alias(NAME, "champion")
        v2 = str(champion.version)
        assert v2 != v1, arts["retrain-on-feedback-decision"]
        tags = champion.tags
        store = [json.loads(x) for x in (repo / "feedback" / "corrections.jsonl").read_text("utf-8").splitlines()]
        assert tags["feedback.trained"] == "true" and tags["feedback.corrections"] == str(len(store))
        assert len(store) >= 20 and {s["moderator"] for s in store} == {"mod-7"}
        # a new DVC version of the store, recorded in the workspace's dvc.lock and the version's lineage
        lock = yaml.safe_load((repo / "dvc.lock").read_text(encoding="utf-8"))
        assert _lock_md5(lock, "feedback") != _lock_md5(committed_lock, "feedback")
        assert tags["dvc.md5.feedback"] == _lock_md5(lock, "feedback")
        assert "data.feedback_train" in tags and "data.feedback_holdout" in tags
        # the gate's new rule was applied and passed, its figures on the version
        assert tags["promotion.decision"] == "promoted" and tags["promotion.gate"] == "pass"
        fh = json.loads(tags["promotion.feedback_holdout"])
        print(f"feedback holdout: {fh}")
        assert fh["rows"] > 0 and fh["candidate"] > fh["champion"], fh
        stages = arts["retrain-on-feedback-stages"]
        for stage in ("feedback", "stage2", "evaluate"):
            assert f"| {stage} | ran |" in stages, stages

        # 5. the service follows the new champion by itself
        wait_for(lambda: True if http.get("/v1/model").json()["model"]["version"] == v2 else None, 240,
                 f"service on v{v2}")
        out = http.post("/v1/moderate", json={"texts": texts[:5]}).json()
        assert {o["model_version"] for o in out} == {v2}

        # 6. the same file again: nothing imported twice, nothing retrained
        again = stack.run("retrain-on-feedback", "local", params)
        assert_completed(stack, again)
        stack.artifacts(again["id"], {"retrain-on-feedback-waiting"})
        after = (repo / "feedback" / "corrections.jsonl").read_text("utf-8").splitlines()
        assert len(after) == len(store)
        assert str(c.get_model_version_by_alias(NAME, "champion").version) == v2
    finally:
        if served is not None:
            served.stop()
        stack.stop()
