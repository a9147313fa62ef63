"""Build step of the wheel: copy configs/ and deploy/ into the package.

They stay at the top of the checkout (the README and the docs point there); the wheel
carries them as ``fluoden_batch/_shipped/{configs,deploy}``, where
:mod:`fluoden_batch.resources` finds them once installed. Everything else is declared in
pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithShippedFiles(build_py):
    """``build_py`` that also copies the example configs and deploy profiles."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's own folders
            return
        for name in ("configs", "deploy"):
            target = Path(self.build_lib) / "fluoden_batch" / "_shipped" / name
            shutil.copytree(ROOT / name, target, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithShippedFiles})
