"""Model-registry latency on three MLflow backends, in one run: a registration and alias reads.

    .venv/bin/python benchmarks/bench_registry.py [--out reports/bench_registry.json] [--reads 100] [--repeats 3]

Backends (all on 127.0.0.1, all in a temp dir deleted afterwards):

1. ``sqlite``: MLflow embedded, no server; tracking URI ``sqlite:///<tmp>/sqlite/mlflow.db`` (the project's
   default kind of store, :mod:`chintox.tracking`), artifacts in a local folder.
2. ``server+sqlite``: ``mlflow server`` on a SQLite backend store, started exactly as
   :class:`chintox.services.Services` starts its MLflow server (``--artifacts-destination``,
   ``--serve-artifacts``, ``--workers 1``, ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``, the store URI in
   ``MLFLOW_BACKEND_STORE_URI``); only the backend store differs from 3., so 2. vs 3. isolates the database.
3. ``server+postgresql``: the shared stack's MLflow server on its PostgreSQL
   (``Services(<tmp>, ...).start(["postgres", "mlflow"])``, purged afterwards).

Clients reach 2. and 3. over HTTP (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``). A micro detector (the registry
tests' ``microdet``: random-weight micro Qwen2, tokenizer, prompt, card) is built once. Measured per backend:

- **registration**: one ``tasks.register.run_register`` call (the pyfunc model logged with its artifacts
  through the store, a new version registered with its tags, the ``challenger`` alias set), after one
  untimed warm-up registration (which also creates the experiment and the registered model). Each call
  gets metrics that differ slightly (``f1`` 0.700, 0.701, ...), so it registers a new version instead
  of returning the one already registered. ``--repeats`` timed registrations per backend; median, min, max.
- **alias reads**: ``MlflowClient.get_model_version_by_alias(name, "challenger")`` ``--reads`` times in a
  row (one client per backend, made beforehand; 5 untimed warm-up reads first); the total seconds and the
  per-read median and p95 (ms). Per backend the median over ``--rounds`` rounds.

The machine is shared and noisy: registrations and reads run in rounds, each round visiting every
backend once, in an order rotated from round to round, so a slow spell falls on all backends alike;
every figure is printed beside the embedded ``sqlite`` baseline of the same run, as a ratio, and
``server+postgresql`` against ``server+sqlite``. Results: printed and written to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for _p in (REPO / "tests", REPO / "tests" / "unit" / "registry"):
    sys.path.insert(0, str(_p))

os.environ["MLFLOW_ENABLE_UV_AUTO_DETECT"] = "false"
os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
for _k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "CHINTOX_PARENT_RUN_ID"):
    os.environ.pop(_k, None)

from chintox.services import HOST, free_port, http_ok, mlflow_server  # after the path set-up

BACKENDS = ("sqlite", "server+sqlite", "server+postgresql")
BASELINE = "sqlite"
WARMUP_READS = 5
ALIAS = "challenger"


# ------------------------------------------------------------------------------------------ servers
class SqliteServer:
    """``mlflow server`` on a SQLite store, started by the stack's own :func:`chintox.services.mlflow_server`."""

    def __init__(self, root: Path, timeout: float = 180.0):
        self.root, self.timeout = root, timeout
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = root / "mlflow-server.log"
        self.startup_s: float | None = None
        self.cmd: list[str] = []

    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in (
            "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_BACKEND_STORE_URI", "MLFLOW_DEFAULT_ARTIFACT_ROOT")}
        self.cmd, env = mlflow_server(f"sqlite:///{self.root / 'mlflow.db'}", self.root / "mlflow-artifacts",
                                      self.port, env)
        t = time.monotonic()
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(self.cmd, env=env, cwd=self.root, stdin=subprocess.DEVNULL,
                                         stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = t + self.timeout
        while not http_ok(f"{self.uri}/health"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-3000:]
                self.stop()
                raise RuntimeError(f"mlflow server (sqlite) did not answer /health:\n{tail}")
            time.sleep(0.2)
        self.startup_s = time.monotonic() - t

    def stop(self) -> None:
        """SIGTERM to the server's process group (started here, by its id), SIGKILL what is left."""
        p = self.proc
        if p is None:
            return
        pgid = p.pid  # start_new_session: the leader's PID is the group's id
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 10
        while True:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            if time.monotonic() > deadline:
                os.killpg(pgid, signal.SIGKILL)
                p.wait(timeout=10)
                break
            time.sleep(0.1)
        self.proc = None


# ------------------------------------------------------------------------------------------ measures
def pct(xs: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(xs), q))


