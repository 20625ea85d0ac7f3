"""A command that worked exits 0, every time: the CLI's query, k-anonymity and scan, run again and again.

Each run is a process of its own that ends the way `trustmesh …` ends — through the interpreter's whole
shutdown, where a background thread still inside DuckDB's C++ would abort the process (exit 134) after
the result was printed. The runs are forked from one process that imported the CLI once, so a hundred of
them cost what a hundred queries cost, not a hundred interpreter starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.meshfactory import governed_demo

RUNS = 100

# Forks a child per run; the child runs the CLI with its output in a file of its own and lets SystemExit
# end the interpreter as `trustmesh` would. The parent prints the exit codes as JSON.
ZYGOTE = r"""
import json, os, sys
from trustmesh.cli import main

runs, argv, out = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
codes = []
for i in range(runs):
    pid = os.fork()
    if pid == 0:
        fd = os.open(f"{out}/{i}.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.argv = ["trustmesh", *argv]
        main()
        sys.exit(0)
    _, status = os.waitpid(pid, 0)
    codes.append(os.waitstatus_to_exitcode(status))
print(json.dumps(codes))
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("exits") / "mesh"
    governed_demo(root).close()
    return root


def _runs(root: Path, tmp_path: Path, argv: list[str]) -> list[tuple[int, str]]:
    out = tmp_path / "runs"
    out.mkdir()
    done = subprocess.run([sys.executable, "-c", ZYGOTE, str(RUNS), json.dumps([*argv, "--mesh", str(root)]),
                           str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    codes: list[int] = json.loads(done.stdout.strip().splitlines()[-1])
    return [(code, (out / f"{i}.txt").read_text(errors="replace")) for i, code in enumerate(codes)]


@pytest.mark.parametrize("argv", [
    pytest.param(["query", "SELECT participant_id, nric FROM health.activity-dp.participants", "--limit", "2",
                  "--as", "irfan"], id="query"),
    pytest.param(["privacy", "kanon", "health.activity-dp.participants", "--quasi", "gender", "--as", "nurul"],
                 id="kanon"),
    pytest.param(["scan", "health.activity-dp.participants", "--sample", "500", "--as", "nurul"], id="scan"),
])
def test_a_command_that_worked_exits_0_every_time(demo: Path, tmp_path: Path, argv: list[str]) -> None:
    runs = _runs(demo, tmp_path, argv)
    assert len(runs) == RUNS
    failed: list[Any] = [(i, code, text[-600:]) for i, (code, text) in enumerate(runs) if code != 0]
    assert not failed, f"{len(failed)} of {RUNS} runs of `trustmesh {' '.join(argv)}` did not exit 0: {failed[:3]}"
    assert all(text.strip() for _, text in runs)  # each printed its result
