"""The built wheel (not the editable checkout) imports rlcustom and its actors in a clean venv.

The venv is new and empty; it sees the already-installed third-party packages
through a .pth line (installing torch/vLLM again would take minutes), but not
the editable rlcustom: the import must come from the wheel's files.
"""
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_installs_and_imports(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = dist.glob("rlcustom-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "rlcustom/actors/rollout.py" in names and "rlcustom/actors/learner.py" in names
    assert "rlcustom/cli/root.py" in names and "rlcustom/console.py" in names  # the CLI package ships
    assert any(n.startswith("rlcustom/data/hh_rlhf/") and n.endswith(".jsonl.gz") for n in names)
    assert not any(n.startswith(("tests/", "actors/")) for n in names)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # third-party packages from the project venv, without its editable rlcustom finder (.pth files there aren't run)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site),
                    str(wheel)], check=True, capture_output=True)
    code = ("import rlcustom, rlcustom.actors.rollout, rlcustom.actors.base, rlcustom.data;"
            "from rlcustom.data import load_preference_pairs;"
            "import pathlib; print(pathlib.Path(rlcustom.__file__).parent);"
            "print(len(load_preference_pairs('hh-rlhf', split='all')))")
    out = subprocess.run([str(py), "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path).stdout.split()
    assert Path(out[0]).is_relative_to(site), f"imported from {out[0]}, not the wheel"
    assert int(out[1]) == 2312