def register_once(cfg: Any, det_cfg: Any, uri: str, n: int) -> tuple[float, str]:
    """One real registration on ``uri`` with metrics no earlier call used (``n``); (seconds, version)."""
    import microdet

    from tasks.register import run_register

    metrics = microdet.write_metrics(det_cfg, microdet.default_metrics(0.70 + n / 1000))
    model_dir = Path(det_cfg.paths.models) / "stage2"
    os.environ["MLFLOW_TRACKING_URI"] = uri  # wins over params; chintox.tracking.setup sets MLflow's URI
    try:
        t = time.perf_counter()
        out = run_register(cfg, model_dir=model_dir, metrics_file=metrics)
        dt = time.perf_counter() - t
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    if out["already_registered"]:
        raise RuntimeError(f"registration {n} on {uri} returned an existing version: not a new registration")
    return dt, str(out["version"])


def alias_reads(client: Any, name: str, reads: int) -> dict[str, Any]:
    for _ in range(WARMUP_READS):
        client.get_model_version_by_alias(name, ALIAS)
    per: list[float] = []
    t0 = time.perf_counter()
    for _ in range(reads):
        t = time.perf_counter()
        mv = client.get_model_version_by_alias(name, ALIAS)
        per.append((time.perf_counter() - t) * 1000.0)
    total = time.perf_counter() - t0
    return {"total_s": total, "median_ms": statistics.median(per), "p95_ms": pct(per, 95),
            "version": str(mv.version), "per_read_ms": [round(x, 3) for x in per]}


def rotated(seq: tuple[str, ...], r: int) -> list[str]:
    k = r % len(seq)
    return list(seq[k:] + seq[:k])


