"""Reproduce every figure of docs/benchmarks.md in one run, and print the table.

    .venv/bin/python benchmarks/run.py            # everything, about 10-15 minutes
    .venv/bin/python benchmarks/run.py --quick    # shorter runs, 3 damaged runs, 1 round

Phases, all on 127.0.0.1, each server in its own process group and always stopped:

1. training  - two default sample runs (seeds 0 and 1) into a temporary LINEUP_HOME, timed
2. throughput - rounds of wrk, back to back: the framework floor (hello-world Flask under
               Lineup's gunicorn settings), Lineup's GET /recommendations?n=10 (unfiltered,
               then with a filter in every request), and MLflow's
               `mlflow models serve` (POST /invocations) on the same model, same worker count
3. swap      - 20 pins alternating the two runs under 16 connections of a Python load
               generator that timestamps every request; p99 in the swap windows vs steady
4. memory    - total PSS (master + workers) of 1, 2 and 4 workers after some traffic, twice
5. selection - a walk past 10 damaged runs (small world), a repeat reload with every verdict
               remembered, and gunicorn start to /readyz 200 with no decision and with one

Run by hand, never in CI. Needs `wrk` (apt-get install -y wrk) and network access to PyPI
the first time, to build the MLflow virtualenv (reused afterwards).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python benchmarks/run.py` from anywhere

from service import config, loader  # noqa: E402
from service.training import runner  # noqa: E402

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
ADMIN_TOKEN = "bench-admin-token"
MLFLOW_VERSION = "3.17.2"  # newest on PyPI with a matching mlflow-skinny when this was written
MLFLOW_VENV = Path(os.environ.get("LINEUP_BENCH_MLFLOW_VENV", "/tmp/lineup-bench-mlflow-venv"))

#: wrk's summary as one JSON line; appended to every request script.
WRK_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH {\"requests\": %d, \"duration_us\": %d, \"p50_us\": %d, \"p90_us\": %d, " ..
    "\"p99_us\": %d, \"max_us\": %d, \"mean_us\": %.1f, \"connect\": %d, \"read\": %d, " ..
    "\"write\": %d, \"status\": %d, \"timeout\": %d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write,
    e.status, e.timeout))
end
"""


def log(message: str) -> None:
    """Say what the benchmark is doing, on stderr, with a timestamp."""
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- processes ------------------------------------------------------------------


class Server:
    """One server (a gunicorn or uvicorn master and its workers) in its own process group."""

    live: list[Server] = []

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], logdir: Path,
                 cwd: Path = REPO) -> None:
        self.name, self.argv, self.env, self.cwd = name, argv, dict(env), cwd
        self.log_path = logdir / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> Server:
        """Start the server; return at once."""
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.started_at = time.monotonic()
        Server.live.append(self)
        return self

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> float:
        """Poll ``condition`` until true; return seconds since start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; log:\n{self.tail()}")
            try:
                if condition():
                    return time.monotonic() - self.started_at
            except (requests.RequestException, OSError):
                pass
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} not {what} within {timeout} s; log:\n{self.tail()}")

    def pids(self) -> list[int]:
        """Return the master's pid and those of all its descendants."""
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    todo += [int(c) for c in (task / "children").read_text().split()]
                except OSError:
                    pass
        return found

    def cpu_seconds(self) -> float:
        """Return the CPU time (user and system) the master and its workers have used."""
        ticks = 0
        for pid in self.pids():
            try:  # the fields after the command's closing parenthesis; utime, stime are 12, 13
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after 20 s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        try:  # workers left behind by a master that died first
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        if self in Server.live:
            Server.live.remove(self)

    def tail(self) -> str:
        """Return the end of the server's log."""
        return self.log_path.read_text(errors="replace")[-3000:]


