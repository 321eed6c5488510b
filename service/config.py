"""Read Lineup's configuration from the environment, in this one place.

Every value has a default, so the service, the trainer and the command-line
tool all start on the embedded default: a local Metaflow datastore under
``LINEUP_HOME``. Nothing else in Lineup reads ``os.environ``; the Flask app,
gunicorn, the CLI and the sanity suite all call :func:`load`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service.contract import FLOW_NAME

#: Largest ``n`` a caller may ask for; part of the API contract, not tunable.
MAX_RECOMMENDATIONS = 100

#: Requests a client may send on one keep-alive connection before gunicorn
#: closes it (see gunicorn_conf.pre_request).
KEEPALIVE_REQUESTS = 100


def _str(environ: Mapping[str, str], name: str, default: str) -> str:
    value = environ.get(name, "").strip()
    return value or default


def _number(environ: Mapping[str, str], name: str, default: float, kind: type, what: str):
    raw = environ.get(name, "").strip()
    try:
        return kind(raw) if raw else default
    except ValueError as exc:
        raise ValueError(f"{name} must be {what}, got {raw!r}") from exc


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    return _number(environ, name, default, int, "an integer")


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    return _number(environ, name, default, float, "a number")


def _choice(environ: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = _str(environ, name, choices[0]).lower()
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _path(text: str) -> Path:
    # Absolute but not resolved: a symlinked store is followed at each access,
    # so an operator can move it away and back.
    return Path(os.path.abspath(Path(text).expanduser()))


def _decision_root(env: Mapping[str, str], metadata: str, datastore: str, state: str) -> str:
    """Where the decision lives: beside the runs whenever instances share them."""
    explicit = env.get("LINEUP_DECISION_ROOT", "").strip()
    if explicit:
        return explicit.rstrip("/") if explicit.startswith("s3://") else str(_path(explicit))
    if metadata == "local":
        return str(Path(datastore) / ".lineup")
    sysroot = env.get("METAFLOW_DATASTORE_SYSROOT_S3", "").strip().rstrip("/")
    # Metaflow's settings without an S3 root: nothing known to be shared.
    return f"{sysroot}/.lineup" if sysroot else state


def _instance_id(bind: str) -> str:
    # A pod's host name is its own; instances on one host differ by port.
    return f"{socket.gethostname()}-{bind.rsplit(':', 1)[-1]}"


def load(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return the settings as a flat mapping of upper-case keys, Flask style."""
    env = os.environ if environ is None else environ
    home = _path(_str(env, "LINEUP_HOME", str(Path.home() / ".lineup")))
    metadata = _choice(env, "LINEUP_METADATA", ("local", "service"))
    datastore = str(_path(_str(env, "LINEUP_DATASTORE_ROOT", str(home / "metaflow"))))
    state = str(_path(_str(env, "LINEUP_STATE_DIR", str(home / "state"))))
    bind = _str(env, "LINEUP_BIND", "127.0.0.1:8000")
    return {
        "HOME": str(home),
        # Where the trainer and the service find Metaflow runs (the parent of
        # ``.metaflow``). Artifacts record this absolute path, so both sides
        # must see the store at the same path.
        "DATASTORE_ROOT": datastore,
        # Instance-local: the shared copies of models, worker reports, and a
        # cache of the decision; its loss costs a reload.
        "STATE_DIR": state,
        # The fleet's one decision (serving run, pin, verdicts) and selection
        # lease: a folder or an s3:// URL beside the runs. Equal to STATE_DIR,
        # the decision is this instance's own, as before fleets.
        "DECISION_ROOT": _decision_root(env, metadata, datastore, state),
        # How this instance names itself in the fleet's status.
        "INSTANCE_ID": _str(env, "LINEUP_INSTANCE_ID", _instance_id(bind)),
        # A selection lease not renewed for this long is taken over.
        "LEASE_SECONDS": _float(env, "LINEUP_LEASE_SECONDS", 30.0),
        # Clock difference between hosts that must never make a live lease look stale.
        "CLOCK_SKEW": _float(env, "LINEUP_CLOCK_SKEW", 5.0),
        # Metaflow's own S3 endpoint setting (a local S3 or a VPC endpoint).
        "S3_ENDPOINT_URL": env.get("METAFLOW_S3_ENDPOINT_URL", "").strip() or None,
        "FLOW_NAME": _str(env, "LINEUP_FLOW_NAME", FLOW_NAME),
        # The training data the flow reads when no --interactions is given, a
        # path or an s3:// URL; read when the flow is run or deployed, so a
        # scheduled deployment trains on it. Empty: the bundled sample world.
        "TRAINING_INTERACTIONS": env.get("LINEUP_TRAINING_INTERACTIONS", "").strip(),
        "TRAINING_ITEMS": env.get("LINEUP_TRAINING_ITEMS", "").strip(),
        # "local": the datastore and metadata in DATASTORE_ROOT (the embedded
        # default). "service": Metaflow's own configuration (METAFLOW_SERVICE_URL,
        # METAFLOW_DATASTORE_SYSROOT_S3, a profile) says where runs live.
        "METADATA": metadata,
        # Empty means the global namespace (Metaflow's ``namespace(None)``):
        # the service must see runs made by other users and by schedulers.
        "METAFLOW_NAMESPACE": env.get("LINEUP_METAFLOW_NAMESPACE", "").strip() or None,
        # Metaflow's client caches artifacts in one folder of the system temp
        # directory by default, which the first account to use it owns: every
        # Lineup instance (and its trainer) keeps its own under LINEUP_HOME.
        "METAFLOW_CLIENT_CACHE": str(_path(_str(env, "LINEUP_METAFLOW_CLIENT_CACHE",
                                                str(home / "cache" / "metaflow_client")))),
        # Metaflow refuses to run as root or without USER; name the trainer.
        "METAFLOW_USER": _str(env, "METAFLOW_USER", _str(env, "USER", "lineup")),
        "ADMIN_TOKEN": env.get("LINEUP_ADMIN_TOKEN", "").strip(),
        "POLL_INTERVAL": _float(env, "LINEUP_POLL_INTERVAL", 300.0),
        "WATCH_INTERVAL": _float(env, "LINEUP_WATCH_INTERVAL", 0.5),
        "MAX_WALKBACK": _int(env, "LINEUP_MAX_WALKBACK", 10),
        "CHECK_TIMEOUT": _float(env, "LINEUP_CHECK_TIMEOUT", 120.0),
        "NDCG_FLOOR": _float(env, "LINEUP_NDCG_FLOOR", 0.02),
        "REGRESSION_TOLERANCE": _float(env, "LINEUP_REGRESSION_TOLERANCE", 0.2),
        "LATENCY_BUDGET_MS": _float(env, "LINEUP_LATENCY_BUDGET_MS", 50.0),
        # The gate's measure of the loaded model (sanity_tests/measured.py and
        # comparison.py): how far below its claim, above popularity, and how
        # far from the serving model's lists it may be.
        "CLAIM_TOLERANCE": _float(env, "LINEUP_CLAIM_TOLERANCE", 0.01),
        "BASELINE_MARGIN": _float(env, "LINEUP_BASELINE_MARGIN", 0.0),
        "MIN_OVERLAP": _float(env, "LINEUP_MIN_OVERLAP", 0.2),
        "MAX_COLD_START_RISE": _float(env, "LINEUP_MAX_COLD_START_RISE", 0.1),
        "STALE_AFTER_HOURS": _float(env, "LINEUP_STALE_AFTER_HOURS", 36.0),
        "DEFAULT_N": _int(env, "LINEUP_DEFAULT_N", 10),
        # The live items catalogue (a path or an s3:// URL) read between retrains,
        # every CATALOGUE_INTERVAL seconds; empty: the model's own items only.
        "CATALOGUE": env.get("LINEUP_CATALOGUE", "").strip(),
        "CATALOGUE_INTERVAL": _float(env, "LINEUP_CATALOGUE_INTERVAL", 300.0),
        # A catalogue with fewer upcoming events on sale than (1 - this) times
        # the serving one's is refused (a truncated export must not empty it).
        "CATALOGUE_MAX_SHRINK": _float(env, "LINEUP_CATALOGUE_MAX_SHRINK", 0.5),
        "SERVICE_URL": _str(env, "LINEUP_SERVICE_URL", "http://127.0.0.1:8000"),
        "BIND": bind,
        "WORKERS": _int(env, "LINEUP_WORKERS", 2),
        "THREADS": _int(env, "LINEUP_THREADS", 2),
        "LOG_LEVEL": _str(env, "LINEUP_LOG_LEVEL", "info"),
        # prometheus_client's multiprocess files, one set per gunicorn worker.
        "METRICS_DIR": str(_path(_str(env, "LINEUP_METRICS_DIR", str(home / "metrics")))),
    }


