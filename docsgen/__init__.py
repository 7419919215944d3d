"""Generators for the documentation site (mkdocs hook in docsgen/hooks.py): pages built from the code and
from benchmarks/results/*.json, so that no key, default or measured number is typed by hand in docs/."""
