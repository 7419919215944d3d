"""mkdocs hook: adds the generated pages and fills ``<!-- results:NAME -->`` markers.

Generated at build time, never committed:
  configuration.md  from the config classes          (docsgen/config_ref.py)
  cli.md            from the typer app                (docsgen/cli_ref.py)
  results.md        from benchmarks/results/*.json    (docsgen/results.py)
and the plots in benchmarks/results/ (PNG/SVG) as results/NAME.EXT.

A page may hold ``<!-- results:NAME -->`` (the rows and ratios of benchmarks/results/NAME.json) or
``<!-- results-full:NAME -->`` (with settings and notes); the marker is replaced by the rendered table.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # mkdocs loads this file by path: make docsgen and rlcustom importable
    sys.path.insert(0, str(ROOT))

from docsgen import cli_ref, config_ref, results  # noqa: E402

MARKER = re.compile(r"<!--\s*results(-full)?:([A-Za-z0-9_]+)\s*-->")
GENERATED = {"configuration.md": config_ref.render, "cli.md": cli_ref.render, "results.md": results.render_all}


def on_files(files, config):
    from mkdocs.structure.files import File

    for name, make in GENERATED.items():
        if files.get_file_from_path(name) is None:
            files.append(File.generated(config, name, content=make()))
    for plot in sorted(results.RESULTS.glob("*.png")) + sorted(results.RESULTS.glob("*.svg")):
        files.append(File.generated(config, f"results/{plot.name}", content=plot.read_bytes()))
    return files


def on_page_markdown(markdown, page, config, files):
    def fill(m: re.Match) -> str:
        level = 3
        return results.render(m.group(2), level=level, full=bool(m.group(1)))

    return MARKER.sub(fill, markdown)
