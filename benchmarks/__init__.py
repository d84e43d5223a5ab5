"""Speed and memory benchmarks: run from the repository root as
``.venv/bin/python -m benchmarks.<name> --help``; figures go to docs/BENCHMARKS.md."""
