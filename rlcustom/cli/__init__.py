"""The ``rlcustom`` command line (typer). Entry point: :func:`main` (``rlcustom = "rlcustom.cli:main"``).

One module per group of commands: generate.py, run.py (train/demo/prepare-model/plot), eval.py,
bench.py, cluster.py; options.py holds what they share; root.py the table, the root options and main.
"""
from rlcustom.cli.root import COMMANDS, app, main, version
from rlcustom.cli.generate import run_generation

__all__ = ["app", "main", "COMMANDS", "run_generation", "version"]
