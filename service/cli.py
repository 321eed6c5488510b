"""The ``lineup`` command: serve, train, retrain, inspect and steer.

Every subcommand reads the one configuration module. ``status``, ``reload``,
``pin`` and ``unpin`` ask the running service (``LINEUP_SERVICE_URL`` with
``LINEUP_ADMIN_TOKEN``); ``runs`` and ``check`` read the run history directly,
so they work with the service down.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service import config
from service.runs import RunNotFound, RunRecord, RunSource, StoreUnavailable

if TYPE_CHECKING:
    from service.gate import Evaluation

logger = logging.getLogger(__name__)

#: How long the CLI waits for the service to answer an admin call.
ADMIN_TIMEOUT = 600.0


class CommandError(RuntimeError):
    """A subcommand failed; its message is for the person at the terminal."""


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- talking to the service ---------------------------------------------------

def admin_call(settings: Mapping[str, Any], method: str, path: str,
               body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call the running service's admin API and return its JSON answer."""
    import requests

    if not settings["ADMIN_TOKEN"]:
        raise CommandError("LINEUP_ADMIN_TOKEN is not set; the admin API needs it")
    url = settings["SERVICE_URL"].rstrip("/") + path
    try:
        response = requests.request(
            method, url, json=body, timeout=ADMIN_TIMEOUT,
            headers={"Authorization": f"Bearer {settings['ADMIN_TOKEN']}"})
    except requests.RequestException as exc:
        raise CommandError(f"cannot reach the service at {url}: {exc}") from exc
    try:
        answer = response.json()
    except ValueError:
        raise CommandError(f"{url} answered {response.status_code} without JSON") from None
    if response.status_code >= 400:
        error = answer.get("error", {})
        raise CommandError(f"{url} answered {response.status_code}: "
                           f"{error.get('message', answer)}")
    return answer


# -- subcommands ----------------------------------------------------------------

def ensure_trained(settings: Mapping[str, Any]) -> None:
    """Train once on the bundled sample data when no successful run exists yet."""
    from service.backends import run_source
    from service.training.runner import train

    (Path(settings["DATASTORE_ROOT"]) / ".metaflow").mkdir(parents=True, exist_ok=True)
    if run_source(settings).candidates(limit=1):
        return
    _progress(f"no successful {settings['FLOW_NAME']} run in {settings['DATASTORE_ROOT']}; "
              "training on the bundled sample data once (about a minute)")
    pathspec = train(settings, quiet=False)
    _progress(f"trained {pathspec}")


def cmd_serve(settings: Mapping[str, Any], args: argparse.Namespace) -> int:
    """Start gunicorn with Lineup's settings, training the sample first if needed."""
    if not args.no_train:
        ensure_trained(settings)
    argv = ["gunicorn", "-c", "python:service.gunicorn_conf", "service:create_app()"]
    _progress(f"serving on http://{settings['BIND']} with {settings['WORKERS']} workers")
    os.execvp(sys.executable, [sys.executable, "-m", *argv])
    return 0  # not reached


def _train(settings: Mapping[str, Any], args: argparse.Namespace) -> str:
    from service.training.runner import TrainingFailed, train

    _progress("training " + (f"on {args.interactions}" if args.interactions
                             else "on the bundled sample data"))
    try:
        pathspec = train(settings, interactions=args.interactions, items=args.items,
                         as_of=args.as_of, quiet=False)
    except TrainingFailed as exc:
        raise CommandError(f"training failed: {exc}") from exc
    _progress(f"trained {pathspec}")
    return pathspec


def cmd_train(settings: Mapping[str, Any], args: argparse.Namespace) -> int:
    """Run the training flow once."""
    pathspec = _train(settings, args)
    _emit(args, {"pathspec": pathspec}, pathspec)
    return 0


