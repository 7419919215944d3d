"""`rlcustom bench all`: which scripts it runs, and ok / skipped / failed per benchmark in its own process."""
import json
import sys

import pytest

from rlcustom import bench_runner as br

OK = '''import json, pathlib
BENCH_ALL_ARGS = ["--short"]
def main(argv):
    d = pathlib.Path(__file__).parent / "results"
    d.mkdir(exist_ok=True)
    (d / "ok.json").write_text(json.dumps({"argv": argv}))
    print("ok table")
'''
MISSING_DEP = '''def main(argv):
    import not_an_installed_package_xyz  # noqa: F401
'''
OWN_BUG = '''def main(argv):
    import rlcustom.no_such_module  # noqa: F401  (our own code: a failure, not a skip)
'''
BROKEN = '''def main(argv):
    raise ValueError("bad setting in broken")
'''
SAYS_SKIP = '''from rlcustom.bench_runner import BenchmarkSkipped
def main(argv):
    raise BenchmarkSkipped("needs CUDA")
'''


def _bench_dir(tmp_path, files: dict[str, str]):
    b = tmp_path / "benchmarks"
    b.mkdir()
    (b / "__init__.py").write_text("")
    for name, src in files.items():
        (b / name).write_text(src)
    return b


def test_selection_leaves_out_helpers_experiments_opt_outs_and_non_benchmarks(tmp_path):
    main = "def main(argv):\n    pass\n"
    b = _bench_dir(tmp_path, {"common.py": main, "_shared.py": main, "quick.py": main, "trl_dpo.py": main,
                              "vas_135m.py": main, "l3m_135m.py": main, "qadapter_135m_table.py": main,
                              "run.sh": "echo\n",
                              "optout.py": "IN_BENCH_ALL = False\n" + main, "optin.py": "IN_BENCH_ALL = True\n" + main,
                              "helpers.py": "def helper():\n    pass\n"})
    assert br.comparison_benchmarks(b) == ["optin", "quick", "trl_dpo"]
    # by name, everything but the shared helpers runs (the experiments too)
    assert br.benchmark_names(b) == ["helpers", "l3m_135m", "optin", "optout", "qadapter_135m_table", "quick",
                                     "trl_dpo", "vas_135m"]


def test_bench_all_args_are_read_without_importing():
    assert br.bench_all_args("import nothing_installed\nBENCH_ALL_ARGS = ['--quick', '--repeats', '2']\n") == \
        ["--quick", "--repeats", "2"]
    assert br.bench_all_args("def main(argv):\n    pass\n") == []
    with pytest.raises(ValueError, match="list of strings"):
        br.bench_all_args("BENCH_ALL_ARGS = ['--repeats', 2]\n")


def test_the_checkouts_experiments_are_not_in_all():
    from pathlib import Path

    names = br.comparison_benchmarks(Path(__file__).resolve().parents[2] / "benchmarks")
    assert {"generation", "weight_sync", "runtime_overhead"} <= set(names)
    assert not [n for n in names if "_135m" in n or n.startswith("_") or n == "common"]


@pytest.mark.parametrize("err, reason", [
    (ModuleNotFoundError("No module named 'trl'", name="trl"), "optional dependency missing: No module named 'trl'"),
    (ImportError("cannot import name 'GRPOTrainer' from 'trl'", name="trl"),
     "optional dependency missing: cannot import name 'GRPOTrainer' from 'trl'"),
    (ModuleNotFoundError("No module named 'rlcustom.x'", name="rlcustom.x"), None),
    (ModuleNotFoundError("No module named 'benchmarks.y'", name="benchmarks.y"), None),
    (br.BenchmarkSkipped("needs CUDA"), "needs CUDA"),
    (ValueError("bad"), None),
])
def test_skip_reason(err, reason):
    assert br.skip_reason(err) == reason


def test_status_of_reads_exit_code_and_the_skip_line():
    assert br.status_of(0, ["anything\n"]) == "ok"
    assert br.status_of(br.SKIP_RC, ["x\n", br.SKIP_MARK + "optional dependency missing: trl\n", "\n"]) == \
        "skipped: optional dependency missing: trl"
    assert br.status_of(1, ["Traceback\n", "ValueError: bad\n", "\n"]) == "failed (exit 1): ValueError: bad"


def test_run_all_reports_each_benchmark_and_writes_the_summary(tmp_path, monkeypatch, capsys):
    _bench_dir(tmp_path, {"a_ok.py": OK, "b_missing_dep.py": MISSING_DEP, "c_own_bug.py": OWN_BUG,
                          "d_broken.py": BROKEN, "e_says_skip.py": SAYS_SKIP, "f_exp_135m.py": BROKEN})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    from rlcustom.cli import main

    assert main(["bench", "all"]) == 1  # one benchmark failed: the run says so, the others still ran
    out = capsys.readouterr().out
    got = json.loads((tmp_path / "benchmarks" / "results" / "bench_all.json").read_text())
    status = {r["benchmark"]: r["status"] for r in got["rows"]}
    assert list(status) == ["a_ok", "b_missing_dep", "c_own_bug", "d_broken", "e_says_skip"]
    assert status["a_ok"] == "ok"
    assert status["b_missing_dep"].startswith("skipped: optional dependency missing")
    assert "not_an_installed_package_xyz" in status["b_missing_dep"]
    assert status["c_own_bug"].startswith("failed (exit 1)") and "rlcustom.no_such_module" in status["c_own_bug"]
    assert status["d_broken"] == "failed (exit 1): ValueError: bad setting in broken"
    assert status["e_says_skip"] == "skipped: needs CUDA"
    ok = next(r for r in got["rows"] if r["benchmark"] == "a_ok")
    assert [p.rsplit("/", 1)[-1] for p in ok["json"]] == ["ok.json"]  # only what this benchmark wrote
    assert all(r["json"] == [] for r in got["rows"] if r["benchmark"] != "a_ok")
    assert json.loads((tmp_path / "benchmarks" / "results" / "ok.json").read_text()) == {"argv": ["--short"]}
    assert "ok table" in out  # the benchmark's own output is streamed through
    table = out[out.rindex("\nbenchmark "):].splitlines()[1:]  # header, then one line per benchmark
    assert table[0].split()[:2] == ["benchmark", "seconds"] and table[0].split()[2:] == ["json", "status"]
    row = next(line for line in table if line.startswith("b_missing_dep "))
    assert row.split()[2:5] == ["-", "skipped:", "optional"]


def test_a_hung_benchmark_is_stopped_at_its_time_limit(tmp_path):
    _bench_dir(tmp_path, {"hang.py": "import time\ndef main(argv):\n    time.sleep(600)\n"})
    r = br.run_one("hang", tmp_path, tmp_path / "benchmarks" / "results", timeout_s=3)
    assert r.status == "failed: timed out after 3 s" and r.seconds < 60
