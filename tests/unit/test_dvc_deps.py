"""dvc.yaml sees every input of every stage: the project modules its code imports, and the profile's
value of every parameter it lists.

Static (``ast``, no DVC run, no heavy import), so it is fast and catches a module moved or added
without its stage's deps following. Run it alone after moving code:

    .venv/bin/pytest -q tests/unit/test_dvc_deps.py

- Code: a stage's ``cmd`` names a ``chintox`` CLI command; the modules it runs are ``chintox/cli.py``
  itself (the CLI is what DVC executes: its module-level code and helpers, and the body of that one
  command, not the other commands) and, transitively, every ``chintox.*`` / ``tasks.*`` module
  imported anywhere in those modules, function-level imports included (heavy imports are deliberately
  inside functions). Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` too, so those
  count. A dep covers a file if it is that file or a folder holding it.
- Params: the loader deep-merges ``profiles.<profile>`` over the base sections, so each base key a
  stage lists needs its twin ``profiles.${profile}.<key>`` (every profile defines each twin, ``{}``
  where it keeps the base value). Keys that dvc.yaml templates into paths (``${data.out_dir}`` ...)
  are the exception: a profile must not override them at all, or the stage would write where DVC does
  not look.
"""

from __future__ import annotations

import ast
import shlex
from collections import deque
from functools import cache
from pathlib import Path

import pytest
import yaml
from testutil import DVC_TEMPLATE, lookup, resolve_dvc_template

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("chintox", "tasks")
TWIN = "profiles.${profile}."


@cache
def _params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


@cache
def _stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def _resolve(text: str) -> str:
    """``${a.b}`` replaced by params.yaml's value, as DVC does."""
    return resolve_dvc_template(text, _params())


def _entries(items) -> list[str]:
    """Paths of a deps/outs list (entries are strings or one-key mappings with options)."""
    out = []
    for it in items or []:
        out.append(it if isinstance(it, str) else next(iter(it)))
    return out


def _param_keys(stage: dict) -> list[str]:
    keys = []
    for it in stage.get("params") or []:
        if isinstance(it, str):
            keys.append(it)
        else:  # {file: [keys]}: only params.yaml is the loader's
            for file, ks in it.items():
                if Path(file).name == "params.yaml":
                    keys.extend(ks)
    return keys


# ------------------------------------------------------------------------------- code closure


def _module_file(mod: str) -> Path | None:
    base = REPO.joinpath(*mod.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _is_project(mod: str) -> bool:
    return mod.split(".")[0] in PACKAGES


def _with_parents(mod: str) -> list[str]:
    parts = mod.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _imported(nodes: list[ast.AST], mod: str, is_pkg: bool) -> set[str]:
    """Project modules imported anywhere inside ``nodes`` (``mod`` is the module they belong to)."""
    found: set[str] = set()
    for node in nodes:
        for n in ast.walk(node):
            if isinstance(n, ast.Import):
                found |= {a.name for a in n.names if _is_project(a.name)}
            elif isinstance(n, ast.ImportFrom):
                if n.level:
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (n.level - 1)]
                    base = ".".join(pkg + ([n.module] if n.module else []))
                else:
                    base = n.module or ""
                if not _is_project(base):
                    continue
                found.add(base)
                for a in n.names:  # `from chintox import splits` imports a module
                    if _module_file(f"{base}.{a.name}") is not None:
                        found.add(f"{base}.{a.name}")
    return {p for m in found for p in _with_parents(m) if _module_file(p) is not None}


def _command_name(fn: ast.FunctionDef) -> str | None:
    for d in fn.decorator_list:
        if isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "command":
            if d.args and isinstance(d.args[0], ast.Constant):
                return d.args[0].value
            return fn.name.replace("_", "-")
    return None


@cache
def _cli() -> tuple[list[ast.AST], dict[str, ast.FunctionDef]]:
    """chintox/cli.py: what runs for every command (module level, helpers), and each command's body."""
    tree = ast.parse((REPO / "chintox" / "cli.py").read_text(encoding="utf-8"))
    common, commands = [], {}
    for node in tree.body:
        name = _command_name(node) if isinstance(node, ast.FunctionDef) else None
        if name is None:
            common.append(node)
        else:
            commands[name] = node
    return common, commands


def _cli_command(cmd: str) -> str:
    """The sub-command of ``chintox <cmd>`` or ``python -m chintox.cli <cmd>``."""
    words = shlex.split(cmd)
    for i, w in enumerate(words[:-1]):
        if Path(w).name == "chintox" or (w == "chintox.cli" and i and words[i - 1] == "-m"):
            return words[i + 1]
    raise AssertionError(f"cmd {cmd!r} does not run the chintox CLI")


def code_closure(command: str) -> dict[str, str]:
    """Project module -> the module that imported it (first found), for one CLI command."""
    common, commands = _cli()
    if command not in commands:
        raise AssertionError(f"chintox/cli.py has no command {command!r}")
    seen: dict[str, str] = {"chintox.cli": "the stage's cmd"}
    for parent in _with_parents("chintox.cli")[:-1]:
        seen[parent] = "chintox.cli"
    todo = deque(_imported([*common, commands[command]], "chintox.cli", False))
    for m in todo:
        seen.setdefault(m, "chintox.cli")
    while todo:
        mod = todo.popleft()
        f = _module_file(mod)
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for dep in sorted(_imported([tree], mod, f.name == "__init__.py")):
            if dep not in seen:
                seen[dep] = mod
                todo.append(dep)
    return seen