def cmd_retrain(settings: Mapping[str, Any], args: argparse.Namespace) -> int:
    """Train, then ask the running service to reload; fail if it does not serve the new run."""
    run_id = _train(settings, args).rsplit("/", 1)[-1]
    _progress("asking the service to reload")
    result = admin_call(settings, "POST", "/admin/reload")
    _emit(args, result, _format_selection(result))
    if result.get("after") != run_id:
        verdicts = {c["run_id"]: c for c in result.get("candidates", [])}
        reason = verdicts.get(run_id, {}).get("reason", "it was not selected")
        raise CommandError(f"the service did not take run {run_id}: {reason}; "
                           f"still serving run {result.get('after')}")
    return 0


def _format_selection(result: Mapping[str, Any]) -> str:
    rows = [(c["run_id"], c["verdict"], "yes" if c.get("remembered") else "no",
             ", ".join(c.get("failed_checks", [])) or None) for c in result["candidates"]]
    head = (f"selection {result['selection']} ({result['reason']}): run {result['before']} -> "
            f"run {result['after']} in {result['seconds']:.2f} s")
    return head + "\n" + _table(rows, ("run", "verdict", "remembered", "failed checks"))


def cmd_reload(settings: Mapping[str, Any], args: argparse.Namespace) -> int:
    """Ask the service to select now."""
    result = admin_call(settings, "POST", "/admin/reload")
    _emit(args, result, _format_selection(result))
    return 0


def cmd_status(settings: Mapping[str, Any], args: argparse.Namespace) -> int:
    """Show which run serves and the recent verdicts."""
    status = admin_call(settings, "GET", "/admin/status")
    serving = status.get("serving") or {}
    lines = [
        f"serving: run {serving.get('run_id', '-')} since {_when(serving.get('since'))}"
        + (" (FORCED)" if serving.get("forced") else "")
        + (" (STALE)" if serving.get("stale") else ""),
        f"pin: {status['pin']['run_id'] if status.get('pin') else '-'}",
        f"last error: {(status.get('last_error') or {}).get('message', '-')}",
        "",
        _table([(v["run_id"], "passed" if v["passed"] else "rejected",
                 _when(v.get("evaluated_at")), v.get("reason")) for v in status["verdicts"]],
               ("run", "verdict", "evaluated", "reason")),
    ]
    _emit(args, status, "\n".join(lines))
    return 0


def cmd_runs(settings: Mapping[str, Any], args: argparse.Namespace) -> int:
    """List the recent runs with their metrics and Lineup's verdicts."""
    from service.backends import decision_store, run_source
    from service.history import run_history

    history = run_history(run_source(settings), decision_store(settings), limit=args.limit)
    rows = []
    for run in history:
        metrics = run.get("holdout_metrics") or {}
        baseline = run.get("baseline_metrics") or {}
        rows.append((run["run_id"], run["state"], _when(run.get("finished_at")),
                     _fmt(metrics.get("ndcg@10")), _fmt(baseline.get("ndcg@10")),
                     run["verdict"], ", ".join(run.get("failed_checks") or []) or None))
    _emit(args, history, _table(rows, ("run", "state", "finished", "ndcg@10", "baseline",
                                       "verdict", "failed checks")))
    return 0


def _fmt(value: float | None) -> str | None:
    return None if value is None else f"{value:.4f}"


def _serving_model(settings: Mapping[str, Any], source: Any) -> Any:
    """Return the decided serving run's model as a ServedModel, or None when none is decided."""
    from service.backends import decision_store
    from service.loader import load_from_run
    from service.slot import ServedModel

    serving = decision_store(settings).read().serving
    if serving is None:
        return None
    record = source.get(serving.run_id)
    _progress(f"comparing with the serving run {record.run_id}")
    model, _ = load_from_run(source, record)
    return ServedModel(model=model, run_id=record.run_id, pathspec=record.pathspec,
                       loaded_at=time.time(), finished_at=record.finished_at)


