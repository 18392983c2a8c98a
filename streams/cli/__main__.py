"""`python -m streams.cli` runs the `ipr` command."""

from streams.cli.main import app

app()
