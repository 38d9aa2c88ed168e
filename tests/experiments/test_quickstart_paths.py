"""The quickstart writes to a git-ignored folder unless told otherwise (never over tracked files)."""

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))

import quickstart  # noqa: E402


def test_default_out_is_a_git_ignored_folder():
    argv = quickstart.with_default_out(["--quick"])
    assert argv == ["--out", str(REPO / "runs" / "quickstart"), "--quick"]
    probe = str((REPO / "runs" / "quickstart" / "results.md").relative_to(REPO))
    ignored = subprocess.run(["git", "check-ignore", "-q", probe], cwd=REPO)
    assert ignored.returncode == 0, f"{probe} is not git-ignored"


def test_an_explicit_out_is_kept():
    for argv in (["--out", "elsewhere"], ["--out=elsewhere", "--quick"]):
        assert quickstart.with_default_out(argv) == argv
