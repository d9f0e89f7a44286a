"""Benchmark: clm's RFM summary and BG/NBD fit against lifetimes 0.11.3, same data.

    .venv/bin/python bench/bench_clv.py [--customers 100000] [--transactions 1000000]

Generates a seeded transaction log (by default 1,000,000 transactions of 100,000
customers over two years), times clm's `summary` and `fit_bgnbd` on it, and then times
lifetimes' `summary_data_from_transaction_data` and `BetaGeoFitter.fit` on the same
file in a subprocess. lifetimes 0.11.3 only installs beside old numpy, pandas, scipy
and setuptools (it imports `pkg_resources`), so it lives in its own virtual
environment, built once under bench/.venv-lifetimes (git-ignored) and reused. The
script checks that both summaries agree and that both fits reach the same optimum
(log-likelihood within 0.01 %), and prints a comparison table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from clm.analyses.clv import BGNBD, fit_bgnbd, summary

HERE = Path(__file__).resolve().parent
LIFETIMES_VENV = HERE / ".venv-lifetimes"
OUT = HERE / "out"
# Versions that install together on Python 3.11 and run lifetimes 0.11.3 unchanged.
LIFETIMES_REQUIREMENTS = [
    "setuptools<70",
    "numpy<1.25",
    "pandas<2",
    "scipy<1.12",
    "lifetimes==0.11.3",
]
START = np.datetime64("2020-01-01")
DAYS = 730

# Runs inside the lifetimes environment; prints one JSON line.
WORKER = r"""
import json, sys, time
import numpy as np, pandas as pd
from lifetimes import BetaGeoFitter
from lifetimes.utils import summary_data_from_transaction_data
data = np.load(sys.argv[1])
tx = pd.DataFrame({"customer_id": data["customer_id"],
                   "timestamp": pd.to_datetime(data["timestamp_ns"]),
                   "amount": data["amount"]})
t_summary = t_fit = float("inf")
for _ in range(int(sys.argv[3])):  # best of N, as for clm
    t0 = time.perf_counter()
    s = summary_data_from_transaction_data(
        tx, "customer_id", "timestamp", monetary_value_col="amount",
        observation_period_end=sys.argv[2], freq="D", freq_multiplier=7)
    t_summary = min(t_summary, time.perf_counter() - t0)
    t0 = time.perf_counter()
    bgf = BetaGeoFitter().fit(s["frequency"], s["recency"], s["T"])
    t_fit = min(t_fit, time.perf_counter() - t0)
s = s.sort_index()
print(json.dumps({
    "summary_seconds": t_summary, "fit_seconds": t_fit,
    "params": {k: float(v) for k, v in bgf.params_.items()},
    "customers": int(len(s)),
    "sums": {c: float(s[c].sum()) for c in ["frequency", "recency", "T",
                                            "monetary_value"]},
}))
"""


def ensure_lifetimes_venv() -> Path:
    """The lifetimes environment's python, building it on first use."""
    python = LIFETIMES_VENV / "bin" / "python"
    stamp = LIFETIMES_VENV / "requirements.txt"
    wanted = "\n".join(LIFETIMES_REQUIREMENTS) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"building {LIFETIMES_VENV} (once) …", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(LIFETIMES_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *LIFETIMES_REQUIREMENTS],
        check=True,
    )
    stamp.write_text(wanted)
    return python


