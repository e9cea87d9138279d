"""The `chintox` command line: one sub-command per pipeline step.

DVC stages call these commands; Prefect tasks and tests call the same ``tasks.*`` functions directly.
Heavy libraries are imported inside the commands so ``chintox --help`` answers quickly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from chintox.config import ConfigError, load_config, parse_override

app = typer.Typer(
    help="Train, evaluate, track and promote detectors of toxic Chinese text.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

ParamsOpt = Annotated[Path, typer.Option("--params", help="Parameter file.")]
ProfileOpt = Annotated[Optional[str], typer.Option("--profile", help="micro | tiny | paper | rehearsal (default: params)")]
SetOpt = Annotated[
    Optional[list[str]], typer.Option("--set", help="Override a parameter: key.sub=value (repeatable).")
]


def _cfg(params: Path, profile: str | None, sets: list[str] | None, preflight: bool = False):
    """The configuration; with ``preflight`` (the training pipeline's steps) also the start-up check
    that this machine can run it (CUDA where asked, the base model reachable), before any data is read."""
    try:
        overrides = dict(parse_override(s) for s in (sets or []))
        cfg = load_config(params, profile=profile, overrides=overrides)
    except ConfigError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from e
    if preflight:
        from chintox.logs import setup_logging
        from chintox.preflight import PreflightError, check_pipeline

        setup_logging()
        try:
            check_pipeline(cfg)
        except PreflightError as e:
            typer.secho(f"error: {e}", fg="red", err=True)
            raise typer.Exit(3) from e
    return cfg


def _fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg="red", err=True)
    raise typer.Exit(1) from e


def _print(obj) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=2, default=str))


@app.command()
def validate(params: ParamsOpt = Path("params.yaml"), profile: ProfileOpt = None, set_: SetOpt = None) -> None:
    """Ingest the raw data, run the Great Expectations suites, quarantine bad rows."""
    from tasks.ingest import DataError
    from tasks.validate import run_validate

    cfg = _cfg(params, profile, set_, preflight=True)
    try:
        summary = run_validate(cfg)
    except DataError as e:
        _fail(e)
    _print(summary)


@app.command()
def split(params: ParamsOpt = Path("params.yaml"), profile: ProfileOpt = None, set_: SetOpt = None) -> None:
    """Make the train/val/evaluation splits and the stage-1 chat records."""
    from tasks.split import run_split

    cfg = _cfg(params, profile, set_, preflight=True)
    _print(run_split(cfg))


@app.command()
def base(params: ParamsOpt = Path("params.yaml"), profile: ProfileOpt = None, set_: SetOpt = None) -> None:
    """Build the tiny base model (or load model.base) and save it as a Hugging Face folder."""
    from tasks.base_model import run_base

    cfg = _cfg(params, profile, set_, preflight=True)
    _print({"base_model": str(run_base(cfg))})


@app.command()
def stage1(params: ParamsOpt = Path("params.yaml"), profile: ProfileOpt = None, set_: SetOpt = None) -> None:
    """Stage 1: LoRA SFT on COIG-CQIA, merged into the base."""
    from tasks.train import run_stage1

    cfg = _cfg(params, profile, set_, preflight=True)
    _print({"stage1_model": str(run_stage1(cfg))})


@app.command()
def stage2(params: ParamsOpt = Path("params.yaml"), profile: ProfileOpt = None, set_: SetOpt = None) -> None:
    """Stage 2: LoRA on ToxiCN train with the study's prompt; checkpoint chosen on ToxiCN val."""
    from tasks.train import run_stage2

    cfg = _cfg(params, profile, set_, preflight=True)
    _print({"detector": str(run_stage2(cfg))})


@app.command("table1-arm")
def table1_arm(params: ParamsOpt = Path("params.yaml"), profile: ProfileOpt = None, set_: SetOpt = None) -> None:
    """Table 1's other detector: stages 1 and 2 again with train.stage1.enabled flipped."""
    from tasks.train import run_table1_arm

    cfg = _cfg(params, profile, set_, preflight=True)
    _print({"detector": str(run_table1_arm(cfg))})


@app.command()
def evaluate(
    params: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
    set_: SetOpt = None,
    model_dir: Annotated[Optional[Path], typer.Option(help="Detector folder (default: models/stage2)")] = None,
    backend: Annotated[Optional[str], typer.Option(help="vllm | hf (default: params)")] = None,
) -> None:
    """Score ToxiCN test and COLD test; write metrics.json and plots."""
    from tasks.evaluate import run_evaluate

    cfg = _cfg(params, profile, set_)
    _print(run_evaluate(cfg, model_dir=model_dir, backend=backend))


@app.command()
def table1(params: ParamsOpt = Path("params.yaml"), profile: ProfileOpt = None, set_: SetOpt = None) -> None:
    """The study's Table 1: zero-shot base, stage-2-only, stage-1+2, both backends, TF-IDF reference."""
    from tasks.table1 import run_table1

    cfg = _cfg(params, profile, set_)
    _print({"table": str(run_table1(cfg))})


@app.command()
def register(
    params: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
    set_: SetOpt = None,
    model_dir: Annotated[Optional[Path], typer.Option(help="Detector folder (default: models/stage2)")] = None,
) -> None:
    """Register the trained detector in the MLflow registry (alias `challenger`)."""
    from tasks.register import run_register

    cfg = _cfg(params, profile, set_)
    _print(run_register(cfg, model_dir=model_dir))


@app.command()
def promote(
    params: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
    set_: SetOpt = None,
    version: Annotated[Optional[str], typer.Option(help="Version to promote (default: @challenger)")] = None,
    force: Annotated[bool, typer.Option(help="Override a failed gate (needs --reason)")] = False,
    reason: Annotated[Optional[str], typer.Option(help="Why, recorded on the version")] = None,
) -> None:
    """Move `champion` to the challenger if the gate passes (or --force with a reason)."""
    from tasks.promote import PromotionError, run_promote

    cfg = _cfg(params, profile, set_)
    try:
        result = run_promote(cfg, version=version, force=force, reason=reason)
    except PromotionError as e:
        _fail(e)
    _print(result)
    if result.get("decision") == "rejected":
        typer.secho("gate failed: champion unchanged (use --force --reason to override)", fg="red", err=True)
        raise typer.Exit(1)


@app.command()
def rollback(params: ParamsOpt = Path("params.yaml"), profile: ProfileOpt = None, set_: SetOpt = None) -> None:
    """Restore the previous champion."""
    from tasks.promote import PromotionError, run_rollback

    cfg = _cfg(params, profile, set_)
    try:
        _print(run_rollback(cfg))
    except PromotionError as e:
        _fail(e)


@app.command()
def detect(
    text: Annotated[Optional[str], typer.Argument(help="Text to judge; omit to read lines from --file or stdin")] = None,
    file: Annotated[Optional[Path], typer.Option(help="A file with one text per line")] = None,
    model_uri: Annotated[Optional[str], typer.Option(help="Default: models:/<registered_model>@champion")] = None,
    server: Annotated[Optional[str], typer.Option(
        help="URL of a running `chintox serve` (e.g. http://127.0.0.1:8090): judge there, load nothing")] = None,
    params: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
    set_: SetOpt = None,
) -> None:
    """Judge texts with the champion detector; prints one JSON object per text."""
    if text is not None:
        texts = [text]
    elif file is not None:
        texts = file.read_text(encoding="utf-8").splitlines()
    else:
        texts = [line.rstrip("\n") for line in sys.stdin]
    if server is not None:
        from chintox.serving.client import ModerationClient, ModerationError

        try:
            with ModerationClient(server) as client:
                rows = list(client.moderate_all([t for t in texts if t.strip()]))
        except ModerationError as e:
            _fail(e)
        for row in rows:
            typer.echo(json.dumps(row, ensure_ascii=False))
        return
    from tasks.detect import NoChampionError, detect_texts

    cfg = _cfg(params, profile, set_)
    try:
        rows = list(detect_texts(cfg, texts, model_uri=model_uri))
    except NoChampionError as e:
        _fail(e)
    for row in rows:
        typer.echo(json.dumps(row, ensure_ascii=False))


@app.command()
def serve(
    model_uri: Annotated[Optional[str], typer.Option(
        help="Default: models:/<registered_model>@champion (an alias is followed as it moves)")] = None,
    version: Annotated[Optional[str], typer.Option(help="Serve this registered version (not followed)")] = None,
    host: Annotated[Optional[str], typer.Option(help="Default: serve.host (127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option(help="Default: serve.port")] = None,
    backend: Annotated[Optional[str], typer.Option(help="auto | vllm | hf (default: serve.backend)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
    set_: SetOpt = None,
) -> None:
    """Serve the champion: vLLM's server (or hf) behind the moderation API POST /v1/moderate."""
    from chintox.serving import ServingError
    from tasks.detect import NoChampionError
    from tasks.serve import run_serve

    cfg = _cfg(params, profile, set_)
    if version is not None and model_uri is not None:
        _fail(ValueError("give --model-uri or --version, not both"))
    if version is not None:
        model_uri = f"models:/{cfg.mlflow.registered_model}/{version}"
    try:
        run_serve(cfg, model_uri=model_uri, host=host, port=port, backend=backend)
    except (NoChampionError, ServingError) as e:
        _fail(e)


# ------------------------------------------------------------------------------ moderators' feedback
feedback_app = typer.Typer(help="Moderators' corrections: the review queue out, corrections in.",
                           no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")


@app.command("feedback-store")
def feedback_store(params: ParamsOpt = Path("params.yaml"), profile: ProfileOpt = None, set_: SetOpt = None) -> None:
    """DVC stage feedback_store: create the (empty) feedback store where none exists; never change one."""
    from tasks.feedback import run_feedback_init

    _print(run_feedback_init(_cfg(params, profile, set_)))


@app.command("feedback-sets")
def feedback_sets(params: ParamsOpt = Path("params.yaml"), profile: ProfileOpt = None, set_: SetOpt = None) -> None:
    """DVC stage feedback: the store's corrections -> the feedback train and holdout sets of stage 2."""
    from chintox.feedback import FeedbackError
    from tasks.feedback import run_feedback_sets

    try:
        _print(run_feedback_sets(_cfg(params, profile, set_)))
    except FeedbackError as e:
        _fail(e)


@feedback_app.command("export")
def feedback_export(
    out: Annotated[Path, typer.Argument(help="The review file to write (.csv or .jsonl)")],
    size: Annotated[Optional[int], typer.Option(help="Judgements to review (default: feedback.review_size)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
    set_: SetOpt = None,
) -> None:
    """The review queue: the served judgements nearest the threshold, plus a random sample, to a file a
    moderator fills in (column `label`: 1 toxic, 0 not)."""
    from chintox.feedback import FeedbackError
    from tasks.feedback import run_feedback_export

    try:
        _print(run_feedback_export(_cfg(params, profile, set_), out, size=size))
    except FeedbackError as e:
        _fail(e)


@feedback_app.command("import")
def feedback_import(
    file: Annotated[Path, typer.Argument(help="Corrections (.csv or .jsonl): text or prediction_id, label, "
                                              "optional note and moderator")],
    moderator: Annotated[Optional[str], typer.Option(help="Moderator id for rows that name none")] = None,
    dvc_commit: Annotated[bool, typer.Option(help="Record the store as a new DVC version (dvc commit)")] = True,
    params: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
    set_: SetOpt = None,
) -> None:
    """Validate corrections, quarantine bad rows with their reason, add the rest to the feedback store
    (a new DVC version). Importing the same file again changes nothing."""
    from chintox.feedback import FeedbackError
    from chintox.logs import setup_logging
    from tasks.feedback import run_feedback_import

    setup_logging()
    cfg = _cfg(params, profile, set_)
    try:
        _print(run_feedback_import(cfg, file, moderator=moderator, dvc_commit=dvc_commit))
    except FeedbackError as e:
        _fail(e)


# ------------------------------------------------------------------------------ the shared stack
services_app = typer.Typer(help="The shared stack on 127.0.0.1: PostgreSQL, MLflow and Prefect servers, an "
                                "SSH host for the DVC remote (chintox/services.py).", no_args_is_help=True)
app.add_typer(services_app, name="services")

StateDirOpt = Annotated[Path | None, typer.Option(
    "--state-dir", envvar="CHINTOX_SERVICES_DIR", help="State directory (default: .services)")]
OnlyOpt = Annotated[list[str] | None, typer.Option(
    "--only", help="postgres | mlflow | prefect | sshd (repeatable; default: all)")]


def _services(mod, state_dir: Path | None, **ports):
    """``mod.Services(state_dir, **ports)``, a bad port a clean error. The commands import
    ``chintox.services`` themselves: a helper's imports would count for every pipeline stage."""
    try:
        return mod.Services(state_dir, **ports)
    except mod.ServicesError as e:
        _fail(e)


def _show_status(status: dict) -> None:
    for name, row in status.items():
        state = "up" if row["up"] else "down"
        where = row["url"] or "(no port yet)"
        pid = f"  pid {row['pid']}" if row["pid"] else ""
        mark = typer.style(f"{state:<5}", fg="green" if row["up"] else "red")
        typer.echo(f"{name:<9} {mark} {where}{pid}")


@services_app.command("start")
def services_start(
    state_dir: StateDirOpt = None,
    only: OnlyOpt = None,
    pg_port: Annotated[int | None, typer.Option(envvar="CHINTOX_PG_PORT", help="PostgreSQL (default 55432; "
                                                "0: any free port)")] = None,
    mlflow_port: Annotated[int | None, typer.Option(envvar="CHINTOX_MLFLOW_PORT",
                                                    help="MLflow server (default 5000)")] = None,
    prefect_port: Annotated[int | None, typer.Option(envvar="CHINTOX_PREFECT_PORT",
                                                     help="Prefect server (default 4200)")] = None,
    ssh_port: Annotated[int | None, typer.Option(envvar="CHINTOX_SSH_PORT",
                                                 help="sshd for the DVC remote (default 2222)")] = None,
) -> None:
    """Start the stack (or --only some of it, and what that needs); running services are left alone."""
    import shlex

    from chintox import services
    from chintox.logs import setup_logging

    setup_logging()
    svc = _services(services, state_dir, pg_port=pg_port, mlflow_port=mlflow_port, prefect_port=prefect_port,
                    ssh_port=ssh_port)
    try:
        status = svc.start(only or None)
    except services.ServicesError as e:
        _fail(e)
    except KeyboardInterrupt:
        typer.secho("interrupted: what was started keeps running (chintox services status | stop)", fg="yellow",
                    err=True)
        raise typer.Exit(130) from None
    _show_status(status)
    state_arg = f" --state-dir {shlex.quote(str(state_dir))}" if state_dir is not None else ""
    typer.secho(f'clients: eval "$(chintox services env{state_arg})"', fg="cyan", err=True)


@services_app.command("stop")
def services_stop(state_dir: StateDirOpt = None, only: OnlyOpt = None) -> None:
    """Stop what `chintox services start` started (exactly those processes; data stays)."""
    from chintox import services
    from chintox.logs import setup_logging

    setup_logging()
    svc = _services(services, state_dir)
    try:
        svc.stop(only or None)
    except services.ServicesError as e:
        _fail(e)
    _show_status(svc.status())


@services_app.command("status")
def services_status(
    state_dir: StateDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object")] = False,
) -> None:
    """Each service: up or down, its URL and PID; exit code 1 when one is down."""
    from chintox import services

    svc = _services(services, state_dir)
    status = svc.status()
    if as_json:
        _print(status)
    else:
        _show_status(status)
    if not all(row["up"] for row in status.values()):
        raise typer.Exit(1)


@services_app.command("env")
def services_env(state_dir: StateDirOpt = None) -> None:
    """`export` lines for a client shell: eval "$(chintox services env)"."""
    import shlex

    from chintox import services

    svc = _services(services, state_dir)
    try:
        env = svc.env()
    except services.ServicesError as e:
        _fail(e)
    for k, v in env.items():
        typer.echo(f"export {k}={shlex.quote(v)}")
    down = [n for n in ("mlflow", "prefect") if not svc.is_up(n)]
    if down:
        typer.secho(f"note: not running: {', '.join(down)} (chintox services start)", fg="yellow", err=True)


@services_app.command("dvc-remote")
def services_dvc_remote(
    state_dir: StateDirOpt = None,
    name: Annotated[str, typer.Option(help="Name of the DVC remote")] = "shared",
    default: Annotated[bool, typer.Option("--default", help="Make it the project's default remote")] = False,
) -> None:
    """Add the stack's SSH remote to the DVC project here (key in .dvc/config.local; not the default).

    dvc-ssh checks no host key (it connects with known_hosts=None and has no setting for one); ssh, scp
    or rsync can check it strictly with the stack's known_hosts file."""
    import subprocess

    from chintox import services

    svc = _services(services, state_dir)
    try:
        remote = svc.dvc_remote()
    except services.ServicesError as e:
        _fail(e)
    if not svc.ssh_keyfile.exists():
        _fail(RuntimeError(f"no key at {svc.ssh_keyfile}: run `chintox services start` first"))
    beside = Path(sys.executable).with_name("dvc")  # this environment's dvc, else the one on PATH
    dvc = str(beside) if beside.exists() else "dvc"
    cmds = [[dvc, "remote", "add", "--force", *(["--default"] if default else []), name, remote["url"]],
            [dvc, "remote", "modify", "--local", name, "keyfile", remote["keyfile"]]]
    for cmd in cmds:
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            _fail(RuntimeError(f"{' '.join(cmd[1:])} failed: {(r.stderr or r.stdout).strip()}"))
    _print({"remote": name, **remote, "default": default})
    if not svc.is_up("sshd"):
        typer.secho("note: sshd is not running: chintox services start", fg="yellow", err=True)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
