"""The launcher of ``hydra/launcher=slurm`` (conf/hydra/launcher/slurm.yaml): Hydra's Submitit SLURM launcher
whose sweep waits for every job, records dead ones and cancels its jobs when interrupted.

Hydra accepts launcher classes only from the ``hydra_plugins`` package and imports every module here at
each start, so this one stays cheap: the work is in ``steering.sweep.slurm_launcher``, imported when a
sweep launches or a job starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher


class SlurmLauncher(SubmititSlurmLauncher):
    """See ``steering.sweep.slurm_launcher``."""

    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, *args: Any) -> JobReturn:
        from steering.sweep import slurm_launcher

        slurm_launcher.before_job(self, job_num)
        return super().__call__(sweep_overrides, job_dir_key, job_num, *args)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from steering.sweep import slurm_launcher

        return slurm_launcher.launch(self, job_overrides, initial_job_idx)