def metaflow_environment(settings: Mapping[str, Any]) -> dict[str, str]:
    """Return the environment a Metaflow subprocess (the trainer) needs."""
    shared = {"METAFLOW_USER": settings["METAFLOW_USER"],
              "METAFLOW_CLIENT_CACHE_PATH": settings["METAFLOW_CLIENT_CACHE"]}
    if settings["METADATA"] != "local":
        return shared
    return {
        **shared,
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": settings["DATASTORE_ROOT"],
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }


def apply_multiprocess_metrics(settings: Mapping[str, Any]) -> None:
    """Make prometheus_client count across processes; call before it is imported."""
    Path(settings["METRICS_DIR"]).mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = settings["METRICS_DIR"]


_METAFLOW_KEYS = ("METADATA", "DATASTORE_ROOT", "METAFLOW_NAMESPACE", "METAFLOW_CLIENT_CACHE",
                  "METAFLOW_USER")
_applied_metaflow: tuple[Any, ...] | None = None


def apply_metaflow(settings: Mapping[str, Any]) -> None:
    """Point this process's Metaflow client at the configured store, namespace and cache.

    Called before any Metaflow client use, and does its work once per process
    and configuration. ``metadata('local@root')`` sets the root explicitly
    rather than relying on the working directory, and the namespace is always
    set, so runs by other users or schedulers are seen.
    """
    global _applied_metaflow
    key = tuple(settings[name] for name in _METAFLOW_KEYS)
    if key == _applied_metaflow:
        return
    os.environ.update(metaflow_environment(settings))
    import metaflow
    from metaflow.client import filecache

    # The client reads its cache path when first imported; a process that
    # imported Metaflow before this call (gunicorn's master does not) would
    # otherwise keep the shared default.
    filecache.CLIENT_CACHE_PATH = settings["METAFLOW_CLIENT_CACHE"]
    if settings["METADATA"] == "local":
        root = Path(settings["DATASTORE_ROOT"])
        # Inside an existing store only: a reader must never make again, empty, a
        # store that was moved away (FileNotFoundError then).
        (root / ".metaflow").mkdir(exist_ok=True)
        metaflow.metadata(f"local@{root}")
    metaflow.namespace(settings["METAFLOW_NAMESPACE"])
    _applied_metaflow = key
