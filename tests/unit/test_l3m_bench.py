"""The L3M 135M experiment runs by name only: `rlcustom bench all` leaves it out."""
from pathlib import Path

from rlcustom import bench_runner as br

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_l3m_135m_is_runnable_by_name_but_not_in_all():
    assert "l3m_135m" in br.benchmark_names(BENCH)
    assert "l3m_135m" not in br.comparison_benchmarks(BENCH)
    assert not br._opts_in((BENCH / "l3m_135m.py").read_text())  # IN_BENCH_ALL = False, not only the name