def cmd_check(settings: Mapping[str, Any], args: argparse.Namespace) -> int:
    """Run the sanity suite on one run; print each check's decision and claimed vs measured."""
    from service.backends import run_source
    from service.gate import evaluate

    source = run_source(settings)
    record = source.get(args.run)
    if not record.successful:
        raise CommandError(f"run {record.run_id} is {record.state}; only successful runs "
                           "can be checked")
    serving = _serving_model(settings, source)
    _progress(f"checking run {record.pathspec}")
    evaluation = evaluate(source, record, settings, serving)
    if args.html:
        _write_check_page(args.html, source, record, evaluation)
    report = evaluation.report
    text = (f"{report.format()}\n\nclaimed against measured "
            f"(serving run: {serving.run_id if serving else 'none'})\n{report.format_measures()}")
    _emit(args, evaluation.verdict.to_dict(), text)
    return 0 if evaluation.verdict.passed else 1


def _write_check_page(path: str, source: RunSource, record: RunRecord,
                      evaluation: Evaluation) -> None:
    """Write the verdict as a self-contained HTML page (service/check_report.py)."""
    from service import check_report

    try:
        claimed = source.summary(record)
    except Exception as exc:  # the page still shows the checks; the gate judged the read
        logger.warning("run %s: cannot read its summary for the page: %s", record.run_id, exc)
        claimed = {}
    page = check_report.render(record.pathspec, evaluation.verdict.to_dict(),
                               evaluation.report.to_dict(), claimed)
    try:
        Path(path).write_text(page, encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc}") from exc
    _progress(f"wrote {path}")


def cmd_pin(settings: Mapping[str, Any], args: argparse.Namespace) -> int:
    """Serve exactly one run until unpinned."""
    result = admin_call(settings, "POST", "/admin/pin", {"run_id": args.run, "force": args.force})
    _emit(args, result, _format_selection(result))
    return 0


def cmd_unpin(settings: Mapping[str, Any], args: argparse.Namespace) -> int:
    """Return to automatic selection."""
    result = admin_call(settings, "POST", "/admin/unpin")
    _emit(args, result, _format_selection(result))
    return 0


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def build_parser() -> argparse.ArgumentParser:
    """Describe the subcommands."""
    parser = argparse.ArgumentParser(prog="lineup", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the service under gunicorn")
    serve.add_argument("--no-train", action="store_true",
                       help="do not train the sample when no successful run exists")
    serve.set_defaults(func=cmd_serve)
    for name, func, text in (("train", cmd_train, "run the training flow once"),
                             ("retrain", cmd_retrain, "train, then make the service reload")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--interactions", help="interactions CSV (default: sample data)")
        command.add_argument("--items", help="items CSV")
        command.add_argument("--as-of", help="date of the sample world (YYYY-MM-DD)")
        command.set_defaults(func=func)
    sub.add_parser("reload", help="make the service select now").set_defaults(func=cmd_reload)
    sub.add_parser("status", help="what serves, and recent verdicts").set_defaults(
        func=cmd_status)
    runs = sub.add_parser("runs", help="recent runs with metrics and verdicts")
    runs.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    runs.set_defaults(func=cmd_runs)
    check = sub.add_parser("check", help="run the sanity suite on one run")
    check.add_argument("run", help="run id or pathspec")
    check.add_argument("--html", metavar="FILE",
                       help="also write the report as a self-contained HTML page")
    check.set_defaults(func=cmd_check)
    pin = sub.add_parser("pin", help="serve exactly this run until unpinned")
    pin.add_argument("run", help="run id")
    pin.add_argument("--force", action="store_true", help="skip the sanity checks")
    pin.set_defaults(func=cmd_pin)
    sub.add_parser("unpin", help="return to automatic selection").set_defaults(func=cmd_unpin)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; exit non-zero with a clear message when it fails."""
    args = build_parser().parse_args(argv)
    settings = config.load()
    logging.basicConfig(level=settings["LOG_LEVEL"].upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(settings, args)
    except (CommandError, RunNotFound, StoreUnavailable) as exc:
        print(f"lineup {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
