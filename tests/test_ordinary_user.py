"""Lineup as an ordinary account on a shared host, where another account used Metaflow first.

Metaflow's client caches blobs in ``/tmp/metaflow_client`` by default, a
folder the first account to use it owns. Lineup keeps its cache under
``LINEUP_HOME``, so the trainer and the service work under other accounts.
As root (CI), the test creates an unprivileged account and runs both as it,
from hard-linked copies of the interpreter, the packages and the project
(root's own folders are closed to other accounts); as anyone else it runs as
that account.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest
import requests

from tests import flows
from tests.server import Server

ORDINARY, OTHER = "lineup-ordinary", "lineup-other"
SHARED_CACHE = Path("/tmp/metaflow_client")  # Metaflow's default, one per host
PROJECT = Path(__file__).resolve().parent.parent


def _account(name: str) -> int:
    if subprocess.run(["id", "-u", name], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        name], check=True)
    return int(subprocess.run(["id", "-u", name], capture_output=True, text=True,
                              check=True).stdout)


def _linked_copy(source: Path, target: Path, leave_out: tuple[Path, ...] = ()) -> Path:
    """Copy a tree as hard links (the same disk), without the subtrees in ``leave_out``.

    Seconds for the whole interpreter; removing the copy costs one unlink a
    file, so what the account never reads is not copied.
    """
    if not any(source in part.parents for part in leave_out):
        subprocess.run(["cp", "-al", str(source), str(target)], check=True)
        return target
    target.mkdir()
    for entry in source.iterdir():
        if entry not in leave_out:
            _linked_copy(entry, target / entry.name, leave_out)
    return target


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """An account, a home of its own, and the python it runs Lineup with."""
    sandbox = Path(tempfile.mkdtemp(prefix="lineup-ordinary-"))
    try:
        if os.geteuid() != 0:
            yield {"user": None, "python": sys.executable, "cwd": PROJECT, "home": sandbox,
                   "env": {}}
            return
        uid = _account(ORDINARY)
        other = _account(OTHER)
        if not SHARED_CACHE.exists():  # otherwise root owns it: another account as well
            SHARED_CACHE.mkdir()
            os.chown(SHARED_CACHE, other, other)
        sandbox.chmod(0o755)
        # Not the interpreter's own packages (a venv never reads them) nor its test suite:
        # half of its files.
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        base = _linked_copy(Path(sys.base_prefix), sandbox / "python",
                            leave_out=(stdlib / "site-packages", stdlib / "test"))
        packages = _linked_copy(Path(sysconfig.get_paths()["purelib"]), sandbox / "packages")
        project = sandbox / "project"
        project.mkdir()
        for name in ("service", "sanity_tests", "tests", "wsgi.py", "gunicorn.conf.py"):
            (shutil.copytree if (PROJECT / name).is_dir() else shutil.copy)(
                PROJECT / name, project / name)
        home = sandbox / "home"
        home.mkdir()
        os.chown(home, uid, uid)
        python = base / "bin" / Path(sys.executable).name
        yield {"user": ORDINARY, "python": str(python), "cwd": project, "home": home,
               "env": {"PYTHONPATH": f"{project}:{packages}", "HOME": str(home),
                       "USER": ORDINARY, "LD_LIBRARY_PATH": str(base / "lib")}}
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)


def _as_account(host, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([host["python"], *args], env=env, cwd=host["cwd"], user=host["user"],
                          capture_output=True, text=True, timeout=300)


def test_trainer_and_service_work_as_an_ordinary_account(host):
    home = host["home"]
    env = {"PATH": os.environ["PATH"], **host["env"], "LINEUP_HOME": str(home / "lineup"),
           "METAFLOW_USER": ORDINARY}
    data = home / "data"
    interactions, items = flows.sample(data)
    if host["user"]:
        subprocess.run(["chown", "-R", ORDINARY, str(data)], check=True)

    trained = _as_account(host, "-m", "service.cli", "--json", "train",
                          "--interactions", str(interactions), "--items", str(items), env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_id = json.loads(trained.stdout)["pathspec"].split("/")[1]

    server = Server(home, {**env, "METAFLOW_USER": ORDINARY}, python=host["python"],
                    user=host["user"], cwd=host["cwd"])
    try:
        server.start()
        server.wait_for(lambda: server.get("/readyz").status_code == 200, 60, "ready")
        answer = requests.get(server.url + "/recommendations?user_id=u-000001", timeout=10)
        assert answer.status_code == 200 and answer.headers["X-Model-Run"] == run_id
    finally:
        server.stop()
    own_cache = Path(env["LINEUP_HOME"]) / "cache" / "metaflow_client"
    assert own_cache.is_dir() and any(own_cache.iterdir())
    # The client names a cache folder after the datastore's path, "/" as "_".
    ours = str(home).replace("/", "_")
    shared = [p.name for p in SHARED_CACHE.iterdir()] if SHARED_CACHE.exists() else []
    assert not [name for name in shared if ours in name], "Lineup used the host's shared cache"
