"""Everything about Beam runners in one place: which runner the options name, short aliases, the
options of the local runner, and what a runner leaves to tidy after a run.

Without `--runner` a build runs on Beam's FnApiRunner in this process (threads, or processes with
EMER_LOCAL_MODE=multi_processing): no Prism download. Any other runner is named the Beam way after
`--` on the command line (`--runner=DaskRunner --dask_client_address=...`, `--runner=PortableRunner
--job_endpoint=...`, FlinkRunner, SparkRunner, DataflowRunner).
"""

from __future__ import annotations

import os
from typing import Any

# short names Beam itself does not resolve (2.77 needs the DaskRunner's full class path)
RUNNER_ALIASES = {"DaskRunner": "apache_beam.runners.dask.dask_runner.DaskRunner"}


def names_runner(beam_args: list[str]) -> bool:
    """Whether the Beam options choose a runner (else the local one, in this process)."""
    return any(a.startswith("--runner") for a in beam_args)


def runner_named(beam_args: list[str]) -> str:
    """The runner the options name, as given (`local` without one): what the build's fingerprint records."""
    named = [a.partition("=")[2] for a in beam_args if a.startswith("--runner=")]
    return named[-1] if named else "local"


def with_aliases(beam_args: list[str]) -> list[str]:
    """`--runner=DaskRunner` works as well as Beam's full class path."""
    out = []
    for arg in beam_args:
        name, eq, value = arg.partition("=")
        out.append(f"{name}={RUNNER_ALIASES.get(value, value)}" if name == "--runner" and eq else arg)
    return out


def pipeline_options(beam_args: list[str], workers: int) -> tuple[Any, Any]:
    """(PipelineOptions, runner) for Beam; without `--runner` the local FnApiRunner with `workers` workers."""
    from apache_beam.options.pipeline_options import PipelineOptions

    if names_runner(beam_args):
        return PipelineOptions(with_aliases(beam_args)), None
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    mode = [f"--direct_running_mode={os.environ.get('EMER_LOCAL_MODE', 'multi_threading')}", f"--direct_num_workers={workers}"] if workers > 1 else ["--direct_running_mode=in_memory"]
    return PipelineOptions([*mode, *beam_args]), FnApiRunner()  # the user's options come last and win


def tidy_after(beam_args: list[str]) -> None:
    """What a runner leaves behind after a run: Beam's DaskRunner keeps its client open, which would keep
    reconnecting after the cluster stops."""
    if "dask" not in runner_named(beam_args).lower():
        return
    try:
        from distributed import default_client

        default_client().close()
    except (ImportError, ValueError):
        pass