def lineup_env(settings: Mapping[str, Any], port: int, workers: int,
               extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a Lineup server on ``settings`` (LINEUP_HOME and friends)."""
    return {
        **os.environ,
        "LINEUP_HOME": settings["HOME"],
        "LINEUP_DATASTORE_ROOT": settings["DATASTORE_ROOT"],
        "LINEUP_BIND": f"127.0.0.1:{port}",
        "LINEUP_WORKERS": str(workers),
        "LINEUP_ADMIN_TOKEN": ADMIN_TOKEN,
        "LINEUP_POLL_INTERVAL": "3600",
        "METAFLOW_USER": "lineup-bench",
        **(extra or {}),
    }


def lineup_server(name: str, settings: Mapping[str, Any], workers: int, logdir: Path,
                  extra: Mapping[str, str] | None = None) -> Server:
    """A Lineup gunicorn server exactly as `lineup serve` starts it."""
    port = free_port()
    server = Server(name, [PYTHON, "-m", "gunicorn", "-c", "python:service.gunicorn_conf",
                           "service:create_app()"],
                    lineup_env(settings, port, workers, extra), logdir)
    server.url = f"http://127.0.0.1:{port}"
    return server


def ready(url: str) -> bool:
    """True when /readyz answers 200."""
    return requests.get(url + "/readyz", timeout=2).status_code == 200


def admin(url: str, method: str, path: str, **kwargs: Any) -> requests.Response:
    """Call the admin API with the benchmark's token."""
    return requests.request(method, url + path, timeout=600,
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, **kwargs)


def all_workers_serve(url: str, run_id: str, workers: int) -> bool:
    """True when ``workers`` live workers report serving ``run_id``."""
    reports = admin(url, "GET", "/admin/status").json()["workers"]
    return sum(1 for w in reports if w["run_id"] == run_id) >= workers


# -- wrk ------------------------------------------------------------------------


def wrk(url: str, script: str, seconds: float, args: argparse.Namespace,
        workdir: Path) -> dict[str, Any]:
    """Run wrk for ``seconds`` against ``url`` and return its summary."""
    combined = workdir / f"wrk-{script}"
    combined.write_text((HERE / "users.lua").read_text() + (HERE / script).read_text()
                        + WRK_DONE)
    argv = ["wrk", f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{int(seconds)}s",
            "--timeout", "5s", "-s", str(combined), url]
    if args.pin_wrk is not None:
        argv = ["taskset", "-c", str(args.pin_wrk), *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                         check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH "))
    summary = json.loads(line[len("BENCH "):])
    summary["rps"] = summary["requests"] / (summary["duration_us"] / 1e6)
    summary["errors"] = sum(summary[k] for k in ("connect", "read", "write", "status",
                                                 "timeout"))
    return summary


# -- the MLflow peer ------------------------------------------------------------


def mlflow_venv() -> Path:
    """Create (once) the MLflow virtualenv with Lineup installed in it; return its bin/."""
    bin_dir = MLFLOW_VENV / "bin"
    probe = [str(bin_dir / "python"), "-c", "import mlflow, service.recommender; "
             "print(mlflow.__version__)"]
    try:
        version = subprocess.run(probe, capture_output=True, text=True, check=True,
                                 timeout=120).stdout.strip()
        log(f"reusing {MLFLOW_VENV} (mlflow {version})")
        return bin_dir
    except (OSError, subprocess.SubprocessError):
        pass
    log(f"creating {MLFLOW_VENV} with mlflow=={MLFLOW_VERSION} and Lineup (a few minutes)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(MLFLOW_VENV)], check=True)
    subprocess.run([str(bin_dir / "pip"), "install", "-q", f"mlflow=={MLFLOW_VERSION}",
                    "-e", str(REPO)], check=True, timeout=1800)
    subprocess.run(probe, check=True, timeout=120)
    return bin_dir


def mlflow_server(bin_dir: Path, model_copy: Path, workdir: Path, workers: int) -> Server:
    """Save the pyfunc wrapper of ``model_copy`` and serve it with `mlflow models serve`."""
    model_dir = workdir / "mlflow-pyfunc"
    subprocess.run([str(bin_dir / "python"), str(HERE / "mlflow_model.py"),
                    "--model", str(model_copy), "--out", str(model_dir)],
                   check=True, capture_output=True, timeout=300)
    port = free_port()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": (workdir / "mlruns").as_uri()}
    server = Server("mlflow", [str(bin_dir / "mlflow"), "models", "serve", "-m", str(model_dir),
                               "--env-manager", "local", "--workers", str(workers),
                               "-h", "127.0.0.1", "-p", str(port)], env, workdir, cwd=workdir)
    server.url = f"http://127.0.0.1:{port}"
    return server


# -- the swap phase's load generator ---------------------------------------------


def _load_process(port: int, connections: int, until: float, stop: Any, queue: Any,
                  seed: int) -> None:
    """Send GET /recommendations on ``connections`` keep-alive connections until told."""
    import random

    def one_connection(index: int, out: list) -> None:
        rng = random.Random(seed * 1000 + index)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while not stop.is_set() and time.time() < until:
            if rng.random() < 0.9:
                user = f"u-{rng.randrange(20000):06d}"
            else:
                user = f"cold-{rng.randrange(10**6)}"
            started = time.time()
            try:
                conn.request("GET", f"/recommendations?n=10&user_id={user}")
                response = conn.getresponse()
                response.read()
                status, run = response.status, response.getheader("X-Model-Run", "")
            except (OSError, http.client.HTTPException) as exc:
                status, run = 0, type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            out.append((started, time.time() - started, status, run))
        conn.close()

    results: list[list] = [[] for _ in range(connections)]
    threads = [threading.Thread(target=one_connection, args=(i, results[i]))
               for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put([row for rows in results for row in rows])


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (nearest rank) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered))) - 1))]


