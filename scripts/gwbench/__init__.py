"""Parts of scripts/bench_gateway.py: paths under test, load generators, process accounting, report."""
