"""Build hook: the wheel carries the repository's ``conf/`` and ``experiments/`` as ``steering/conf``.

Everything else is in ``pyproject.toml``. The repository keeps its configs at the top level
(``conf/``, with ``conf/experiment`` a link to ``experiments/``); an installed package finds the
copy through ``steering.config.config_dir()``. Editable installs read ``conf/`` in place.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithConfigs(build_py):
    """``build_py`` that also copies the configs and presets into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "steering" / "conf"
        shutil.rmtree(target, ignore_errors=True)
        # conf/experiment is a symbolic link to ../experiments: copy the presets themselves.
        shutil.copytree(ROOT / "conf", target, ignore=shutil.ignore_patterns("experiment", "__pycache__"))
        shutil.copytree(ROOT / "experiments", target / "experiment", ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildPyWithConfigs})
