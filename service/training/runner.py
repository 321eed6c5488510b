"""Run the training flow as a subprocess against the configured Metaflow store."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from service.config import metaflow_environment

FLOW_FILE = Path(__file__).with_name("flow.py")
_TAIL_LINES = 40


class TrainingFailed(RuntimeError):
    """The training flow exited with an error; the message ends with its output's tail."""


def _sample_args(sample_size: Any) -> list[str]:
    """Turn ``(users, events, interactions)`` or a mapping of those names into flow options."""
    if sample_size is None:
        return []
    if isinstance(sample_size, Mapping):
        sizes = dict(sample_size)
    else:
        sizes = dict(zip(("users", "events", "interactions"), sample_size, strict=True))
    return [arg for name, value in sizes.items()
            for arg in (f"--sample_{name}", str(int(value)))]


def _location(path: str | os.PathLike) -> str:
    """Return an s3:// URL as it is, a local path made absolute for the flow's cwd."""
    text = str(path)
    return text if text.startswith("s3://") else str(Path(text).resolve())


def command(settings: Mapping[str, Any], *, interactions: str | os.PathLike | None = None,
            items: str | os.PathLike | None = None, as_of: str | None = None,
            seed: int | None = None, sample_size: Any = None, extra_args: Sequence[str] = (),
            run_id_file: str | os.PathLike | None = None) -> tuple[list[str], dict[str, str]]:
    """Return the argv of a flow run and the Metaflow variables to add to its environment."""
    # No more tasks at once than cores: each search task's budget is its own CPU
    # time, and tasks that share a core slow each other's fits (caches), so six
    # on two cores searched fewer points than two do.
    args = [sys.executable, str(FLOW_FILE), "--no-pylint", "run",
            "--max-workers", str(os.cpu_count() or 1)]
    if interactions:
        args += ["--interactions", _location(interactions)]
    if items:
        args += ["--items", _location(items)]
    if as_of:
        args += ["--as_of", str(as_of)]
    if seed is not None:
        args += ["--seed", str(int(seed))]
    args += _sample_args(sample_size)
    if run_id_file is not None:
        args += ["--run-id-file", str(run_id_file)]
    # The flow reads its name from the environment: name it as the service reads it.
    return [*args, *extra_args], {**metaflow_environment(settings),
                                  "LINEUP_FLOW_NAME": settings["FLOW_NAME"]}


def train(settings: Mapping[str, Any], *, interactions: str | os.PathLike | None = None,
          items: str | os.PathLike | None = None, as_of: str | None = None,
          seed: int | None = None, sample_size: Any = None, extra_args: Sequence[str] = (),
          quiet: bool = True) -> str:
    """Run the training flow and return its pathspec ``<FLOW_NAME>/<run id>``.

    Without ``interactions`` the flow trains on the sample world (``as_of``
    date, ``seed``, ``sample_size`` as (users, events, interactions)). Raises
    TrainingFailed, carrying the tail of the flow's output, when the run fails.
    """
    root = Path(settings["DATASTORE_ROOT"])
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        run_id_file = Path(scratch) / "run-id"
        args, flow_env = command(settings, interactions=interactions, items=items, as_of=as_of,
                                 seed=seed, sample_size=sample_size, extra_args=extra_args,
                                 run_id_file=run_id_file)
        tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        # Run from the store's root so Metaflow never picks up a stray .metaflow elsewhere.
        with subprocess.Popen(args, cwd=root, env=os.environ | flow_env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace") as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                tail.append(line.rstrip("\n"))
                if not quiet:
                    sys.stderr.write(line)
        run_id = run_id_file.read_text().strip() if run_id_file.exists() else ""
    if proc.returncode != 0:
        where = f" (run {settings['FLOW_NAME']}/{run_id})" if run_id else ""
        raise TrainingFailed(f"training flow exited with status {proc.returncode}{where}:\n"
                             + "\n".join(tail))
    if not run_id:
        raise TrainingFailed("training flow succeeded but wrote no run id:\n" + "\n".join(tail))
    return f"{settings['FLOW_NAME']}/{run_id}"
