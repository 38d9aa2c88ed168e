"""metrics.jsonl handling on resume and the progress display (plain lines and tqdm bar)."""

import json

import pytest

from imro_jax.train import reporting


def test_resumed_run_drops_the_lines_of_steps_it_will_redo(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = reporting.MetricsWriter(path, resume_step=0)
    for step in range(1, 6):
        writer.write({"step": step, "loss": 1.0 / step})
    writer.write({"step": 5, "eval/accuracy": 0.5})
    resumed = reporting.MetricsWriter(path, resume_step=3)
    resumed.write({"step": 4, "loss": 0.0})
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


@pytest.mark.parametrize("seconds,text", [(5.4, "5s"), (75.2, "1m15s"), (3700, "1h01m"),
                                          (float("inf"), "?")])
def test_format_duration(seconds, text):
    assert reporting.format_duration(seconds) == text


def test_plain_progress_lines_show_step_loss_rate_and_eta(capsys):
    progress = reporting.Progress(total=10, start=0, interactive=False)
    progress.update(5, 0.123456, 2.0)
    progress.close()
    assert capsys.readouterr().out == "step 5/10  loss 0.1235  2.00 steps/s  ETA 2s\n"


def test_interactive_progress_is_a_bar_on_stderr(capsys):
    progress = reporting.Progress(total=10, start=2, interactive=True)
    progress.update(5, 0.123456, 2.0)
    progress.message("resumed")
    progress.close()
    captured = capsys.readouterr()
    assert "5/10" in captured.err and "loss=0.1235" in captured.err
    assert "resumed" in captured.out + captured.err