def generate(customers: int, transactions: int, seed: int) -> pd.DataFrame:
    """A seeded log drawn from the BG/NBD story itself, so the fit has an interior
    optimum: Poisson purchasing at rate lambda ~ Gamma(0.9, 10 days), drop-out after
    each purchase with p ~ Beta(1, 5), first purchases spread over the first year.

    The draw overshoots `transactions` a little; random repeat purchases are then
    dropped (a thinning of the Poisson process) to hit the count exactly.
    """
    rng = np.random.default_rng(seed)
    first = rng.integers(0, DAYS // 2, customers)
    rate = rng.gamma(0.9, 1 / 10.0, customers)
    drop = rng.beta(1.0, 5.0, customers)

    # Walk all customers forward one purchase at a time until all are gone.
    now = first.astype(np.float64)
    alive = np.ones(customers, dtype=bool)
    owners, times = [np.arange(customers)], [now.copy()]
    while alive.any():
        who = np.flatnonzero(alive)
        now[who] += rng.exponential(1 / rate[who])
        inside = now[who] < DAYS
        alive[who[~inside]] = False
        buyers = who[inside]
        owners.append(buyers)
        times.append(now[buyers].copy())
        alive[buyers[rng.random(len(buyers)) < drop[buyers]]] = False
    owner, moment = np.concatenate(owners), np.concatenate(times)
    if len(owner) < transactions:
        raise SystemExit(
            f"the draw gave only {len(owner):,} transactions; ask for fewer or raise "
            "the purchase rate in generate()."
        )
    keep = np.concatenate(
        [
            np.arange(customers),  # every first purchase stays
            customers
            + np.sort(
                rng.choice(len(owner) - customers, transactions - customers, False)
            ),
        ]
    )
    owner, moment = owner[keep], moment[keep]

    day = moment.astype(np.int64)
    seconds = ((moment - day) * 86_400).astype(np.int64)
    stamp = START + day.astype("timedelta64[D]") + seconds.astype("timedelta64[s]")
    return pd.DataFrame(
        {
            "customer_id": owner + 1_000_000,
            "timestamp": stamp.astype("datetime64[ns]"),
            "amount": np.round(rng.lognormal(3.0, 0.8, len(owner)), 2),
        }
    )


def best_of(runs: int, work: object) -> tuple[float, object]:
    """Shortest wall time of `runs` calls of `work` and the last result."""
    best, result = float("inf"), None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = work()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument("--runs", type=int, default=3, help="timings: best of N")
    args = parser.parse_args()

    tx = generate(args.customers, args.transactions, args.seed)
    end = str(START + np.timedelta64(DAYS - 1, "D"))
    OUT.mkdir(exist_ok=True)
    data_file = OUT / "clv_transactions.npz"
    np.savez(
        data_file,
        customer_id=tx["customer_id"].to_numpy(),
        timestamp_ns=tx["timestamp"].to_numpy().astype(np.int64),
        amount=tx["amount"].to_numpy(),
    )

    # clm, in this process.
    t_summary, frame = best_of(
        args.runs, lambda: summary(tx, observation_period_end=end, time_unit="W")
    )
    assert isinstance(frame, pd.DataFrame)
    t_fit, model = best_of(
        args.runs,
        lambda: fit_bgnbd(frame["frequency"], frame["recency"], frame["T"]),
    )
    assert isinstance(model, BGNBD) and model.result is not None

    # lifetimes, in its own environment, on the same file.
    python = ensure_lifetimes_venv()
    done = subprocess.run(
        [str(python), "-c", WORKER, str(data_file), end, str(args.runs)],
        check=True,
        capture_output=True,
        text=True,
    )
    theirs = json.loads(done.stdout.strip().splitlines()[-1])

    # Same summary (sums of every column), same optimum (log-likelihood of their
    # parameters under the one likelihood).
    for column, value in theirs["sums"].items():
        ours = float(frame[column].sum())
        assert abs(ours - value) <= 1e-6 * max(1.0, abs(value)), (column, ours, value)
    assert theirs["customers"] == len(frame)
    p = theirs["params"]
    their_ll = BGNBD(p["r"], p["alpha"], p["a"], p["b"]).log_likelihood(
        frame["frequency"], frame["recency"], frame["T"]
    )
    our_ll = model.result.log_likelihood
    gap = abs(our_ll - their_ll) / abs(their_ll)

    rows = [
        ("RFM summary (s)", t_summary, theirs["summary_seconds"]),
        ("BG/NBD fit (s)", t_fit, theirs["fit_seconds"]),
    ]
    print(
        f"\n{len(tx):,} transactions, {len(frame):,} customers, "
        f"{int((frame['frequency'] > 0).sum()):,} with a repeat purchase\n"
    )
    print("| step | clm | lifetimes 0.11.3 | speed-up |\n|---|---:|---:|---:|")
    for name, ours_s, theirs_s in rows:
        print(f"| {name} | {ours_s:.3f} | {theirs_s:.3f} | {theirs_s / ours_s:.1f}× |")
    print("\n| BG/NBD | r | alpha | a | b | log-likelihood |")
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| clm | {model.r:.4f} | {model.alpha:.4f} | {model.a:.4f} | {model.b:.4f} "
        f"| {our_ll:.2f} |"
    )
    print(
        f"| lifetimes | {p['r']:.4f} | {p['alpha']:.4f} | {p['a']:.4f} | "
        f"{p['b']:.4f} | {their_ll:.2f} |"
    )
    print(
        f"\nsummaries agree; log-likelihood gap {gap:.2e} "
        f"({'within' if gap <= 1e-4 else 'OUTSIDE'} 0.01 %); clm converged: "
        f"{model.result.converged} after {model.result.iterations} iterations"
    )


if __name__ == "__main__":
    main()
