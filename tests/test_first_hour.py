"""A user's first hour with mux (issue 14): what goes wrong between ``pip install`` and a working server.

Each test is the step a newcomer takes, run as they would run it: the ``mux`` command in a subprocess, from a
directory of their own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.test_config import run_mux


def without(module: str, directory: Path) -> str:
    """A PYTHONPATH on which importing ``module`` fails as if it were not installed."""
    package = directory / "hidden" / module
    package.mkdir(parents=True)
    text = f"raise ModuleNotFoundError('No module named ' + {module!r}, name={module!r})\n"
    (package / "__init__.py").write_text(text)
    return os.pathsep.join(p for p in (str(directory / "hidden"), os.environ.get("PYTHONPATH")) if p)


def test_bench_without_its_extra_says_what_to_install(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=without("rich", tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "mux.cli", "bench", "conf/ab.yaml", "--quick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "invalid choice" not in result.stderr
    assert result.stderr.strip() == (
        "mux bench: needs the 'rich' package, which is not installed: pip install 'mux[bench]'"
    ), result.stderr
    assert run_mux("bench", "--help", cwd=tmp_path).returncode == 0
