"""`python -m benchmarks`: the lab's commands."""

from benchmarks.cli import app

app()
