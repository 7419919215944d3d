"""Every ``rlcustom ...`` command line written in the docs, configs and scripts still parses on the typer CLI,
and the old invocation forms reach the right command with the right values (nothing heavy runs)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup

from rlcustom.cli import root as A
from rlcustom.cli import main

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["README.md", "Makefile", "docs/**/*.md", "configs/**/*.yaml", "cluster/**/*.md", "cluster/**/*.sh",
           "cluster/**/*.yaml", "cluster/Dockerfile", "benchmarks/*.sh", "benchmarks/*.py", "rlcustom/**/*.py"]
# a command line: at the start of a line (after a prompt, a make recipe's venv path or a docstring's indent)
INVOCATION = re.compile(r"^\s*(?:\$ )?(?:\S*/)?rlcustom((?:\s+[^\s#|;]+)+)")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")  # CONFIG, DIR, JOB_ID ...


def parse_only(argv: list[str]):
    """The innermost command's context after parsing ``argv`` as ``main`` would (no callback runs)."""
    argv = A._fill_optional_values(A._hoist_verbose(list(argv)))
    ctx = typer.main.get_command(A.app).make_context("rlcustom", argv)
    while isinstance(ctx.command, TyperGroup):
        name, sub, rest = ctx.command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        ctx = sub.make_context(name, rest, parent=ctx)
    return ctx


def _fill_shell_vars(tokens: list[str]) -> list[str]:
    """A script's ``$VAR``s: an option's value or ``key=$VAR`` -> 1, in a path -> x, a whole word -> left out
    (it holds several flags or overrides)."""
    out: list[str] = []
    for t in tokens:
        t = re.sub(r"\$\(\([^)]*\)\)", "1", t)
        if re.fullmatch(r"\$\{?\w+\}?", t):
            if out and out[-1].startswith("--"):
                out.append("1")
            continue
        t = re.sub(r"=\$\{?\w+\}?$", "=1", t)
        out.append(re.sub(r"\$\{?\w+\}?", "x", t))
    return out


def _lines(path: Path):
    """(line number, text) of what may hold a command: in Markdown, code blocks (fenced or indented) and
    inline code spans; elsewhere, every line (with a comment's leading '#' taken off)."""
    fenced = False
    text = path.read_text(errors="replace")
    if path.suffix == ".sh":  # shell: whole commands (continuations joined), `$RLC` is the CLI, variables filled
        for n, line in enumerate(re.sub(r"\\\n\s*", " ", text).splitlines(), 1):
            m = re.match(r"^\s*(?:t\s+)?\$\{?RLC\}?\s+(.*)$", line.split(" # ")[0])
            if m:
                yield n, "rlcustom " + " ".join(_fill_shell_vars(m.group(1).split()))
        return
    for n, line in enumerate(text.splitlines(), 1):
        if path.suffix != ".md":
            yield n, line.lstrip("# ") if line.lstrip().startswith("#") else line.split(" # ", 1)[0]
            continue
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            yield n, line.split(" # ", 1)[0]
        else:
            for span in re.findall(r"`([^`]+)`", line):  # prose names a command ("`rlcustom submit --install`")
                if len([t for t in span.split()[2:] if not t.startswith("-")]) or span.split()[1:2] == ["demo"]:
                    yield n, span  # ... a whole command line has a positional argument


def documented() -> list[tuple[str, list[str]]]:
    found = {}
    for pattern in SOURCES:
        for path in ROOT.glob(pattern):
            for n, line in _lines(path):
                m = INVOCATION.match(line)
                if not m or line.rstrip().endswith("\\"):
                    continue  # not a command, or continued on the next line
                text = m.group(1).split("->")[0]
                if any(c in text for c in "[]<>{}()…`") or "..." in text:
                    continue  # a usage synopsis or prose, not a command line
                try:
                    argv = shlex.split(text)
                except ValueError:
                    continue
                if not argv or argv[0] not in A.COMMANDS:
                    continue
                if any(PLACEHOLDER.match(a) and (i == 1 and argv[0] == "bench" or argv[i - 1] == "--decoder")
                       for i, a in enumerate(argv)):
                    continue  # a placeholder for a name from a fixed list
                argv = [("configs/ppo.yaml" if a == "CONFIG" else "x") if PLACEHOLDER.match(a)
                        else a.replace("$address", "http://h:8265") for a in argv]
                found.setdefault(" ".join(argv), (f"{path.relative_to(ROOT)}:{n}", argv))
    return sorted(found.values())


DOCUMENTED = documented()


def test_the_docs_have_invocations_to_check():
    cmds = {argv[0] for _, argv in DOCUMENTED}
    assert {"train", "generate", "eval", "submit", "bench", "demo"} <= cmds, cmds
    # the experiment scripts' own command lines are checked too (13: dera_135m.sh's `eval dera` lines share an
    # argument array, "${EVAL_ARGS[@]}", which a static parse cannot expand; its `train` line is checked)
    assert sum(w.startswith("benchmarks/") and w.split(":")[0].endswith(".sh") for w, _ in DOCUMENTED) >= 13


@pytest.mark.parametrize("where, argv", DOCUMENTED, ids=[w for w, _ in DOCUMENTED])
def test_documented_invocation_parses(where, argv):
    if "--help" in argv or "-h" in argv:
        pytest.skip("help exits while parsing")
    parse_only(argv)  # raises a UsageError naming the problem


