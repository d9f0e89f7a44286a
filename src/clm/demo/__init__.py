"""clm's own demo data: a simulated online shop whose events fit the warehouse."""

from clm.demo.simulate import simulate_shop, write_parquet

__all__ = ["simulate_shop", "write_parquet"]