# -- memory ---------------------------------------------------------------------


def pss_bytes(pid: int) -> int:
    """Return a process's proportional set size from /proc/<pid>/smaps_rollup."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no Pss line for pid {pid}")


def mapping_bytes(pid: int, path: Path) -> dict[str, int]:
    """Return the resident and private bytes of one file's mappings in a process."""
    totals = {"rss": 0, "private": 0}
    inside = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header
            inside = len(fields) >= 6 and fields[5] == str(path)
        elif inside and fields[0] == "Rss:":
            totals["rss"] += int(fields[1]) * 1024
        elif inside and fields[0] in ("Private_Clean:", "Private_Dirty:"):
            totals["private"] += int(fields[1]) * 1024
    return totals


def model_array_bytes(path: Path) -> int:
    """Sum the nbytes of the numpy arrays among a model's attributes."""
    import joblib
    import numpy as np

    model = joblib.load(path, mmap_mode="r")
    return sum(v.nbytes for v in vars(model).values() if isinstance(v, np.ndarray))


# -- phases ---------------------------------------------------------------------


def phase_training(args, settings) -> dict[str, Any]:
    """Train the two default sample runs the other phases serve; time each."""
    out = {}
    for label, seed in (("a", 0), ("b", 1)):
        log(f"training default sample run {label} (seed {seed})")
        started = time.perf_counter()
        pathspec = runner.train(settings, seed=seed)
        out[label] = {"run_id": pathspec.rsplit("/", 1)[-1],
                      "seconds": time.perf_counter() - started}
        log(f"  {pathspec} in {out[label]['seconds']:.1f} s")
    return out


