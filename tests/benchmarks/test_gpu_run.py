"""benchmarks/gpu_run.sh's front door; the whole script is rehearsed by benchmarks/gpu_rehearsal.sh (it downloads)."""
from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*arguments: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_run.sh"), *arguments], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_help_says_what_runs_and_writes_nothing():
    result = _run("--help")
    assert result.returncode == 0
    assert "gpu_check.json" in result.stdout and "--device cpu with --tiny" in result.stdout
    assert not result.stdout.startswith("#")


def test_bad_arguments_are_refused_in_one_line_before_anything_runs(tmp_path):
    for arguments, message in ((("--bogus",), "unknown argument '--bogus'"),
                               (("--device", "tpu"), "--device must be cuda or cpu, not 'tpu'")):
        result = _run(*arguments)
        assert result.returncode == 2 and result.stderr.strip() == f"gpu_run.sh: {message}" + (
            " (see --help)" if "unknown" in message else "")
    outside = _run(cwd=tmp_path)
    assert outside.returncode == 2 and "run it from the repository root" in outside.stderr
    assert list(tmp_path.iterdir()) == []
