"""A benchmark's report: one section per title in the log, the command relative to the repository."""

import sys

from imro_jax import perf


def test_report_writes_one_section_per_title_with_a_relative_command(tmp_path, monkeypatch, capsys):
    log = tmp_path / "RESULTS.md"
    log.write_text("# Benchmarks\n\npreamble\n")
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "bench" / "speed.py"), "--tiny"])
    text = perf.Report("Speed", log, root=tmp_path).finish("| a |\n|---|\n| 1 |", notes=["first note"])
    assert text.startswith("## Speed (") and "- command: `python bench/speed.py --tiny`" in text
    assert "- first note\n\n| a |" in text and "load average (1 min) at start / end:" in text
    assert str(tmp_path) not in text and text in capsys.readouterr().out
    perf.Report("Other", log, root=tmp_path).finish("| b |")
    perf.Report("Speed", log, root=tmp_path).finish("| c |")  # replaces the first section, keeps the rest
    written = log.read_text()
    assert written.startswith("# Benchmarks\n\npreamble\n") and written.count("## Speed (") == 1
    assert "| c |" in written and "| a |" not in written and "## Other (" in written


def test_report_without_a_log_prints_only(tmp_path, capsys):
    text = perf.Report("Speed", "", root=tmp_path).finish("| a |")
    assert "| a |" in capsys.readouterr().out and text.endswith("| a |\n")
    assert list(tmp_path.iterdir()) == []
