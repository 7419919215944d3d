"""Built-ins register through one plugin import; a plugin that fails to import is loud, not 'key algo is not used'."""
import sys

import pytest

from rlcustom.config import plugins
from rlcustom.config import load_config


def test_a_failing_plugin_import_raises_its_own_error(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin.py").write_text("import not_a_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "PLUGINS", ("broken_plugin",))
    monkeypatch.setattr(plugins, "_loaded", False)
    with pytest.raises(ModuleNotFoundError, match="not_a_module_xyz"):
        load_config(None, ["trainer=my_new_trainer", "algo.x=1"])
    sys.modules.pop("broken_plugin", None)


def test_builtin_sections_come_from_the_builtins_plugin(monkeypatch):
    monkeypatch.setattr(plugins, "_loaded", False)
    cfg = load_config(None, ["trainer=ppo", "algo.clip_eps=0.1"])
    assert type(cfg.algo).__name__ == "PPOConfig" and cfg.algo.clip_eps == 0.1
    assert "rlcustom.builtins" in sys.modules
