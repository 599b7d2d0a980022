"""`python -m softlab ...` is the `softlab` command."""

from softlab.cli import run

run()
