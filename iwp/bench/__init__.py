"""Speed benchmarks (python -m iwp.bench ...): tools built on the library, never imported by it."""
