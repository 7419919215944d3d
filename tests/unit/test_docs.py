"""The documentation: generated pages (config reference, CLI, results) and the strict site build."""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from docsgen import cli_ref, config_ref, results

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class _Example:
    plain: int = 3  # a trailing comment
    wrapped: float = field(
        default=0.5,
        metadata={"check": None},
    )  # the comment on the last line of a wrapped field
    from_meta: str = field(default="x", metadata={"help": "metadata wins"})  # not this
    bare: bool = False


def test_help_comes_from_metadata_else_the_trailing_comment():
    sec: list = []
    config_ref._section("example", _Example, sec)
    keys = {k.name: k for k in sec[0].keys}
    assert keys["plain"].help == "a trailing comment" and keys["plain"].default == "3" and keys["plain"].type == "int"
    assert keys["wrapped"].help == "the comment on the last line of a wrapped field"
    assert keys["from_meta"].help == "metadata wins" and keys["from_meta"].default == "'x'"
    assert keys["bare"].help == "" and config_ref.missing_help(sec) == ["example.bare"]


@dataclass(frozen=True)
class _Derived(_Example):
    extra: int = 1  # the subclass's own field
    plain: int = 4  # the subclass's comment wins


def test_inherited_fields_keep_their_base_class_comment():
    sec: list = []
    config_ref._section("derived", _Derived, sec)
    keys = {k.name: k for k in sec[0].keys}
    assert keys["wrapped"].help == "the comment on the last line of a wrapped field"  # written in the base only
    assert keys["plain"].help == "the subclass's comment wins" and keys["plain"].default == "4"
    assert keys["extra"].help == "the subclass's own field" and keys["from_meta"].help == "metadata wins"
    assert config_ref.missing_help(sec) == ["derived.bare"]


def test_reference_lists_every_key_of_every_section():
    from rlcustom import config as C

    secs = config_ref.sections()
    page = config_ref.render(secs)
    by_path = {s.path: s for s in secs}
    (getattr(C, "load_plugins", None) or C._ensure_trainers_imported)()
    expected = {"": C.RunConfig, "model": C.ModelConfig, "model.lora": C.LoraConfig, "data": C.DataConfig,
                "sampling": C.SamplingConfig, "optim": C.OptimConfig, "roles.ROLE": C.RoleConfig,
                "reward": C.RewardConfig, "tracking": C.TrackingConfig, "cluster": C.ClusterConfig,
                "decoder": C.DecoderConfig}
    expected.update({f"algo (trainer: {t})": cls for t, cls in C.SECTIONS.items()})
    expected.update({f"decoder (name: {n})": cls for n, cls in C.DECODER_OPTIONS.items()})  # name: in `decoder`
    assert set(expected) <= set(by_path) and {"decoder (name: vas)", "decoder (name: qadapter)"} <= set(by_path)
    for path, cls in expected.items():
        hints = __import__("typing").get_type_hints(cls)
        sections = {n for n, t in hints.items() if dataclasses.is_dataclass(t) or n in ("roles", "algo")}
        sections |= {"name"} if path.startswith("decoder (") else set()
        names = {f.name for f in dataclasses.fields(cls)} - sections  # nested sections have their own table
        assert names == {k.name for k in by_path[path].keys}, path
        for k in by_path[path].keys:  # one table row per key, with its type and default
            assert f"| `{k.name}` | {config_ref._code(k.type)} | {config_ref._code(k.default)} |" in page, (path, k.name)
    assert "| `lr` | `float` | `1e-05` |" in page and "| `engine` | `'auto'` \\| `'hf'` \\| `'vllm'` |" in page  # optim.lr's real default, read from the class


def test_every_config_key_has_help():
    missing = config_ref.missing_help()
    assert not missing, f"{len(missing)} keys without help: {', '.join(missing)}"


def test_cli_reference_lists_every_command():
    page = cli_ref.render()
    for cmd in ("train", "generate", "eval dera", "eval qadapter", "eval metrics", "submit", "jobs list",
                "jobs logs", "bench", "plot", "demo", "prepare-model"):
        assert f"## `rlcustom {cmd}`" in page, cmd
    assert "`--lams`" in page and "`--install`" in page and "(one of: `auto`, `hf`, `vllm`)" in page


def test_results_tables_are_the_json_numbers(tmp_path):
    d = {"benchmark": "x", "machine": {"date": "2026-01-02T03:04:05+00:00", "cpu_count": 2, "torch": "2.13"},
         "settings": {"model": "m", "batches": [1, 4]},
         "rows": [{"side": "a", "median_s": 1.23456, "raw_s": [1, 2]}, {"side": "b", "median_s": 0.5, "extra": None}],
         "ratios": {"a/b": 2.469}, "notes": ["n1"]}
    (tmp_path / "x.json").write_text(json.dumps(d))
    text = results.render("x", root=tmp_path)
    assert "| side | median_s | extra |" in text and "| a | 1.23 | — |" in text and "| b | 0.5 | — |" in text
    assert "| a/b | 2.47 |" in text and "| batches | 1, 4 |" in text and "- n1" in text
    assert "raw_s" not in text and "2026-01-02 03:04 UTC on 2 CPUs" in text


def test_ratios_with_spreads_over_rounds_are_one_row_each(tmp_path):
    d = {"benchmark": "y", "command": "rlcustom bench y --steps 6", "rows": [],
         "ratios": {"a/b": 2.0, "a/b spread %": 12.5, "a/b IQR %": 4.0, "a/b min": 1.8, "a/b max": 2.05, "c/d": 1.5}}
    (tmp_path / "y.json").write_text(json.dumps(d))
    text = results.render("y", root=tmp_path)
    assert "| ratio | median | spread % | IQR % | min | max |" in text
    assert "| a/b | 2 | 12.5 | 4 | 1.8 | 2.05 |" in text and "| c/d | 1.5 | — | — | — | — |" in text
    assert "Command: `rlcustom bench y --steps 6`" in text


def test_every_results_file_renders_and_every_marker_names_one():
    for name in results.names():
        assert f"`{name}`" in results.render(name)
    markers = {m for p in (ROOT / "docs").glob("**/*.md") for m in re.findall(r"<!--\s*results(?:-full)?:(\w+)",
                                                                              p.read_text())}
    assert markers and markers <= set(results.names()), markers - set(results.names())


def test_results_pages_type_no_numbers():
    """The benchmarks page holds prose and markers only: its numbers all come from the JSON files."""
    text = re.sub(r"`[^`]*`|```.*?```|\([^)]*\.md[^)]*\)", "", (ROOT / "docs" / "benchmarks.md").read_text(),
                  flags=re.S)
    assert not re.findall(r"\d+\.\d+|\d+ ?%|\b\d{2,}\b", text)


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


@pytest.mark.skipif(shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None, reason="mkdocs absent")
def test_site_builds_strict(tmp_path):
    r = subprocess.run([str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "--site-dir",
                        str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    config = (tmp_path / "site" / "configuration" / "index.html").read_text()
    assert "max_new_tokens" in config and "placement_timeout_s" in config
    assert (tmp_path / "site" / "results" / "index.html").is_file()