def phase_throughput(args, settings, runs, workdir) -> dict[str, Any]:
    """Floor, Lineup and MLflow back to back, ``--rounds`` times; return every measurement."""
    workers = args.workers
    floor_port = free_port()
    floor = Server("floor", [PYTHON, "-m", "gunicorn", "-c", "python:benchmarks.floor_conf",
                             "benchmarks.floor_app:app"],
                   lineup_env(settings, floor_port, workers,
                              {"LINEUP_HOME": str(workdir / "floor-home")}), workdir)
    floor.url = f"http://127.0.0.1:{floor_port}"
    lineup = lineup_server("lineup", settings, workers, workdir)
    out: dict[str, Any] = {"rounds": []}
    try:
        log(f"starting Lineup ({workers} workers, no decision yet) and the floor")
        lineup.start()
        out["cold_start_no_decision_s"] = lineup.wait_until(lambda: ready(lineup.url), 300,
                                                            "ready")
        status = admin(lineup.url, "GET", "/admin/status").json()
        out["serving_run"] = status["decided_run_id"]  # the worker asked may not have swapped yet
        out["first_selection_s"] = status["last_selection"]["seconds"]
        floor.start()
        floor.wait_until(lambda: requests.get(floor.url + "/recommendations").ok, 60, "up")
        peers = [("floor", floor, "recommendations.lua"),
                 ("lineup", lineup, "recommendations.lua"),
                 ("filtered", lineup, "recommendations_filtered.lua")]
        if not args.skip_mlflow:
            bin_dir = mlflow_venv()
            out["mlflow_version"] = subprocess.run(
                [str(bin_dir / "python"), "-c", "import mlflow; print(mlflow.__version__)"],
                capture_output=True, text=True, check=True).stdout.strip()
            copy = loader.shared_copy_path(settings["STATE_DIR"], out["serving_run"])
            mlflow = mlflow_server(bin_dir, copy, workdir, workers)
            log(f"starting mlflow models serve ({workers} workers)")
            mlflow.start()
            mlflow.wait_until(lambda: requests.get(mlflow.url + "/ping").ok, 180, "up")
            peers.append(("mlflow", mlflow, "invocations.lua"))
        for index in range(args.rounds):
            measured = {}
            for name, server, script in peers:
                log(f"round {index + 1}/{args.rounds}: {name}: warm-up {args.warmup:.0f} s, "
                    f"then {args.duration:.0f} s")
                wrk(server.url, script, args.warmup, args, workdir)
                cpu = server.cpu_seconds()
                measured[name] = wrk(server.url, script, args.duration, args, workdir)
                # Server CPU per request: unlike req/s, it does not move with how the
                # scheduler shares the 2 cores between wrk and the workers.
                measured[name]["cpu_us"] = ((server.cpu_seconds() - cpu) * 1e6
                                            / max(measured[name]["requests"], 1))
                log(f"  {measured[name]['rps']:.0f} req/s, p99 "
                    f"{measured[name]['p99_us'] / 1000:.1f} ms, errors {measured[name]['errors']}, "
                    f"{measured[name]['cpu_us']:.0f} µs server CPU a request")
            out["rounds"].append(measured)
    finally:
        for server in list(Server.live):
            if server is not lineup:
                server.stop()
    out["lineup_server"] = lineup
    return out


def phase_swap(args, lineup: Server, runs) -> dict[str, Any]:
    """Alternate pins between the two runs under load; compare p99 in swap windows to steady."""
    port = int(lineup.url.rsplit(":", 1)[-1])
    targets = [runs["a"]["run_id"], runs["b"]["run_id"]]
    # Judge both runs before the load starts: the checks include a latency check, which a
    # machine saturated on purpose can fail. Under load, each pin then reuses the verdict.
    for run_id in targets:
        response = admin(lineup.url, "POST", "/admin/pin", json={"run_id": run_id})
        if response.status_code != 200:
            raise RuntimeError(f"pin {run_id}: {response.status_code} {response.text[:500]}")
    steady_s = args.swap_steady
    until = time.time() + steady_s + args.swaps * 60 + 60  # a bound, never reached normally
    context = multiprocessing.get_context("fork")
    queue: Any = context.Queue()
    stop = context.Event()
    per_process = args.connections // args.swap_processes
    procs = [context.Process(target=_load_process,
                             args=(port, per_process, until, stop, queue, i), daemon=True)
             for i in range(args.swap_processes)]
    for proc in procs:
        proc.start()
    windows: list[tuple[float, float]] = []
    try:
        time.sleep(1.0)  # connections up
        steady = (time.time(), time.time() + steady_s)
        log(f"swap: {steady_s:.0f} s steady, then {args.swaps} pins")
        time.sleep(steady_s)
        for index in range(args.swaps):
            run_id = targets[index % 2]
            began = time.time()
            response = admin(lineup.url, "POST", "/admin/pin", json={"run_id": run_id})
            if response.status_code != 200:
                raise RuntimeError(f"pin {run_id}: {response.status_code} "
                                   f"{response.text[:500]}")
            deadline = time.monotonic() + 60
            while not all_workers_serve(lineup.url, run_id, args.workers):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"workers did not all serve {run_id} within 60 s")
                time.sleep(0.05)
            ended = time.time() + 0.5
            windows.append((began, ended))
            time.sleep(max(0.0, ended - time.time()) + 1.0)
        admin(lineup.url, "POST", "/admin/unpin")
    finally:
        stop_at = time.time()
        stop.set()
        rows: list = []
        for _ in procs:  # drain before joining: a full pipe would block the children
            try:
                rows += queue.get(timeout=30)
            except Exception:  # noqa: BLE001 - a generator that died; its rows are lost
                log("swap: a load generator sent no results")
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    rows = [r for r in rows if r[0] <= stop_at]
    steady_rows = [r for r in rows if steady[0] <= r[0] < steady[1]]
    in_window = [r for r in rows if any(a <= r[0] <= b for a, b in windows)]
    failed = [r for r in rows if r[2] != 200]
    return {
        "swaps": len(windows),
        "requests": len(rows),
        "failed": len(failed),
        "failed_examples": failed[:5],
        "window_mean_s": statistics.mean(b - a for a, b in windows) if windows else None,
        "steady_requests": len(steady_rows),
        "steady_rps": len(steady_rows) / steady_s,
        "steady_p50_ms": percentile([r[1] for r in steady_rows], 50) * 1000,
        "steady_p99_ms": percentile([r[1] for r in steady_rows], 99) * 1000,
        "window_requests": len(in_window),
        "window_p50_ms": percentile([r[1] for r in in_window], 50) * 1000,
        "window_p99_ms": percentile([r[1] for r in in_window], 99) * 1000,
        "runs_seen": sorted({r[3] for r in rows}),
    }


