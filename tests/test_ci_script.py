"""`.ci/run` fails when the tests or the install checks beside them fail, and prints both logs.

The script runs in a scratch copy of `.ci/` with `python3` stubbed on PATH: the stub's venv has a
`python` (the test suite) and the stub answers `.ci/install_checks.py`, each exiting with the code
the test asks for.
"""

import os
import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
STUB = """#!/bin/bash
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p .venv/bin
  printf '#!/bin/bash\\nexit 0\\n' > .venv/bin/pip
  printf '#!/bin/bash\\necho suite-ran; exit ${TESTS_RC}\\n' > .venv/bin/python
  chmod +x .venv/bin/pip .venv/bin/python; exit 0
fi
if [ "$1" = ".ci/install_checks.py" ]; then sleep 1; echo checks-ran; exit ${CHECKS_RC}; fi
exit 0
"""


@pytest.mark.parametrize("tests_rc,checks_rc", [(0, 0), (1, 0), (0, 3), (2, 4)])
def test_ci_run_fails_when_either_part_fails(tmp_path, tests_rc, checks_rc):
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO / ".ci" / "run", tmp_path / ".ci" / "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(STUB)
    (bin_dir / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "TESTS_RC": str(tests_rc), "CHECKS_RC": str(checks_rc)}
    done = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], env=env, capture_output=True, text=True,
                          timeout=60)
    out = done.stdout + done.stderr
    assert (done.returncode == 0) == (tests_rc == 0 and checks_rc == 0), out
    assert "suite-ran" in out and "checks-ran" in out  # both ran, and the checks' log is printed
    assert f"install checks (ran beside the tests), exit {checks_rc}" in out
    assert "[ci] setup ... took" in out and "[ci] install checks ... took" in out
