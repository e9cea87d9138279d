"""One turn of the feedback loop (``retrain-on-feedback``) with a realistic batch of corrections: what the
champion gains on ToxiCN test, COLD test and the feedback holdout, what the gate decides, and how long
the loop takes.

    .venv/bin/python benchmarks/bench_feedback.py [--profile tiny] [--pool 3000] [--corrections 400]
    .venv/bin/python benchmarks/bench_feedback.py --profile micro      # smoke check, a few minutes

Everything runs in a throw-away clone, so this checkout's outputs, ``dvc.lock``, feedback store and
MLflow store are never touched:

1. **Clone.** ``git clone`` of ``--repo`` (default: the repository holding this script, its committed
   HEAD) into ``--work`` (default: ``<repo>-bench-feedback`` beside it, so ``../shared`` resolves as it
   does for the repository). The clone uses the repository's DVC cache (``dvc cache dir --local``), so
   ``dvc checkout`` restores the landed outputs and DVC's run-cache can restore unchanged stages. MLflow
   writes to ``<work>/mlruns``; Prefect runs on a temporary ephemeral API under ``<work>/.bench``.
2. **The champion before** is the clone's landed detector, ``models/stage2`` with its
   ``reports/metrics.json``: registered (``tasks.register.run_register``) and promoted
   (``tasks.promote.run_promote``).
3. **The batch.** A seeded sample of ``--pool`` distinct COLD *train* texts (``tasks.ingest.ingest``;
   never an evaluation set) is scored by the champion (``chintox.detector.Detector``, labels at its
   card's threshold; ``--backend``: vLLM if it starts, else hf). Of the texts it misjudges, a seeded sample
   of ``--corrections`` goes into a CSV ``text,label,moderator,note`` with COLD's own label: the
   simulated moderator corrects exactly what the champion got wrong. Rows whose text is in an evaluation
   set (ToxiCN val/test, COLD test) are left in: the import refuses them as leakage, and they are counted.
4. **One loop, timed.** The flow function ``flows.retrain_on_feedback.retrain_on_feedback`` is called
   in-process from inside the clone (``min_new=1``, ``push_outputs=False``): import (a new DVC version of
   the store), trigger, ``dvc exp run --temp ... evaluate`` with ``feedback.train=true``, registration,
   the gate. Phase times come from the flow's task runs (Prefect API), per-stage times of the DVC
   experiment from the timestamps of the lines DVC printed; the loop's wall time is measured around the
   call (the ephemeral Prefect server is started before, and timed on its own).
5. **Report.** ToxiCN test and COLD test accuracy / F1 of the champion before and of the retrained
   version, from their registry tags (``metrics.<set>.tuned.<metric>``: at the detector's own, val-tuned
   threshold, the figures the gate compares), the feedback holdout figure of both (the gate's
   ``promotion.feedback_holdout``: both detectors scored by the gate on the same held-out corrections),
   the gate's decision and reasons, the times; printed as markdown and written to ``--out`` (default
   ``reports/bench_feedback.json``; ``reports/bench_feedback_<profile>.json`` for another profile).

The feedback holdout is made of corrections of texts the champion misjudged: the champion's figure
there is near 0 by construction (exactly 0 where the gate's hf scorer agrees with the batch's scorer),
so that rule of the gate is easy to pass; the ToxiCN F1 and COLD accuracy rules are the hard part.

Whatever the gate decides is the result: nothing here is tuned, least of all on a test set. The
retrained detector is a fresh stage 2 from the same base with the corrections added, so its test
figures also move by training noise; the feedback holdout is the figure that isolates the corrections.
``--profile micro`` checks this script end to end in minutes: the champion is still the landed (tiny)
detector, the challenger a micro one, so the figures there say nothing about the loop's value.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCRATCH = ".bench"  # inside the clone, git-excluded: the corrections file, Prefect's home
# per profile: texts scored, corrections written, scoring backend
DEFAULTS = {"tiny": {"pool": 3000, "corrections": 400, "backend": "auto"},
            "micro": {"pool": 300, "corrections": 40, "backend": "hf"}}
SETS = (("toxicn_test", "ToxiCN test"), ("cold_test", "COLD test"))
PHASES = (("import-feedback", "import (validate, quarantine, dvc commit)"),
          ("new-corrections", "trigger (corrections since the champion)"),
          ("dvc-experiment", "DVC experiment (feedback.train=true, up to evaluate)"),
          ("register", "registration"), ("promote", "gate (scores the feedback holdout)"))
DVC_LINE = re.compile(r"Running stage '([^']+)'|Stage '([^']+)' (?:is cached - skipping run|didn't change, "
                      r"skipping)|Updating lock file|Ran experiment")


def sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if p.returncode:
        raise RuntimeError(f"`{' '.join(cmd)}` failed in {cwd} (exit {p.returncode}):\n"
                           f"{(p.stdout + p.stderr)[-3000:]}")
    return p.stdout


def dvc_bin() -> str:
    here = Path(sys.executable).parent / "dvc"
    return str(here) if here.is_file() else (shutil.which("dvc") or "dvc")


# ------------------------------------------------------------------------------------------ 1. clone
def prepare_clone(repo: Path, work: Path, fresh: bool) -> dict[str, Any]:
    """``git clone`` + the repository's DVC cache + ``dvc checkout``; refuses a non-empty ``work`` unless
    ``fresh`` and it is a work folder of this benchmark (it holds ``.bench``)."""
    if work.exists() and any(work.iterdir()):
        if not fresh:
            raise SystemExit(f"{work} exists and is not empty: pass --fresh to replace it, or another --work")
        if not (work / SCRATCH).is_dir():
            raise SystemExit(f"{work} is not a work folder of this benchmark (no {SCRATCH}/ in it): not removed")
        shutil.rmtree(work)
    t0 = time.monotonic()
    sh(["git", "clone", "-q", str(repo), str(work)], repo.parent)
    (work / SCRATCH).mkdir()
    with open(work / ".git" / "info" / "exclude", "a", encoding="utf-8") as f:
        f.write(f"\n/{SCRATCH}/\n")
    for k, v in (("user.name", "chintox-bench"), ("user.email", "bench@localhost")):
        sh(["git", "config", k, v], work)  # the DVC experiments are commits of the clone
    sh([dvc_bin(), "cache", "dir", "--local", str(repo / ".dvc" / "cache")], work)
    t1 = time.monotonic()
    unlocked = dvc_checkout(work)
    t2 = time.monotonic()
    return {"clone_s": round(t1 - t0, 1), "dvc_checkout_s": round(t2 - t1, 1), "not_in_dvc_lock": unlocked,
            "commit": sh(["git", "rev-parse", "HEAD"], work).strip()}


def dvc_checkout(work: Path) -> list[str]:
    """``dvc checkout``; outputs that ``dvc.lock`` has no hash for yet (a stage added since the lock was
    last reproduced: the experiment runs it) are returned, any other failure raised."""
    import yaml

    p = subprocess.run([dvc_bin(), "checkout"], cwd=work, capture_output=True, text=True, check=False)
    if p.returncode == 0:
        return []
    text = p.stdout + p.stderr
    failed = re.search(r"Checkout failed for following targets:\n(.*?)(?:\nIs your cache|\Z)", text, re.DOTALL)
    lock = yaml.safe_load((work / "dvc.lock").read_text(encoding="utf-8")) or {}
    locked = {o["path"] for st in (lock.get("stages") or {}).values() for o in st.get("outs") or []
              if o.get("md5")}
    targets = [t.strip() for t in failed.group(1).splitlines() if t.strip()] if failed else []
    if not targets or any(t in locked for t in targets):
        raise RuntimeError(f"`dvc checkout` failed in {work}:\n{text[-3000:]}")
    print(f"dvc checkout: {targets} not in dvc.lock yet (the experiment creates them)", flush=True)
    return targets


def set_env(work: Path) -> None:
    """Prefect: an ephemeral API under ``<work>/.bench``; MLflow: only what the config says; offline hub.
    Set before Prefect is imported."""
    home = work / SCRATCH / "prefect_home"
    home.mkdir(parents=True, exist_ok=True)
    for k in ("PREFECT_API_URL", "PREFECT_PROFILE", "MLFLOW_TRACKING_URI", "CHINTOX_PARENT_RUN_ID"):
        os.environ.pop(k, None)
    os.environ.update({
        "PREFECT_HOME": str(home), "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "INFO",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "DO_NOT_TRACK": "1", "MLFLOW_ENABLE_UV_AUTO_DETECT": "false",
    })


def mlflow_overrides(work: Path) -> dict[str, str]:
    return {"mlflow.tracking_uri": f"sqlite:///{(work / 'mlruns' / 'mlflow.db').resolve()}",
            "mlflow.artifact_root": str((work / "mlruns" / "artifacts").resolve())}


# ------------------------------------------------------------------------------------ 2. champion
def register_champion(cfg: Any, work: Path) -> dict[str, Any]:
    from tasks.promote import run_promote
    from tasks.register import run_register

    t0 = time.monotonic()
    reg = run_register(cfg, model_dir=work / cfg.paths.models / "stage2",
                       metrics_file=work / cfg.paths.reports / "metrics.json")
    dec = run_promote(cfg, version=str(reg["version"]))
    if not dec.get("promoted"):
        raise RuntimeError(f"the landed detector was not promoted in the empty registry: {dec}")
    return {"version": str(reg["version"]), "seconds": round(time.monotonic() - t0, 1)}


# ------------------------------------------------------------------------------------ 3. the batch
def score(detector_dir: Path, cfg: Any, texts: list[str], backend: str) -> tuple[list[float], float, str, float]:
    """(scores, the card's threshold, backend used, seconds): vLLM with the evaluate settings if asked
    (``auto``: if it starts), else hf. The environment is restored afterwards (vLLM sets variables the
    DVC stages would inherit)."""
    from chintox.detector import Detector

    ev = cfg.evaluate
    tried = ["vllm", "hf"] if backend == "auto" else [backend]
    for b in tried:
        env = dict(os.environ)
        try:
            kw = ({"block_size": ev.vllm_block_size, "prefix_caching": ev.vllm_prefix_caching,
                   "kvcache_gb": ev.vllm_kvcache_gb} if b == "vllm" else
                  {"batch_size": ev.batch_size, "device": ev.device})
            t0 = time.monotonic()
            det = Detector(detector_dir, backend=b, max_model_len=ev.max_model_len, **kw)
            try:
                scores = det.scores(texts)
            finally:
                det.close()
            return scores, det.threshold, b, round(time.monotonic() - t0, 1)
        except Exception as e:  # auto: a vLLM that does not start falls back to hf
            if b == tried[-1]:
                raise
            print(f"backend {b} failed ({type(e).__name__}: {str(e)[:300]}); trying {tried[-1]}", flush=True)
        finally:
            os.environ.clear()
            os.environ.update(env)
    raise AssertionError("unreachable")


def build_batch(cfg: Any, detector_dir: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from tasks.ingest import ingest

    frames, _ = ingest(cfg.data.raw_dir)
    cold = frames["cold"]
    rows = cold[(cold["split"] == "train") & cold["label"].notna()]
    seen: dict[str, int] = {}
    for text, label in zip(rows["text"], rows["label"], strict=True):
        t = str(text or "")
        if t.strip() and len(t) <= cfg.data.max_text_chars and t not in seen:
            seen[t] = int(label)
    rng = random.Random(args.seed)
    pool = rng.sample(sorted(seen), min(args.pool, len(seen)))
    scores, threshold, backend, secs = score(detector_dir, cfg, pool, args.backend)
    wrong = [(t, seen[t], s) for t, s in zip(pool, scores, strict=True) if int(s >= threshold) != seen[t]]
    picked = rng.sample(wrong, min(args.corrections, len(wrong)))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "moderator", "note"])
        for text, label, s in picked:
            w.writerow([text, label, "bench-moderator",
                        f"champion said {'toxic' if s >= threshold else 'not toxic'} (score {s:.3f})"])
    n_fn = sum(1 for _, label, _ in picked if label == 1)
    print(f"batch: {len(pool)} COLD train texts scored ({backend}, {secs} s), {len(wrong)} misjudged, "
          f"{len(picked)} corrections written ({n_fn} missed toxic, {len(picked) - n_fn} false alarms)", flush=True)
    return {"cold_train_texts": len(seen), "pool": len(pool), "scoring_backend": backend, "scoring_s": secs,
            "threshold": threshold, "pool_toxic_share": round(sum(seen[t] for t in pool) / max(len(pool), 1), 4),
            "pool_accuracy": round(1 - len(wrong) / max(len(pool), 1), 4), "misjudged": len(wrong),
            "corrections_written": len(picked), "missed_toxic": n_fn, "false_alarms": len(picked) - n_fn}


# ------------------------------------------------------------------------------------------ 4. loop
class Lines(logging.Handler):
    """Keeps (time, message) of the flow's task-run log lines: DVC's output, one line per record."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[float, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.created, str(getattr(record, "task_run_name", "")), record.getMessage()))


def stage_seconds(lines: list[tuple[float, str, str]], end: float | None) -> dict[str, float]:
    """Seconds from each stage's first DVC line to the next stage's (or the lock update / the end): the
    stage's command plus DVC's own checkout and hashing around it."""
    marks: list[tuple[float, str | None]] = []
    for t, task, msg in lines:
        if not task.startswith("dvc-experiment"):
            continue
        m = DVC_LINE.search(msg)
        if m:
            marks.append((t, m.group(1) or m.group(2)))
    out: dict[str, float] = {}
    for i, (t, stage) in enumerate(marks):
        if stage is None:
            continue
        nxt = marks[i + 1][0] if i + 1 < len(marks) else end
        if nxt is not None:
            out[stage] = round(out.get(stage, 0.0) + nxt - t, 1)
    return out


def task_runs(flow_run_id: Any, expect: set[str], timeout: float = 60.0) -> dict[str, dict[str, Any]]:
    """``{task name: {seconds, state, runs}}`` of the flow run, read from the Prefect API (awaited until
    every task in ``expect`` has ended: Prefect records task runs asynchronously)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as c:
            trs = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        out: dict[str, dict[str, Any]] = {}
        for tr in sorted(trs, key=lambda r: r.expected_start_time or r.created):
            one = out.setdefault(tr.name.rsplit("-", 1)[0], {"seconds": 0.0, "state": None, "runs": 0})
            if tr.start_time and tr.end_time and one["seconds"] is not None:
                one["seconds"] = round(one["seconds"] + (tr.end_time - tr.start_time).total_seconds(), 1)
            else:
                one["seconds"] = None
            one["state"], one["runs"] = tr.state_name, one["runs"] + tr.run_count
        if all(out.get(n, {}).get("seconds") is not None for n in expect) or time.monotonic() > deadline:
            return out
        time.sleep(2)


def run_loop(work: Path, args: argparse.Namespace, csv_file: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    from prefect import flow

    from flows._pipeline import read_metrics
    from flows.retrain_on_feedback import retrain_on_feedback

    @flow(name="bench-feedback-warm-up")
    def warm_up() -> int:
        return 1

    t0 = time.monotonic()
    warm_up()  # starts the ephemeral Prefect server outside the loop's clock
    prefect_start = round(time.monotonic() - t0, 1)
    handler = Lines()
    logger = logging.getLogger("prefect.task_runs")
    logger.addHandler(handler)
    t0 = time.monotonic()
    try:
        state = retrain_on_feedback(profile=args.profile, params=str(work / "params.yaml"), overrides=overrides,
                                    files=[str(csv_file)], backend=args.eval_backend, min_new=1,
                                    push_outputs=False, return_state=True)
        wall = time.monotonic() - t0
        result = state.result()  # raises if the flow failed
    finally:
        logger.removeHandler(handler)
    names = {p for p, _ in PHASES} if result.get("decision") != "waiting" else {"import-feedback"}
    runs = task_runs(state.state_details.flow_run_id, names)
    exp = result.get("experiment") or {}
    exp_end = next((t for t, task, msg in reversed(handler.lines) if task.startswith("dvc-experiment")), None)
    fb_summary = read_metrics(work, exp["rev"], "data/feedback_summary.json") if exp.get("rev") else None
    return {"result": result, "wall_s": round(wall, 1), "prefect_server_start_s": prefect_start,
            "tasks": runs, "stage_seconds": stage_seconds(handler.lines, exp_end), "feedback_sets": fb_summary}


# ----------------------------------------------------------------------------------------- 5. report
def figures(cfg: Any, version: str) -> dict[str, Any]:
    from mlflow import MlflowClient

    from chintox.metrics import find_metric_key
    from chintox.tracking import setup
    from tasks.promote import version_metrics

    setup(cfg)
    mv = MlflowClient().get_model_version(cfg.mlflow.registered_model, version)
    flat = version_metrics(MlflowClient(), mv)
    out: dict[str, Any] = {"version": version, "eval_backend": (mv.tags or {}).get("eval_backend"),
                           "threshold": (mv.tags or {}).get("threshold")}
    for s, _ in SETS:
        for m in ("accuracy", "f1"):
            k = find_metric_key(flat, s, m)
            out[f"{s}.{m}"] = flat[k] if k else None
            out[f"{s}.{m}.tag"] = f"metrics.{k}" if k else None
    fh = (mv.tags or {}).get("promotion.feedback_holdout")
    out["promotion.feedback_holdout"] = json.loads(fh) if fh else None
    out["promotion.decision"] = (mv.tags or {}).get("promotion.decision")
    return out


def fmt(v: Any, nd: int = 4, sign: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:{'+' if sign else ''}.{nd}f}" if isinstance(v, float) else str(v)


def markdown(res: dict[str, Any]) -> str:
    b, a = res["before"], res.get("after")
    fh = (a or {}).get("promotion.feedback_holdout") or {}
    metric = fh.get("metric", "accuracy")
    head = ["detector"] + [f"{n} {m}" for _, n in SETS for m in ("acc", "F1")] + \
        [f"feedback holdout {metric} ({fh.get('rows', '-')} rows)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(name: str, f: dict[str, Any], holdout: Any, sign: bool = False) -> str:
        cells = [name] + [fmt(f.get(f"{s}.{m}"), sign=sign) for s, _ in SETS for m in ("accuracy", "f1")]
        return "| " + " | ".join(cells + [fmt(holdout, sign=sign)]) + " |"

    lines.append(row(f"champion before (v{b['version']})", b, fh.get("champion")))
    if a:
        lines.append(row(f"retrained (v{a['version']}, {res['gate']['decision']})", a, fh.get("candidate")))
        delta = {k: (a[k] - b[k]) if isinstance(a.get(k), float) and isinstance(b.get(k), float) else None
                 for k in a}
        d_fh = (fh["candidate"] - fh["champion"]) if fh.get("candidate") is not None and fh.get("champion") \
            is not None else None
        lines.append(row("change", delta, d_fh, sign=True))
    out = ["## Feedback loop: " + res["settings"]["profile"] + " profile", "", *lines, "",
           ("The feedback holdout holds corrections of texts the champion misjudged, so its figure there is "
            "near 0 by construction (the gate scores it with hf; the batch was picked with "
            f"{res['counts']['scoring_backend']}); the retrained version's is the share of held-out "
            "corrections it gets right. Test figures are at each detector's own tuned threshold "
            "(`metrics.<set>.tuned.*`)."), ""]
    if res["settings"]["profile"] != "tiny":
        prof = res["settings"]["profile"]
        out += [(f"Smoke check: the champion is the landed detector, the retrained one a {prof} model; these "
                 "figures check the script, not the loop's value."), ""]
    g = res["gate"]
    out += [f"Gate: **{g['decision']}**; champion after the loop: v{g['champion_after']}."]
    out += [f"- {r}" for r in g["reasons"]]
    c = res["counts"]
    out += ["", (f"Batch: {c['pool']} COLD train texts scored by the champion ({c['scoring_backend']}), "
             f"{c['misjudged']} misjudged ({fmt(c['pool_accuracy'])} accuracy), {c['corrections_written']} "
             f"corrections written ({c['missed_toxic']} missed toxic, {c['false_alarms']} false alarms); import: "
             f"{c.get('accepted')} accepted, {c.get('quarantined')} quarantined {c.get('quarantined_by_rule')} "
             f"(leakage: {c.get('leakage')}); feedback sets: train {c.get('feedback_train')}, holdout "
             f"{c.get('feedback_holdout')}."), ""]
    t = res["timing"]
    out += ["| phase of one loop | seconds |", "|---|---|"]
    for name, label in PHASES:
        out.append(f"| {label} | {fmt((t['tasks'].get(name) or {}).get('seconds'), 1)} |")
    out.append(f"| **whole loop (wall)** | **{fmt(t['loop_wall_s'], 1)}** |")
    out += ["", (f"(set-up outside the loop: clone {t['clone_s']} s, dvc checkout {t['dvc_checkout_s']} s, "
                 f"champion registered and promoted {t['champion_register_s']} s, batch scored "
                 f"{c['scoring_s']} s, Prefect server start {t['prefect_server_start_s']} s)"), "",
            "| DVC stage | what DVC did | seconds (from its log lines) |", "|---|---|---|"]
    for stage, what in res["experiment"]["stages"].items():
        out.append(f"| {stage} | {what} | {fmt(t['stage_seconds'].get(stage), 1)} |")
    return "\n".join(out) + "\n"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="tiny", help="params.yaml profile of the loop (default tiny; micro: "
                    "a smoke check in minutes, with --pool 300 --corrections 40 --backend hf by default)")
    ap.add_argument("--repo", type=Path, default=REPO, help="repository to clone (default: this script's, "
                    "its committed HEAD)")
    ap.add_argument("--work", type=Path, default=None,
                    help="the clone, MLflow store and scratch (default: <repo>-bench-feedback beside the repo)")
    ap.add_argument("--fresh", action="store_true", help="remove an earlier work folder of this benchmark first")
    ap.add_argument("--pool", type=int, default=None, help="COLD train texts the champion scores (default: "
                    + ", ".join(f"{p} {d['pool']}" for p, d in DEFAULTS.items()) + ")")
    ap.add_argument("--corrections", type=int, default=None, help="misjudged texts corrected (default: "
                    + ", ".join(f"{p} {d['corrections']}" for p, d in DEFAULTS.items()) + ")")
    ap.add_argument("--backend", choices=["auto", "vllm", "hf"], default=None,
                    help="scorer of the pool (default: tiny auto = vLLM if it starts, else hf; micro hf)")
    ap.add_argument("--eval-backend", choices=["vllm", "hf"], default=None,
                    help="evaluate.backend of the retrain (default: the profile's)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the pool and correction samples")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override for the loop (repeatable), as chintox --set")
    ap.add_argument("--out", type=Path, default=None, help="result JSON (default reports/bench_feedback.json "
                    "of --repo; reports/bench_feedback_<profile>.json for a profile other than tiny)")
    args = ap.parse_args()
    d = DEFAULTS.get(args.profile, DEFAULTS["tiny"])
    args.pool = d["pool"] if args.pool is None else args.pool
    args.corrections = d["corrections"] if args.corrections is None else args.corrections
    args.backend = args.backend or d["backend"]
    args.repo = args.repo.resolve()
    args.work = (args.work or args.repo.parent / f"{args.repo.name}-bench-feedback").resolve()
    suffix = "" if args.profile == "tiny" else f"_{args.profile}"
    args.out = args.out or args.repo / "reports" / f"bench_feedback{suffix}.json"
    return args


def parse_sets(sets: list[str]) -> dict[str, Any]:
    import yaml

    out = {}
    for s in sets:
        k, sep, v = s.partition("=")
        if not sep:
            raise SystemExit(f"--set {s!r}: expected KEY=VALUE")
        out[k.strip()] = yaml.safe_load(v)
    return out


def main() -> None:
    args = parse_args()
    t_start = time.monotonic()
    res: dict[str, Any] = {
        "what": "one retrain-on-feedback loop: COLD train texts the champion misjudges, corrected with COLD's "
                "labels, imported, retrained (DVC experiment, feedback.train=true), registered and gated",
        "command": "python benchmarks/bench_feedback.py " + " ".join(sys.argv[1:]),
        "git_commit": sh(["git", "rev-parse", "HEAD"], args.repo).strip(),
        "git_dirty": bool(sh(["git", "status", "--porcelain", "--untracked-files=no"], args.repo).strip()),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_start": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"profile": args.profile, "pool": args.pool, "corrections": args.corrections,
                     "backend": args.backend, "eval_backend": args.eval_backend, "seed": args.seed,
                     "sets": args.sets},
    }
    print(f"cloning {args.repo.name} into {args.work}", flush=True)
    clone = prepare_clone(args.repo, args.work, args.fresh)
    work = args.work
    res["clone_commit"] = clone["commit"]
    set_env(work)
    os.chdir(work)
    sys.path.insert(0, str(work))  # the clone's code, the same the DVC stages run

    from chintox.config import load_config

    overrides = {**mlflow_overrides(work), **parse_sets(args.sets)}
    cfg = load_config(work / "params.yaml", args.profile, overrides)
    champ = register_champion(cfg, work)
    print(f"champion before: v{champ['version']} (the landed models/stage2), {champ['seconds']} s", flush=True)
    csv_file = work / SCRATCH / "corrections.csv"
    counts = build_batch(cfg, work / cfg.paths.models / "stage2", csv_file, args)

    print("running one retrain-on-feedback loop", flush=True)
    loop = run_loop(work, args, csv_file, overrides)
    result = loop["result"]
    imp = (result.get("imports") or [{}])[0]
    by_rule = imp.get("by_rule") or {}
    fs = loop["feedback_sets"] or {}
    counts.update({"accepted": imp.get("accepted"), "quarantined": imp.get("quarantined"),
                   "quarantined_by_rule": by_rule, "leakage": by_rule.get("leakage", 0),
                   "store_version": imp.get("store_version"), "new_since_champion": result["counts"].get("new"),
                   "feedback_train": (fs.get("train") or {}).get("rows"),
                   "feedback_holdout": (fs.get("holdout") or {}).get("rows"), "feedback_sets": fs})
    res["counts"] = counts
    res["before"] = figures(cfg, champ["version"])
    if result.get("decision") == "waiting":
        raise RuntimeError(f"the loop did not retrain (waiting): {result.get('counts')}")
    res["after"] = figures(cfg, str(result["version"]))
    promo = result.get("promotion") or {}
    gate = promo.get("gate") or {}
    from mlflow import MlflowClient

    from chintox.registry import CHAMPION, version_by_alias

    champ_after = version_by_alias(MlflowClient(), cfg.mlflow.registered_model, CHAMPION)
    res["gate"] = {"decision": result["decision"], "passed": gate.get("passed"), "reasons": gate.get("reasons", []),
                   "comparison": gate.get("comparison", {}),
                   "champion_after": str(champ_after.version) if champ_after else None}
    res["experiment"] = result.get("experiment") or {}
    res["timing"] = {"clone_s": clone["clone_s"], "dvc_checkout_s": clone["dvc_checkout_s"],
                     "champion_register_s": champ["seconds"], "prefect_server_start_s": loop["prefect_server_start_s"],
                     "loop_wall_s": loop["wall_s"], "tasks": loop["tasks"], "stage_seconds": loop["stage_seconds"],
                     "benchmark_wall_s": round(time.monotonic() - t_start, 1)}
    res["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    res["work"] = {"mlflow": overrides["mlflow.tracking_uri"].replace(str(work), "<work>"),
                   "note": "the clone keeps the registry, the experiment (refs/exps) and the store for inspection"}
    md = markdown(res)
    res["markdown"] = md
    print("\n" + md, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    print(f"wrote {args.out}; loop {loop['wall_s']} s, benchmark {res['timing']['benchmark_wall_s']} s", flush=True)


if __name__ == "__main__":
    main()