def _wait_all_workers(server: Server, workers: int) -> None:
    run_id = requests.get(server.url + "/readyz", timeout=5).json()["run_id"]
    server.wait_until(lambda: all_workers_serve(server.url, run_id, workers), 60,
                      f"served by {workers} workers")


MEMORY_WORKERS = (1, 2, 4)
#: Each size is measured this many times: single readings of one size have
#: differed by up to 10 MiB between runs (which worker took the traffic, when
#: a collection ran).
MEMORY_ATTEMPTS = 2


def phase_memory(args, settings, workdir) -> dict[str, Any]:
    """Total PSS of 1, 2 and 4 workers after some traffic (each twice), and the restart."""
    out: dict[str, Any] = {"workers": {w: {"pss_each": []} for w in MEMORY_WORKERS}}
    for attempt in range(MEMORY_ATTEMPTS):  # sizes interleaved: each attempt sees one machine
        for workers in MEMORY_WORKERS:
            server = lineup_server(f"lineup-{workers}w-{attempt}", settings, workers, workdir)
            try:
                server.start()
                seconds = server.wait_until(lambda: ready(server.url), 120, "ready")
                if workers == args.workers and attempt == 0:
                    out["cold_start_with_decision_s"] = seconds
                _wait_all_workers(server, workers)
                wrk(server.url, "recommendations.lua", args.memory_traffic, args, workdir)
                time.sleep(0.5)
                pids = server.pids()
                total = sum(pss_bytes(pid) for pid in pids)
                entry = out["workers"][workers]
                entry["pss_each"].append(total)
                entry["processes"] = len(pids)
                log(f"memory: {workers} worker(s): {len(pids)} processes, "
                    f"PSS {total / 2**20:.1f} MiB")
                run_id = requests.get(server.url + "/readyz", timeout=5).json()["run_id"]
                copy = loader.shared_copy_path(settings["STATE_DIR"], run_id)
                # The arrays are shared when each worker maps the file but owns none of its pages.
                entry["model_mapping"] = [
                    mapping_bytes(pid, copy) for pid in pids if pid != server.process.pid]
            finally:
                server.stop()
    out["model_array_bytes"] = model_array_bytes(copy)
    out["model_file_bytes"] = copy.stat().st_size
    for entry in out["workers"].values():
        entry["pss_bytes"] = sum(entry["pss_each"]) / len(entry["pss_each"])
    pss = {w: v["pss_bytes"] for w, v in out["workers"].items()}
    out["per_added_worker_bytes"] = (pss[4] - pss[1]) / 3
    out["per_added_worker_1_to_2_bytes"] = pss[2] - pss[1]
    return out


