"""`python -m services.experiments`: the sweep's command line (cli.py)."""

from services.experiments.cli import main

main()
