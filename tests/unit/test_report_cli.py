"""`sgl-deploy report`: newest run folder, per-endpoint tables, exit status from the reports."""

import json
import os

from sgl_deploy.cli import main
from sgl_deploy.report import latest_run_dir


def _write(root, stamp, target, passed):
    d = root / stamp / target
    d.mkdir(parents=True)
    probes = [{"name": "chat", "status": "pass" if passed else "fail", "latency_s": 0.5,
               "ttft_s": None, "tokens_per_s": None, "detail": "ok" if passed else "empty answer"}]
    (d / "report.json").write_text(json.dumps(
        {"base_url": f"http://{target}:8000", "model": "MiniMax-M3", "passed": passed,
         "duration_s": 1.0, "probes": probes}))


def test_newest_run_is_picked_and_failures_set_exit_1(tmp_path, capsys):
    _write(tmp_path, "20261128T100000Z", "lab1", True)
    _write(tmp_path, "20261128T110000Z", "lab1", True)
    _write(tmp_path, "20261128T110000Z", "lab2", False)
    os.makedirs(tmp_path / "20261128T120000Z" / "empty")  # no report: not a run
    assert latest_run_dir(str(tmp_path)).endswith("20261128T110000Z")
    assert main(["report", "--reports", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "== lab1 ==" in out and "== lab2 ==" in out
    assert "failed: chat" in out and "SOME FAILED: 2 endpoint(s)" in out


def test_all_passed_exit_0_and_missing_exit_2(tmp_path, capsys):
    _write(tmp_path, "20261128T100000Z", "router", True)
    assert main(["report", str(tmp_path / "20261128T100000Z")]) == 0
    assert "ALL PASSED: 1 endpoint(s)" in capsys.readouterr().out
    assert main(["report", "--reports", str(tmp_path / "nothing")]) == 2


def test_report_shows_accuracy_as_a_number_with_its_plot(tmp_path, capsys):
    d = tmp_path / "20261129T100000Z" / "lab1"
    d.mkdir(parents=True)
    probes = [{"name": "accuracy", "status": "pass", "latency_s": 0.4, "ttft_s": None, "tokens_per_s": None,
               "detail": "accuracy 0.975 (117/120)", "data": {"accuracy": 0.975, "correct": 117, "problems": 120,
                                                           "threshold": 0.9, "p95_s": 1.25}}]
    (d / "report.json").write_text(json.dumps({"base_url": "http://lab1:8000", "model": "MiniMax-M3",
                                               "passed": True, "duration_s": 3.0, "probes": probes}))
    (d / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert main(["report", "--reports", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "accuracy 0.975 (117/120, threshold 0.90, p95 1.25s)" in out
    assert f"plot: {d / 'plot.png'}" in out


def test_max_duration_prints_the_runtime_and_fails_over_budget(tmp_path, capsys):
    _write(tmp_path, "20261129T100000Z", "lab1", True)  # duration_s 1.0
    assert main(["report", "--reports", str(tmp_path), "--max-duration", "60"]) == 0
    assert "probe set runtime: 1.0s for 1 probes (within the 60s budget)" in capsys.readouterr().out
    assert main(["report", "--reports", str(tmp_path), "--max-duration", "0.5"]) == 1
    assert "OVER the 0.5s budget" in capsys.readouterr().out
