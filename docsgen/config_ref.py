"""The configuration reference, generated from the config classes (rlcustom/config/, each trainer's
``algo:`` section registered with ``register_section`` and each decoder's ``decoder:`` keys registered with
``register_decoder``).

For every key: its type, its default and its help. The help is the field's metadata (``help`` or ``doc``;
a pydantic ``Field(description=...)``) if present, else the trailing ``# comment`` on the field's line(s)
in the source: one source of truth, read here, never copied.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import typing
from dataclasses import dataclass
from typing import Any, Iterator

__all__ = ["Key", "Section", "sections", "field_comments", "render", "missing_help"]


@dataclass(frozen=True)
class Key:
    name: str
    type: str
    default: str
    help: str


@dataclass(frozen=True)
class Section:
    path: str  # "" (top level), "model.lora", "roles.ROLE", "algo (trainer: ppo)", "decoder (name: vas)"
    cls: type
    keys: tuple[Key, ...]
    doc: str = ""


def field_comments(cls: type) -> dict[str, str]:
    """``{field: its trailing comment}`` from the class body's source (comments on any line of the field),
    and from its dataclass bases' for inherited fields (a subclass's own comment wins)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is cls or dataclasses.is_dataclass(klass):
            out.update(_own_field_comments(klass))
    return out


def _own_field_comments(cls: type) -> dict[str, str]:
    """``{field: its trailing comment}`` for the fields written in ``cls``'s own class body."""
    try:
        src = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    spans = {}
    for node in ast.parse(src).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            spans[node.target.id] = (node.lineno, node.end_lineno or node.lineno)
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            line = src.splitlines()[tok.start[0] - 1]
            if line[: tok.start[1]].strip():  # trailing: code before it on the line
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
    out = {}
    for name, (a, b) in spans.items():
        text = " ".join(comments[i] for i in range(a, b + 1) if i in comments)
        if text:
            out[name] = text
    return out


def _type_name(tp: Any) -> str:
    if isinstance(tp, str):
        return tp
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]" if args else name
    if tp is typing.Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _default(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_default(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    return repr(value) if isinstance(value, str) else str(value)


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and (dataclasses.is_dataclass(tp) or hasattr(tp, "model_fields"))


def _fields(cls: type) -> Iterator[tuple[str, Any, Any, str]]:
    """(name, type, default, metadata help) of a dataclass or a pydantic model."""
    hints = typing.get_type_hints(cls)
    if hasattr(cls, "model_fields"):  # pydantic
        for name, f in cls.model_fields.items():
            default = f.get_default(call_default_factory=True)
            yield name, hints.get(name, f.annotation), default, f.description or ""
        return
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        meta = f.metadata or {}
        yield f.name, hints.get(f.name, f.type), default, str(meta.get("help") or meta.get("doc") or "")


def _range(cls: type, name: str) -> str:
    """`` (> 0)`` for a dataclass field with bounds in its metadata (what pydantic enforces), else ``""``."""
    from rlcustom.config.validation import bounds_text

    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    meta = fields[name].metadata if name in fields else {}
    return f" (must be {bounds_text(meta)})" if any(k in meta for k in ("gt", "ge", "lt", "le")) else ""


def _section(path: str, cls: type, out: list[Section], skip: tuple[str, ...] = ()) -> None:
    comments = field_comments(cls)
    keys, nested = [], []
    for name, tp, default, help_ in _fields(cls):
        if name in skip:
            continue
        sub = f"{path}.{name}" if path else name
        if _is_section(tp):
            nested.append((sub, tp))
            continue
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) == 1 and _is_section(inner[0]):  # optional section (model.lora): a key, and its keys
            nested.append((sub, inner[0]))
        args = typing.get_args(tp)
        if typing.get_origin(tp) is dict and len(args) == 2 and _is_section(args[1]):  # roles: {ROLE: RoleConfig}
            nested.append((f"{path}.{name}.ROLE" if path else f"{name}.ROLE", args[1]))
            continue
        if name == "algo" and not path:
            continue  # typed per trainer: its own sections below
        shown = "required" if default is dataclasses.MISSING else _default(default)
        text = help_ or comments.get(name, "")
        keys.append(Key(name, _type_name(tp), shown, text + _range(cls, name) if text else ""))
    doc = inspect.getdoc(cls) or ""
    if doc.startswith(cls.__name__ + "("):  # dataclasses' generated signature is not documentation
        doc = ""
    out.append(Section(path, cls, tuple(keys), doc.split("\n\n")[0]))
    for p, c in nested:
        _section(p, c, out)


def sections() -> list[Section]:
    """Every section of a run config: the top level, its nested sections, ``algo`` per trainer, then the keys of
    each decoder (besides ``decoder.name``, in the ``decoder`` section)."""
    from rlcustom import config as C

    # the trainers register their algo: sections on import (load_plugins after the config package split)
    (getattr(C, "load_plugins", None) or C._ensure_trainers_imported)()
    out: list[Section] = []
    _section("", C.RunConfig, out)
    for trainer, cls in sorted(C.SECTIONS.items()):
        _section(f"algo (trainer: {trainer})", cls, out)
    for name, cls in sorted(C.DECODER_OPTIONS.items()):
        _section(f"decoder (name: {name})", cls, out, skip=("name",))
    return out


def missing_help(secs: list[Section] | None = None) -> list[str]:
    """``section.key`` of every key without help."""
    return [f"{s.path + '.' if s.path else ''}{k.name}" for s in (secs or sections()) for k in s.keys if not k.help]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(secs: list[Section] | None = None) -> str:
    """The Markdown page."""
    secs = secs or sections()
    lines = [
        "# Configuration reference",
        "",
        "Generated from the config classes at build time (`docsgen/config_ref.py`): every key of every section",
        "with its type, default and help. A run config is YAML; any key can be overridden on the command line",
        "as `section.key=value` (e.g. `sampling.temperature=0.7`). An unknown key, a wrong type or an",
        "out-of-range value stops with one line naming the file or override, the key and what was expected.",
        "",
        "pydantic checks a config against these classes in strict mode: no silent casts (`'3'`, `true` and",
        "`2.5` are not integers; `1` is a number), a list for a list key, a mapping for a section (null: its defaults), and the",
        "range after a key's help (\"must be > 0\"). Numbers are read as YAML 1.2 reads them (`1e-3` is a number).",
        "",
        "Sections: " + ", ".join(f"[`{s.path or 'top level'}`](#{_anchor(s.path)})" for s in secs),
        "",
    ]
    for s in secs:
        title = s.path or "top level"
        lines += [f"## `{title}` {{#{_anchor(s.path)}}}", ""]
        if s.doc:
            lines += [s.doc, ""]
        lines += [f"Class: `{s.cls.__module__}.{s.cls.__qualname__}`", "",
                  "| key | type | default | help |", "|---|---|---|---|"]
        for k in s.keys:
            lines.append(f"| `{k.name}` | {_code(k.type)} | {_code(k.default)} | {_cell(k.help) or '—'} |")
        lines.append("")
    return "\n".join(lines)


def _code(text: str) -> str:
    """``a | b`` as `a` \\| `b`: a pipe inside a code span would show its escape in a table."""
    return " \\| ".join(f"`{part}`" for part in text.split(" | "))


def _anchor(path: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", (path or "top-level").lower()).strip("-")
