"""The command-line reference, generated from the typer app (rlcustom/cli/): every command, its arguments
and options with their help, as the CLI itself declares them."""
from __future__ import annotations

from enum import Enum

__all__ = ["render"]


def _rows(cmd) -> list[str]:
    out = []
    for p in cmd.params:
        if getattr(p, "hidden", False) or p.name in ("help",):
            continue
        if p.param_type_name == "argument":
            name = f"`{(p.metavar or p.name).upper()}`"
        else:
            name = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
        default = "" if p.default in (None, False, ()) or p.param_type_name == "argument" else f" (default: `{p.default}`)"
        help_ = (getattr(p, "help", None) or "").replace("|", "\\|").replace("\n", " ")
        ann = getattr(getattr(p, "type_descriptor", None), "annotation", None)
        if isinstance(ann, type) and issubclass(ann, Enum):  # a choice: name them
            help_ += " (one of: " + ", ".join(f"`{c.value}`" for c in ann) + ")"
        out.append(f"| {name} | {help_}{default} |")
    return (["| argument / option | meaning |", "|---|---|"] + out + [""]) if out else []


def _walk(cmd, path: list[str], out: list[str]) -> None:
    subs = getattr(cmd, "commands", None)
    if path:
        usage = " ".join(cmd.collect_usage_pieces(_ctx(cmd, path)))
        out += [f"## `rlcustom {' '.join(path)}`", "", (cmd.help or "").strip().split("\n\n")[0], "",
                f"    rlcustom {' '.join(path)} {usage}", ""]
        out += _rows(cmd)
    for name, sub in (subs or {}).items():
        if not getattr(sub, "hidden", False):
            _walk(sub, path + [name], out)


def _ctx(cmd, path):
    import typer

    return typer.Context(cmd, info_name=" ".join(path))


def render() -> str:
    import typer

    from rlcustom.cli import app

    root = typer.main.get_command(app)
    out = ["# Command line", "",
           "Generated from the CLI's own declarations (`rlcustom/cli/`, typer) at build time. Every command",
           "prints the same with `--help`. Options may come before or after `key=value` overrides; errors are",
           "one line on stderr with exit code 2. `--verbose` (anywhere before `--`) shows library warnings and",
           "the actors' log lines; `rlcustom --install-completion` installs shell completion.", ""]
    out += ["## `rlcustom`", "", "    rlcustom [--version] [--verbose] COMMAND [ARGS]...", ""] + _rows(root)
    _walk(root, [], out)
    return "\n".join(out)