# ------------------------------------------------------------------------------------------ report
def summarize(res: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for b in BACKENDS:
        regs = [x["seconds"] for x in res["registrations"][b]["timed"]]
        rounds = res["alias_reads"][b]
        out[b] = {"register_median_s": statistics.median(regs), "register_min_s": min(regs),
                  "register_max_s": max(regs),
                  "reads_total_s": statistics.median(r["total_s"] for r in rounds),
                  "read_median_ms": statistics.median(r["median_ms"] for r in rounds),
                  "read_p95_ms": statistics.median(r["p95_ms"] for r in rounds)}
    keys = ("register_median_s", "reads_total_s", "read_median_ms", "read_p95_ms")

    def ratio(a: str, b: str) -> dict[str, float]:
        return {k: out[a][k] / out[b][k] for k in keys}

    out["ratios"] = {f"{b}/{BASELINE}": ratio(b, BASELINE) for b in BACKENDS if b != BASELINE}
    out["ratios"]["server+postgresql/server+sqlite"] = ratio("server+postgresql", "server+sqlite")
    return out


def rounded(x: Any, nd: int = 4) -> Any:
    if isinstance(x, float):
        return round(x, nd)
    if isinstance(x, dict):
        return {k: rounded(v, nd) for k, v in x.items()}
    if isinstance(x, list):
        return [rounded(v, nd) for v in x]
    return x


def print_table(s: dict[str, Any], reads: int) -> None:
    print(f"\nbackend              register s (min-max)      {reads} reads s   read p50 ms   read p95 ms")
    for b in BACKENDS:
        v = s[b]
        reg = f"{v['register_median_s']:.3f} ({v['register_min_s']:.3f}-{v['register_max_s']:.3f})"
        print(f"{b:<20} {reg:<25} {v['reads_total_s']:>11.3f} {v['read_median_ms']:>13.2f} {v['read_p95_ms']:>13.2f}")
    print("\nratio                              register   reads total   read p50   read p95")
    for k, v in s["ratios"].items():
        print(f"{k:<34} {v['register_median_s']:>8.2f}x {v['reads_total_s']:>12.2f}x "
              f"{v['read_median_ms']:>9.2f}x {v['read_p95_ms']:>9.2f}x")


# ------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "bench_registry.json")
    ap.add_argument("--reads", type=int, default=100, help="timed alias reads per backend and round")
    ap.add_argument("--repeats", type=int, default=3, help="timed registrations per backend")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of alias reads (each visits every backend)")
    args = ap.parse_args()
    t_run = time.perf_counter()

    import microdet
    import mlflow
    import psycopg
    from mlflow import MlflowClient
    from mlflow.environment_variables import MLFLOW_UV_AUTO_DETECT

    from chintox.services import Services

    res: dict[str, Any] = {
        "what": "MLflow model registry latency: one tasks.register.run_register (pyfunc logged with the "
                "micro detector's artifacts, a version registered, alias set) and get_model_version_by_alias "
                "reads, on embedded SQLite vs mlflow server on SQLite vs mlflow server on PostgreSQL",
        "command": " ".join(["python", "benchmarks/bench_registry.py", *sys.argv[1:]]),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
        "mlflow_version": mlflow.__version__, "psycopg_version": psycopg.__version__,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        # MLflow reads MLFLOW_UV_AUTO_DETECT (not the MLFLOW_ENABLE_UV_AUTO_DETECT set above): where it is
        # on and the working directory is a uv project, log_model also logs uv.lock and pyproject.toml
        "env": {k: os.environ.get(k) for k in ("MLFLOW_ENABLE_UV_AUTO_DETECT", "MLFLOW_UV_AUTO_DETECT",
                                               "MLFLOW_HTTP_REQUEST_MAX_RETRIES")},
        "uv_files_logged_with_model": bool(MLFLOW_UV_AUTO_DETECT.get() and (Path.cwd() / "uv.lock").is_file()
                                           and (Path.cwd() / "pyproject.toml").is_file()),
        "settings": {"reads": args.reads, "warmup_reads": WARMUP_READS, "repeats": args.repeats,
                     "rounds": args.rounds, "warmup_registrations": 1},
        "backends": {"sqlite": "sqlite:///<tmp>/sqlite/mlflow.db (embedded, no server)",
                     "server+sqlite": "mlflow server --serve-artifacts --workers 1, "
                                      "MLFLOW_BACKEND_STORE_URI=sqlite:///<tmp>/server-sqlite/mlflow.db",
                     "server+postgresql": "chintox.services.Services mlflow (same flags), "
                                          "MLFLOW_BACKEND_STORE_URI=postgresql+psycopg://...:<port>/mlflow"},
        "registrations": {}, "alias_reads": {b: [] for b in BACKENDS},
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    server = SqliteServer(tmp / "server-sqlite")
    svc = Services(tmp / "stack", pg_port=0, mlflow_port=0, prefect_port=0, ssh_port=0)
    ok = False
    try:
        print("building the micro detector ...", flush=True)
        det_cfg = microdet.micro_config(tmp / "det")
        microdet.build_micro_detector(det_cfg)
        microdet.write_metrics(det_cfg)
        microdet.write_eval_sets(det_cfg)

        print("starting mlflow server on sqlite and the stack (postgres, mlflow) ...", flush=True)
        server.start()
        t = time.monotonic()
        svc.start(["postgres", "mlflow"])
        stack_s = time.monotonic() - t
        with psycopg.connect(svc.pg_url("mlflow")) as conn:
            res["postgresql_version"] = conn.execute("SHOW server_version").fetchone()[0]
        res["server_startup_s"] = {"server+sqlite": round(server.startup_s, 2),
                                   "server+postgresql (postgres + mlflow)": round(stack_s, 2)}
        res["server_command"] = " ".join(["mlflow", *server.cmd[1:]]).replace(str(tmp), "<tmp>")
        uris = {"sqlite": f"sqlite:///{tmp / 'sqlite' / 'mlflow.db'}", "server+sqlite": server.uri,
                "server+postgresql": svc.mlflow_uri}
        (tmp / "sqlite").mkdir()
        cfgs = {b: microdet.micro_config(tmp / "cfg" / b.replace("+", "-")) for b in BACKENDS}
        name = det_cfg.mlflow.registered_model
        res["registered_model"] = name

        n = 0
        for b in BACKENDS:
            dt, v = register_once(cfgs[b], det_cfg, uris[b], n)
            n += 1
            res["registrations"][b] = {"warmup": {"seconds": dt, "version": v}, "timed": []}
            print(f"  warm-up registration {b:<18} {dt:7.3f} s  (v{v})", flush=True)
        for r in range(args.repeats):
            for b in rotated(BACKENDS, r):
                dt, v = register_once(cfgs[b], det_cfg, uris[b], n)
                n += 1
                res["registrations"][b]["timed"].append({"round": r + 1, "seconds": dt, "version": v})
                print(f"  registration {r + 1}/{args.repeats} {b:<18} {dt:7.3f} s  (v{v})", flush=True)

        clients = {b: MlflowClient(tracking_uri=uris[b], registry_uri=uris[b]) for b in BACKENDS}
        latest = {b: res["registrations"][b]["timed"][-1]["version"] if args.repeats
                  else res["registrations"][b]["warmup"]["version"] for b in BACKENDS}
        for r in range(args.rounds):
            for b in rotated(BACKENDS, r):
                out = alias_reads(clients[b], name, args.reads)
                if out["version"] != latest[b]:
                    raise RuntimeError(f"{b}: alias {ALIAS} -> v{out['version']}, expected v{latest[b]}")
                res["alias_reads"][b].append({"round": r + 1, **out})
                print(f"  alias reads {r + 1}/{args.rounds} {b:<18} {args.reads} in {out['total_s']:.3f} s  "
                      f"p50 {out['median_ms']:.2f} ms  p95 {out['p95_ms']:.2f} ms", flush=True)
        ok = True
    finally:
        server.stop()
        svc.purge()
        res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"failed; files kept in {tmp}", file=sys.stderr)
    res["summary"] = summarize(res)
    res["wall_s"] = time.perf_counter() - t_run
    res = rounded(res)
    print_table(res["summary"], args.reads)
    print(f"\nwall {res['wall_s']:.1f} s; mlflow {res['mlflow_version']}, psycopg {res['psycopg_version']}, "
          f"PostgreSQL {res['postgresql_version']}, {res['cpu_count']} CPUs")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    main()