def phase_selection(args, workdir) -> dict[str, Any]:
    """A walk past ``--damaged`` rejected runs, a remembered reload, and cold starts."""
    from tests import flows

    home = workdir / "selection-home"
    settings = config.load({"LINEUP_HOME": str(home), "METAFLOW_USER": "lineup-bench"})
    data = flows.sample(home / "data", seed=0)
    log(f"selection: training 1 good and {args.damaged} damaged small-world runs")
    started = time.perf_counter()
    good = flows.good_run(settings, data)
    damaged = []
    for index in range(args.damaged):
        broken = flows.damage(data[0], home / f"damaged-{index}.csv", seed=index)
        damaged.append(runner.train(settings, interactions=str(broken),
                                    items=str(data[1])).rsplit("/", 1)[-1])
    out: dict[str, Any] = {"training_s": time.perf_counter() - started, "good": good,
                           "damaged": len(damaged)}
    extra = {"LINEUP_MAX_WALKBACK": str(args.damaged + 1)}
    server = lineup_server("selection", settings, args.workers, workdir, extra)
    try:
        server.start()
        out["cold_start_no_decision_s"] = server.wait_until(lambda: ready(server.url), 600,
                                                            "ready")
        last = admin(server.url, "GET", "/admin/status").json()["last_selection"]
        verdicts = [c["verdict"] for c in last["candidates"]]
        out["walk_s"] = last["seconds"]
        out["walk_candidates"] = len(verdicts)
        out["walk_rejected"] = verdicts.count("rejected")
        out["walk_rejected_by"] = sorted({check for c in last["candidates"]
                                          for check in c.get("failed_checks") or []})
        out["walk_served"] = last["after"]
        began = time.perf_counter()
        reload = admin(server.url, "POST", "/admin/reload").json()
        out["remembered_reload_client_s"] = time.perf_counter() - began
        out["remembered_reload_s"] = reload["seconds"]
        out["remembered_all"] = all(c.get("remembered") for c in reload["candidates"])
    finally:
        server.stop()
    server = lineup_server("selection-restart", settings, args.workers, workdir, extra)
    try:
        server.start()
        out["cold_start_with_decision_s"] = server.wait_until(lambda: ready(server.url), 600,
                                                              "ready")
    finally:
        server.stop()
    return out


# -- report ---------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Describe the machine the figures come from."""
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) * 1024 for line in
               Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    from importlib.metadata import version

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "flask": version("flask"), "gunicorn": version("gunicorn"),
            "wrk": (wrk_version.split() or ["?", "?"])[1], "loadavg_start": os.getloadavg()}


def median(values: list[float]) -> float:
    """Return the median, or nan for no values."""
    return statistics.median(values) if values else float("nan")


