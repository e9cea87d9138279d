"""Benchmark: validation + splitting of all the real data; prints wall time and peak memory.

    .venv/bin/python benchmarks/bench_data.py [--raw ../shared/datasets] [--out DIR]

Runs in a fresh process (Great Expectations import included) with the default profile, writing to a
temporary folder unless --out is given. Exit status 1 if it takes 60 s or more or peaks at 2 GiB or more.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LIMIT_S, LIMIT_GIB = 60.0, 2.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", default=str(REPO.parent / "shared" / "datasets"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    from chintox.config import load_config
    from tasks.split import run_split
    from tasks.validate import run_validate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        cfg = load_config(REPO / "params.yaml", overrides={
            "data.raw_dir": args.raw, "data.out_dir": str(root / "data"), "paths.reports": str(root / "reports")})
        t1 = time.perf_counter()
        summary = run_validate(cfg)
        t2 = time.perf_counter()
        split = run_split(cfg)
        t3 = time.perf_counter()
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is KiB on Linux
    wall = t3 - t0
    report = {
        "wall_s": round(wall, 1),
        "validate_s": round(t2 - t1, 1),
        "split_s": round(t3 - t2, 1),
        "peak_rss_gib": round(peak_gib, 3),
        "rows": {s: {k: v[k] for k in ("rows_read", "rows_kept", "rows_quarantined")}
                 for s, v in summary["sources"].items()},
        "quarantined_by_rule": {s: v["quarantined_by_rule"] for s, v in summary["sources"].items()},
        "warnings": {s: v["warnings"] for s, v in summary["sources"].items()},
        "leakage": summary["leakage"],
        "splits": split["splits"],
    }
    print(json.dumps(report, ensure_ascii=False, indent=2))
    print(f"TIME {wall:.1f} s (limit {LIMIT_S:.0f} s)   PEAK RSS {peak_gib:.2f} GiB (limit {LIMIT_GIB:.0f} GiB)")
    return 0 if wall < LIMIT_S and peak_gib < LIMIT_GIB else 1


if __name__ == "__main__":
    sys.exit(main())