def _covered(path: Path, deps: list[Path]) -> bool:
    return any(path == d or d in path.parents for d in deps)


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_stage_deps_cover_every_imported_module(stage):
    spec = _stages()[stage]
    deps = [(REPO / _resolve(d)).resolve() for d in _entries(spec.get("deps"))]
    missing = []
    for mod, via in sorted(code_closure(_cli_command(spec["cmd"])).items()):
        f = _module_file(mod).resolve()
        if not _covered(f, deps):
            missing.append(f"{f.relative_to(REPO)} (module {mod}, imported by {via})")
    assert not missing, f"stage {stage!r}: deps do not cover\n  " + "\n  ".join(missing)


# ------------------------------------------------------------------------------- params


def _templated_keys() -> set[str]:
    """Parameter keys dvc.yaml templates into a stage's paths (deps, outs, metrics, plots, cmd)."""
    keys: set[str] = set()
    for spec in _stages().values():
        texts = [spec.get("cmd", "")]
        for section in ("deps", "outs", "metrics", "plots"):
            texts += _entries(spec.get(section))
        for t in texts:
            keys |= set(DVC_TEMPLATE.findall(str(t)))
    return keys


def test_twins_exist_in_every_profile():
    profiles = _params()["profiles"]
    missing = []
    for stage, spec in sorted(_stages().items()):
        for key in _param_keys(spec):
            if not key.startswith(TWIN):
                continue
            for name in sorted(profiles):
                try:
                    lookup(profiles[name], key[len(TWIN):])
                except KeyError:
                    missing.append(f"{stage}: profiles.{name}.{key[len(TWIN):]}")
    assert not missing, "dvc.yaml lists profile twins that a profile lacks (add `{}`):\n  " + "\n  ".join(missing)


def test_every_base_param_has_its_profile_twin():
    templated = _templated_keys()
    missing = []
    for stage, spec in sorted(_stages().items()):
        keys = set(_param_keys(spec))
        for key in sorted(keys):
            if key == "profile" or key.startswith("profiles.") or key in templated:
                continue
            lookup(_params(), key)  # a base key that exists
            if TWIN + key not in keys:
                missing.append(f"{stage}: {key} without {TWIN}{key}")
        for key in keys:
            if key.startswith(TWIN):
                assert key[len(TWIN):] in keys, f"{stage}: twin {key} without its base key"
    assert not missing, "stage params miss profile twins:\n  " + "\n  ".join(missing)


def test_profiles_do_not_move_templated_paths():
    overridden = []
    for key in sorted(_templated_keys()):
        for name, prof in sorted(_params()["profiles"].items()):
            try:
                lookup(prof or {}, key)
            except KeyError:
                continue
            overridden.append(f"profiles.{name}.{key}")
    assert not overridden, ("dvc.yaml templates these keys into paths from the base value, so a profile "
                            "must not override them:\n  " + "\n  ".join(overridden))


def test_every_stage_runs_a_cli_command_and_lists_the_profile():
    """Every stage lists ``profile``, except one whose only parameters are templated paths (which no
    profile may move, see above): the profile cannot change what it does, and listing it would rerun it
    in every experiment of another profile. That matters for a stage with a ``persist`` output, which
    DVC keeps no run-cache for (``feedback_store``)."""
    _, commands = _cli()
    templated = _templated_keys()
    for stage, spec in _stages().items():
        assert _cli_command(spec["cmd"]) in commands, stage
        keys = _param_keys(spec)
        if keys and set(keys) <= templated:
            assert "profile" not in keys, f"{stage}: reads only templated paths, the profile changes nothing"
            continue
        assert "profile" in keys, f"{stage}: the profile picks every effective value"


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    """The closure follows imports inside functions (how the steps import heavy code)."""
    closure = code_closure("validate")
    assert "tasks.validate" in closure and "chintox.config" in closure
    assert "chintox.validation.gx" in closure  # imported inside run_validate only
    assert "tasks.split" not in closure  # another command's import


def test_a_stage_reading_the_stage1_pointer_depends_on_the_base_too():
    """With stage 1 off, ``models/stage1`` is a pointer (``base_model.json`` naming ``models/base``) whose
    bytes do not change when the base is rebuilt; a stage that trains on it reads the base at run time,
    so it must list the base itself, or a new base would leave it trained on the old one."""
    stage1_out = _resolve(_entries(_stages()["stage1"]["outs"])[0])
    base_out = _resolve(_entries(_stages()["base"]["outs"])[0])
    readers = [name for name, spec in _stages().items() if stage1_out in map(_resolve, _entries(spec.get("deps")))]
    assert readers, f"no stage depends on {stage1_out}"
    for name in readers:
        assert base_out in map(_resolve, _entries(_stages()[name]["deps"])), f"{name}: lists {stage1_out}, not {base_out}"
