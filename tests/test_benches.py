"""Every benchmark still runs: each `bench/*.py --quick` exits 0 and ends with its line of key=value figures.

The figures themselves are judged by running the benchmarks in full (`make bench`); here a benchmark that
stops running (an API it calls changed, a mesh it writes no longer validates) fails the test run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from meshfactory import METASTORE_TIER, spark_missing

BENCH = Path(__file__).resolve().parents[1] / "bench"
FIGURE = re.compile(r"^[a-z][a-z0-9_]*=\S+$")
BENCHES = ["access", "build", "governance", "lineage", "quality", "query"]  # and scale, which needs Spark

pytestmark = pytest.mark.skipif(METASTORE_TIER == "postgresql", reason="the benchmarks make their own metastores "
                                "(and a PostgreSQL one where a server answers); they run once, in the first pass")


def test_every_benchmark_is_smoke_run_here() -> None:
    assert {p.stem for p in BENCH.glob("*.py")} == set(BENCHES) | {"scale"}


def run_quick(name: str) -> str:
    done = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--quick"], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, f"bench/{name}.py --quick failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    last = done.stdout.strip().splitlines()[-1]
    figures = last.split()
    assert figures and all(FIGURE.match(f) for f in figures), f"bench/{name}.py ended without its figures: {last}"
    return last


@pytest.mark.parametrize("name", BENCHES)
def test_a_benchmark_runs_and_ends_with_its_figures(name: str) -> None:
    run_quick(name)


@pytest.mark.spark
def test_the_scale_benchmark_runs_on_duckdb_and_spark() -> None:
    if (reason := spark_missing()) is not None:
        pytest.skip(reason)
    assert "spark_small_s=" in run_quick("scale")