@pytest.fixture
def calls(monkeypatch):
    """The heavy functions the commands call, recorded instead of run."""
    import rlcustom.eval.dera as D
    import rlcustom.eval.metrics as M
    import rlcustom.eval.qadapter_run as Q
    import rlcustom.trainers as T
    from rlcustom.cluster import jobs as J

    seen: dict = {}
    from rlcustom import console

    monkeypatch.setattr(console, "log_to_file", lambda path: Path(path))  # no global logging changes here
    import rlcustom.preflight as P

    # routing only: the preflight (model directories, paths) has its own tests (tests/unit/test_preflight.py)
    monkeypatch.setattr(P, "preflight_args", lambda cfg, args: None)
    monkeypatch.setattr(P, "preflight", lambda cfg, *a, **kw: None)
    monkeypatch.setattr(D, "run", lambda cfg, **kw: seen.setdefault("dera", (cfg, kw)) and {"results": []})
    monkeypatch.setattr(M, "evaluate", lambda cfg, **kw: seen.setdefault("eval", (cfg, kw)) and {"metrics": {}})
    monkeypatch.setattr(M, "write", lambda res, path: path)
    monkeypatch.setattr(Q, "run", lambda cfg, **kw: seen.setdefault("qadapter", (cfg, kw)) and {"metrics": {}})
    monkeypatch.setattr(T, "run_trainer", lambda cfg: seen.setdefault("train", cfg) and {"summary": "ok"})
    monkeypatch.setattr(J, "plan_submission", lambda *a, **kw: (_ for _ in ()).throw(
        SystemExit(seen.setdefault("submit", (a, kw)) and 0)))
    return seen


def test_eval_dera_is_a_subcommand(calls, tmp_path):
    rc = main(["eval", "dera", "configs/dpo.yaml", "--adapter", "runs/dpo", "--lams=-0.5,0,1", "--limit", "3",
               "sampling.max_new_tokens=48", f"output_dir={tmp_path}"])
    cfg, kw = calls["dera"]
    assert rc == 0 and kw["lams"] == [-0.5, 0.0, 1.0] and kw["adapter"] == "runs/dpo" and kw["limit"] == 3
    assert cfg.sampling.max_new_tokens == 48 and kw["out"] == tmp_path / "dera.json"


def test_eval_qadapter_is_a_subcommand(calls, tmp_path):
    assert main(["eval", "qadapter", "configs/qadapter.yaml", "data.max_prompt_tokens=64", "--pairs", "5",
                 f"output_dir={tmp_path}"]) == 0
    cfg, kw = calls["qadapter"]
    assert cfg.data.max_prompt_tokens == 64 and kw["pairs"] == 5 and kw["out"] == tmp_path / "eval_qadapter.json"


def test_eval_config_is_the_metrics_command(calls, tmp_path):
    """The original form ``rlcustom eval CONFIG --metrics ...`` (and with only overrides, or only options)."""
    assert main(["eval", "configs/pipeline/3-ppo.yaml", "--metrics", "reward,kl", "--reference", "ref",
                 f"output_dir={tmp_path}"]) == 0
    cfg, kw = calls.pop("eval")
    assert kw["metrics"] == ("reward", "kl") and kw["reference"] == "ref" and cfg.trainer == "ppo"
    assert main(["eval", f"output_dir={tmp_path}", "--metrics", "ppl"]) == 0
    assert calls["eval"][1]["metrics"] == ("ppl",)


def test_train_with_separator_and_late_options(calls, tmp_path):
    assert main(["train", "--", "trainer=pg", f"output_dir={tmp_path}", "steps=3"]) == 0
    assert calls["train"].trainer == "pg" and calls["train"].steps == 3


def test_submit_install_without_a_value_takes_the_lock(calls):
    with pytest.raises(SystemExit):
        main(["submit", "configs/ppo.yaml", "steps=2", "--install", "--dry-run"])
    (config, overrides), kw = calls["submit"]
    assert config == "configs/ppo.yaml" and overrides == ["steps=2"]
    assert kw["install"] == "cluster/requirements-cpu.txt"


def test_jobs_address_before_or_after_the_action():
    for argv in (["jobs", "--address", "http://h:1", "list"], ["jobs", "list", "--address", "http://h:1"]):
        ctx = parse_only(argv)
        assert ctx.command.name == "list"
        assert (ctx.params["address"] or ctx.parent.params["address"]) == "http://h:1"


def test_bench_passes_everything_after_the_name():
    ctx = parse_only(["bench", "decoding", "--batches", "1,4", "--help"])
    assert ctx.params["name"] == "decoding" and [*(ctx.params["args"] or []), *ctx.args] == ["--batches", "1,4",
                                                                                             "--help"]


def test_verbose_anywhere_before_the_separator():
    assert A._hoist_verbose(["train", "c.yaml", "--verbose", "steps=1"]) == ["--verbose", "train", "c.yaml", "steps=1"]
    assert A._hoist_verbose(["bench", "x", "-v"]) == ["bench", "x", "-v"]  # the benchmark's own flag


@pytest.mark.parametrize("argv, expect", [
    (["eval", "dera", "--bogus"], "No such option: --bogus"),
    (["train"], "Missing argument"),
    (["trian"], "Did you mean 'train'"),
    (["generate", "--engine", "tpu"], "'tpu' is not one of"),
])
def test_usage_errors_are_one_line_exit_2(argv, expect, capsys):
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and expect in err[0] and err[0].startswith("rlcustom"), err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"rlcustom {A.version()}"


def test_completion_is_offered(capsys):
    with pytest.raises(SystemExit) as e:  # typer's completion options exit themselves
        main(["--show-completion", "bash"])
    assert e.value.code == 0
    assert "_RLCUSTOM_COMPLETE" in capsys.readouterr().out
