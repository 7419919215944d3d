"""``rlcustom bench all``: which scripts in benchmarks/ are comparison benchmarks, and running them.

A comparison benchmark is a module ``benchmarks/NAME.py`` with a top-level ``main(argv)``, except:

* ``common`` and names starting with ``_`` (shared helpers);
* experiment scripts and their helpers, whose names contain ``_135m`` (``vas_135m.py``, ``l3m_135m.py``,
  ``qadapter_135m_table.py``, ...; shell scripts are never modules): they train and evaluate for a long
  time, or collect such runs, rather than compare two sides;
* a module that sets ``IN_BENCH_ALL = False`` at top level (runnable by name only).

A module may set ``BENCH_ALL_ARGS = ["--quick"]`` (a literal list of strings): the arguments ``bench all``
passes to it (default: none, i.e. its default settings), to keep the whole run short.

Each benchmark runs in its own process (``rlcustom bench NAME`` at its default settings), so a crash,
a Ray session or memory of one does not reach the next. A benchmark whose optional dependency is
missing (an ``ImportError`` of a package outside rlcustom/benchmarks) or that raises
:class:`BenchmarkSkipped` exits with :data:`SKIP_RC` and is reported as ``skipped: <reason>``.
"""
from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

SKIP_RC = 3  # exit status of `rlcustom bench NAME` when the benchmark cannot run here
SKIP_MARK = "rlcustom bench: skipped: "
OWN_PACKAGES = ("rlcustom", "benchmarks")


class BenchmarkSkipped(Exception):
    """Raise from a benchmark's ``main`` when it cannot run on this machine (the message says why)."""


@dataclass
class BenchResult:
    benchmark: str
    seconds: float
    status: str  # ok | skipped: <reason> | failed: <reason>
    json: list[str]


def benchmark_names(bench_dir: Path) -> list[str]:
    """Every runnable module (for ``rlcustom bench NAME``): not ``common``, not ``_private``."""
    return sorted(p.stem for p in bench_dir.glob("*.py") if p.stem != "common" and not p.stem.startswith("_"))


def is_experiment(name: str) -> bool:
    return "_135m" in name


def _opts_in(source: str) -> bool:
    """Top-level ``def main`` and no ``IN_BENCH_ALL = False``."""
    tree = ast.parse(source)
    has_main = any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
    for n in tree.body:
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "IN_BENCH_ALL" for t in n.targets):
            if isinstance(n.value, ast.Constant) and n.value.value is False:
                return False
    return has_main


def bench_all_args(source: str) -> list[str]:
    """The module's literal ``BENCH_ALL_ARGS`` list, or []."""
    for n in ast.parse(source).body:
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "BENCH_ALL_ARGS" for t in n.targets):
            value = ast.literal_eval(n.value)
            if not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
                raise ValueError(f"BENCH_ALL_ARGS must be a list of strings, got {value!r}")
            return list(value)
    return []


def comparison_benchmarks(bench_dir: Path) -> list[str]:
    """The benchmarks ``rlcustom bench all`` runs, in name order."""
    return [n for n in benchmark_names(bench_dir)
            if not is_experiment(n) and _opts_in((bench_dir / f"{n}.py").read_text())]


def skip_reason(err: BaseException) -> str | None:
    """Why a benchmark cannot run here, or None when ``err`` is a real failure."""
    if isinstance(err, BenchmarkSkipped):
        return str(err) or "benchmark says it cannot run here"
    if isinstance(err, ImportError):
        mod = (getattr(err, "name", None) or "").split(".")[0]
        if mod and mod not in OWN_PACKAGES:  # an optional package (trl, vllm, ...), not our own code
            return f"optional dependency missing: {err}"
    return None


def status_of(rc: int, output_tail: list[str]) -> str:
    """One status line from a benchmark process's exit code and last lines of output."""
    if rc == 0:
        return "ok"
    if rc == SKIP_RC:
        for line in reversed(output_tail):
            if SKIP_MARK in line:
                return "skipped: " + line.split(SKIP_MARK, 1)[1].strip()
        return "skipped"
    last = next((line.strip() for line in reversed(output_tail) if line.strip()), "")
    return f"failed (exit {rc}): {last[:200]}"


def run_one(name: str, root: Path, results: Path, timeout_s: float | None, argv: list[str] = ()) -> BenchResult:
    """``python -m rlcustom.cli bench NAME`` in its own process group, output streamed through."""
    before = _mtimes(results)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "rlcustom.cli", "bench", name, *argv], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True)
    tail: list[str] = []

    def pump() -> None:  # stream the output through, keep its last lines for the status
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            tail[:] = (tail + [line])[-40:]

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGTERM)  # the benchmark's own process group (its Ray workers too)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    reader.join(10)
    rc = proc.wait()
    seconds = time.perf_counter() - t0
    status = f"failed: timed out after {timeout_s:g} s" if timed_out else status_of(rc, tail)
    written = [str(p) for p, m in _mtimes(results).items() if before.get(p) != m]
    return BenchResult(name, seconds, status, sorted(written))


def _mtimes(d: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime for p in d.glob("*.json")} if d.is_dir() else {}


def summary_table(rows: list[BenchResult], root: Path | None = None) -> str:
    def rel(p: str) -> str:
        return os.path.relpath(p, root) if root else p

    cells = [("benchmark", "seconds", "json", "status")]
    cells += [(r.benchmark, f"{r.seconds:.0f}", ", ".join(rel(p) for p in r.json) or "-", r.status) for r in rows]
    w = [max(len(c[i]) for c in cells) for i in range(3)]
    return "\n".join("  ".join([c[0].ljust(w[0]), c[1].rjust(w[1]), c[2].ljust(w[2]), c[3]]) for c in cells)


def run_all(root: Path, *, timeout_each_s: float | None = 900.0, only: list[str] | None = None) -> list[BenchResult]:
    """Run every comparison benchmark, print the table, write benchmarks/results/bench_all.json."""
    bench_dir, results = root / "benchmarks", root / "benchmarks" / "results"
    names = only or comparison_benchmarks(bench_dir)
    print(f"rlcustom bench all: {', '.join(names)}", flush=True)
    t0 = time.perf_counter()
    rows = []
    for name in names:
        print(f"\n######## {name}", flush=True)
        rows.append(run_one(name, root, results, timeout_each_s,
                            bench_all_args((bench_dir / f"{name}.py").read_text())))
        print(f"######## {name}: {rows[-1].status} ({rows[-1].seconds:.0f} s)", flush=True)
    total = time.perf_counter() - t0
    print("\n" + summary_table(rows, root))
    print(f"total: {total:.0f} s")
    results.mkdir(parents=True, exist_ok=True)
    out = results / "bench_all.json"
    machine = {}
    try:
        sys.path.insert(0, str(root))
        from benchmarks.common import machine as _machine

        machine = _machine()
    except Exception:  # noqa: BLE001 - the table matters more than the machine facts
        pass
    out.write_text(json.dumps({"benchmark": "bench_all", "machine": machine, "total_s": total,
                               "rows": [asdict(r) for r in rows]}, indent=2))
    print(f"wrote {out}")
    return rows
