"""The RecBole peer's own virtualenv (never a dependency of clip4rec): created once, reused by stamp.

RecBole 1.2.1 declares ray, plotly, hyperopt-era extras and loose pins that would drag a CUDA torch and
ray into the environment. We install it with --no-deps and list exactly what its non-quick-start import
path needs (checked by importing it at the end): torch (the CPU wheel), numpy<2, scipy, pandas, tqdm,
colorlog/colorama (its logger), scikit-learn (its metrics module), pyyaml, tensorboard (imported by
recbole.utils), thop, tabulate, texttable, psutil. pandas stays below 3: RecBole 1.2.1 predates
pandas 3's copy-on-write default. ray is not installed: the worker never imports recbole.quick_start.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = ROOT / ".peer-venv"
TORCH = "torch==2.13.0"
PINNED = ["recbole==1.2.1"]
DEPS = ["numpy<2", "scipy", "pandas<3", "tqdm", "colorlog==4.7.2", "colorama==0.4.4", "scikit-learn",
        "pyyaml", "tensorboard", "thop", "tabulate", "texttable", "psutil"]
STAMP_NAME = ".peer-installed"
WHEELS = Path("/opt/wheels")


def stamp_text() -> str:
    return "\n".join([TORCH, *PINNED, *DEPS]) + "\n"


def venv_python(venv: Path = DEFAULT_VENV) -> Path:
    return venv / "bin" / "python"


def ensure_venv(venv: Path = DEFAULT_VENV, python: str = "python3.11", log=print) -> Path:
    """Create (or reuse) the peer venv; returns its python. Idempotent: a stamp records what was installed."""
    stamp = venv / STAMP_NAME
    py = venv_python(venv)
    if stamp.exists() and stamp.read_text() == stamp_text() and py.exists():
        return py
    log(f"creating the RecBole peer venv at {venv} (a few minutes, once)")
    if not py.exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
    # The CPU torch wheel lies in /opt/wheels on our machines; PyPI's default torch is a multi-GB CUDA build.
    links = ["--find-links", str(WHEELS)] if WHEELS.is_dir() else []
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", *links]
    subprocess.run([*pip, "--upgrade", "pip", "setuptools", "wheel"], check=True)
    subprocess.run([*pip, TORCH], check=True)
    subprocess.run([*pip, *DEPS, TORCH], check=True)  # torch repeated: a dependency may not move it
    subprocess.run([*pip, "--no-deps", *PINNED], check=True)
    check = ("import torch, recbole, recbole.config, recbole.data, recbole.utils, recbole.trainer; "
             "import importlib.metadata as m; "
             "cuda = [d.metadata['Name'] for d in m.distributions() if d.metadata['Name'].startswith('nvidia')]; "
             "assert not cuda, f'CUDA packages crept in: {cuda}'; "
             "print('recbole', recbole.__version__, 'torch', torch.__version__)")
    out = subprocess.run([str(py), "-c", check], check=True, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    log(out.stdout.strip())
    stamp.write_text(stamp_text())
    return py


if __name__ == "__main__":
    print(ensure_venv(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_VENV))