def summarise(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Turn the results into (figure, value, target) rows."""
    rows: list[tuple[str, str, str]] = []
    t = results.get("throughput")
    if t and t["rounds"]:
        rounds = t["rounds"]
        rps = {name: [r[name]["rps"] for r in rounds] for name in rounds[0]}
        p99 = {name: [r[name]["p99_us"] / 1000 for r in rounds] for name in rounds[0]}
        err = {name: sum(r[name]["errors"] for r in rounds) for name in rounds[0]}
        for name, label in (("floor", "floor: hello-world Flask, Lineup's gunicorn settings"),
                            ("lineup", "Lineup: GET /recommendations?n=10"),
                            ("filtered", "Lineup, a city (category, window) filter in "
                                         "every request"),
                            ("mlflow", f"MLflow {t.get('mlflow_version', '')} models serve: "
                                       "POST /invocations")):
            if name in rps:
                rows.append((f"{label}, req/s (median of {len(rounds)})",
                             f"{median(rps[name]):,.0f}  "
                             f"[{', '.join(f'{v:,.0f}' for v in rps[name])}]", ""))
                rows.append((f"{label}, p50 / p99 ms",
                             f"{median([r[name]['p50_us'] / 1000 for r in rounds]):.1f} / "
                             f"{median(p99[name]):.1f}  errors {err[name]}",
                             "p99 < 15 ms" if name == "lineup" else ""))
        ratio_floor = [r["lineup"]["rps"] / r["floor"]["rps"] for r in rounds]
        rows.append(("Lineup / floor (per round, median)",
                     f"{median(ratio_floor):.0%}  "
                     f"[{', '.join(f'{v:.0%}' for v in ratio_floor)}]", ">= 60%"))
        ratio_filtered = [r["filtered"]["rps"] / r["floor"]["rps"] for r in rounds]
        rows.append(("Lineup filtered / floor (per round, median)",
                     f"{median(ratio_filtered):.0%}  "
                     f"[{', '.join(f'{v:.0%}' for v in ratio_filtered)}]",
                     "at most 5 points below Lineup / floor"))
        peers = ("floor", "lineup", "filtered")
        if all("cpu_us" in r[name] for r in rounds for name in peers):
            cpu = {name: [r[name]["cpu_us"] for r in rounds] for name in peers}
            rows.append(("server CPU a request, µs: floor / Lineup / filtered (medians)",
                         " / ".join(f"{median(cpu[name]):.0f}" for name in peers), ""))
            # Lineup / floor as the CPU each request costs, with and without the filter.
            points = [100 * (f / p - f / q) for f, p, q in zip(*cpu.values())]
            rows.append(("the filter's cost by server CPU, points of Lineup / floor "
                         "(per round, median)",
                         f"{median(points):.1f}  [{', '.join(f'{v:.1f}' for v in points)}]",
                         "at most 5"))
        if "mlflow" in rps:
            ratio_ml = [r["lineup"]["rps"] / r["mlflow"]["rps"] for r in rounds]
            rows.append(("Lineup / MLflow (per round, median)",
                         f"{median(ratio_ml):.1f}x  "
                         f"[{', '.join(f'{v:.1f}x' for v in ratio_ml)}]", ">= 8x"))
        rows.append(("cold start, default model, no decision (start -> /readyz 200)",
                     f"{t['cold_start_no_decision_s']:.1f} s "
                     f"(selection {t['first_selection_s']:.1f} s)", ""))
    s = results.get("swap")
    if s:
        rows.append((f"swap: {s['swaps']} pins alternating 2 runs, {s['requests']:,} requests",
                     f"{s['failed']} failed", "0 failed"))
        rows.append(("swap: p99 steady -> in swap windows (ms)",
                     f"{s['steady_p99_ms']:.1f} -> {s['window_p99_ms']:.1f} "
                     f"({s['window_p99_ms'] / s['steady_p99_ms']:.1f}x; "
                     f"windows {s['window_mean_s']:.2f} s on average)", "<= 3x"))
    m = results.get("memory")
    if m:
        for workers, v in m["workers"].items():
            each = ", ".join(f"{pss / 2**20:.1f}" for pss in v["pss_each"])
            rows.append((f"memory: total PSS, {workers} worker(s) + master (mean of runs)",
                         f"{v['pss_bytes'] / 2**20:.1f} MiB  [{each}]", ""))
        arrays = m["model_array_bytes"]
        rows.append(("memory: model arrays (sum of nbytes)", f"{arrays / 2**20:.1f} MiB", ""))
        mapped = m["workers"][max(m["workers"])].get("model_mapping", [])
        if mapped:
            rows.append((f"memory: the model file in each of {len(mapped)} workers, "
                         "resident / private",
                         ", ".join(f"{v['rss'] / 2**20:.1f} / {v['private'] / 2**20:.1f} MiB"
                                   for v in mapped), ""))
        rows.append(("memory: each added worker (1 -> 4, per worker)",
                     f"{m['per_added_worker_bytes'] / 2**20:.1f} MiB = "
                     f"{m['per_added_worker_bytes'] / arrays:.0%} of the arrays",
                     "< 30% of arrays"))
        rows.append(("cold start, default model, with a decision",
                     f"{m['cold_start_with_decision_s']:.1f} s", ""))
    sel = results.get("selection")
    if sel:
        rows.append((f"selection: walk past {sel['walk_rejected']} rejected runs to a good one "
                     f"({sel['walk_candidates']} candidates)", f"{sel['walk_s']:.1f} s", ""))
        rows.append(("selection: repeat reload, every verdict remembered",
                     f"{sel['remembered_reload_s']:.3f} s "
                     f"(client {sel['remembered_reload_client_s']:.3f} s)",
                     "< 1 s"))
        rows.append(("cold start, small world, no decision (includes the walk)",
                     f"{sel['cold_start_no_decision_s']:.1f} s", ""))
        rows.append(("cold start, small world, with a decision",
                     f"{sel['cold_start_with_decision_s']:.1f} s", ""))
    tr = results.get("training")
    if tr:
        rows.append(("training: one flow run, default sample (runner.train wall time)",
                     " / ".join(f"{v['seconds']:.1f} s" for v in tr.values()), ""))
    return rows


def print_table(rows: list[tuple[str, str, str]]) -> None:
    """Print the figures as a Markdown table."""
    print("| figure | measured | target |")
    print("| --- | --- | --- |")
    for figure, value, target in rows:
        print(f"| {figure} | {value} | {target} |")


def main(argv: list[str] | None = None) -> int:
    """Run every phase, print the table, and always stop every server."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="5 s runs, 1 round, 3 damaged runs, 6 swaps: a smoke test")
    parser.add_argument("--duration", type=float, default=15, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of warm-up before each")
    parser.add_argument("--rounds", type=int, default=3,
                        help="floor/Lineup/MLflow rounds, back to back")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--pin-wrk", default="1",
                        help="CPU to pin wrk to with taskset ('' for no pinning)")
    parser.add_argument("--workers", type=int, default=2, help="workers of every server")
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--swap-steady", type=float, default=15)
    parser.add_argument("--swap-processes", type=int, default=2)
    parser.add_argument("--memory-traffic", type=float, default=5)
    parser.add_argument("--damaged", type=int, default=10)
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--phases", default="throughput,swap,memory,selection",
                        help="comma-separated subset of throughput,swap,memory,selection")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.rounds = 5, 2, 1
        args.swaps, args.swap_steady, args.damaged, args.memory_traffic = 6, 5, 3, 2
    args.pin_wrk = args.pin_wrk or None
    phases = set(args.phases.split(","))
    if "throughput" not in phases:
        args.rounds = 0  # the swap phase still needs the Lineup server it starts
    if shutil.which("wrk") is None:
        print("wrk is not installed; on Debian: apt-get update && apt-get install -y wrk",
              file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="lineup-bench-"))
    settings = config.load({"LINEUP_HOME": str(workdir / "home"),
                            "METAFLOW_USER": "lineup-bench"})
    results: dict[str, Any] = {"machine": machine(), "args": vars(args) | {"json": None}}
    log(f"working in {workdir}")
    lineup = None
    try:
        results["training"] = phase_training(args, settings)
        if "throughput" in phases or "swap" in phases:
            results["throughput"] = phase_throughput(args, settings, results["training"],
                                                     workdir)
            lineup = results["throughput"].pop("lineup_server")
        if "swap" in phases:
            results["swap"] = phase_swap(args, lineup, results["training"])
        if lineup is not None:
            lineup.stop()
        if "memory" in phases:
            results["memory"] = phase_memory(args, settings, workdir)
        if "selection" in phases:
            results["selection"] = phase_selection(args, workdir)
    finally:
        for server in list(Server.live):
            server.stop()
        results["machine"]["loadavg_end"] = os.getloadavg()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
    m = results["machine"]
    print(f"\n{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}, "
          f"gunicorn {m['gunicorn']}, Flask {m['flask']}, wrk {m['wrk']}; load average "
          f"{m['loadavg_start'][0]:.1f} at start, {m['loadavg_end'][0]:.1f} at the end\n"
          f"{args.connections} connections, wrk -t{args.wrk_threads} pinned to CPU "
          f"{args.pin_wrk}, {args.duration:.0f} s after {args.warmup:.0f} s warm-up\n")
    print_table(summarise(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
