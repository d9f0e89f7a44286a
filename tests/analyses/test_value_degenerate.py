"""Degenerate data through `clm rfm` and `clm clv`: a clear message, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLM = str(Path(sys.executable).with_name("clm"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLM, *args], capture_output=True, text=True, timeout=120)


def workspace_with(tmp_path: Path, lines: list[str]) -> Path:
    ws = tmp_path / "ws"
    assert run("init", str(ws)).returncode == 0
    if lines:
        csv = tmp_path / "orders.csv"
        csv.write_text("customer_id,date,amount\n" + "\n".join(lines) + "\n")
        assert run("import", "transactions", str(csv), "-w", str(ws)).returncode == 0
    return ws


def test_no_orders(tmp_path: Path) -> None:
    ws = workspace_with(tmp_path, [])
    for args in (["rfm"], ["clv", "fit"], ["clv", "predict"]):
        proc = run(*args, "-w", str(ws))
        assert proc.returncode == 1, args
        assert "no orders" in proc.stderr and "clm import transactions" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_one_customer_is_not_converged(tmp_path: Path) -> None:
    ws = workspace_with(
        tmp_path, ["a,2024-01-01,10", "a,2024-02-01,20", "a,2024-03-05,30"]
    )
    fit = run("clv", "fit", "-w", str(ws), "--json")
    assert fit.returncode == 1
    body = json.loads(fit.stdout)
    assert body["purchases"]["converged"] is False
    assert "single customer" in body["purchases"]["message"]
    assert "did not converge" in fit.stderr
    predict = run("clv", "predict", "-w", str(ws))
    assert predict.returncode == 1
    assert "did not converge" in predict.stderr and "Traceback" not in predict.stderr


def test_nobody_repeats_uses_no_nan(tmp_path: Path) -> None:
    ws = workspace_with(
        tmp_path, [f"c{i},2024-01-{i + 1:02d},{10 + i}" for i in range(6)]
    )
    fit = run("clv", "fit", "-w", str(ws), "--json")
    assert fit.returncode == 1
    body = json.loads(fit.stdout)
    assert "no customer made a repeat purchase" in body["purchases"]["message"]
    # Gamma-Gamma has nothing to fit: the documented spend fallback is announced.
    assert body["spend"] is None
    assert any("spend fallback" in n for n in body["notes"])
    # The RFM table still works: everyone has frequency 0.
    rfm = run("rfm", "-w", str(ws), "--json")
    assert rfm.returncode == 0
    seg = json.loads(rfm.stdout)["segments"]
    assert sum(s["customers"] for s in seg) == 6


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return workspace_with(
        tmp_path_factory.mktemp("small"),
        ["a,2024-01-01,10", "a,2024-02-01,20", "b,2024-01-03,5"],
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["clv", "predict", "--margin", "1.5"], "margin: 1.5"),
        (["clv", "fit", "-m", "weibull"], "valid: bgnbd, paretonbd"),
        (["rfm", "--as-of", "2023-01-01"], "before the first order"),
        (["clv", "validate", "--calibration-end", "2024-12-01"], "holdout period"),
        (["rfm", "--as-of", "tomorrow"], "expected YYYY-MM-DD"),
    ],
)
def test_bad_options_say_what_to_do(small: Path, args: list[str], words: str) -> None:
    proc = run(*args, "-w", str(small))
    assert proc.returncode == 1
    assert words in proc.stderr and "Traceback" not in proc.stderr
