"""gunicorn settings for Lineup; every value comes from service.config.

Used as `gunicorn -c python:service.gunicorn_conf` (by `lineup serve`) or via
the top-level gunicorn.conf.py.
"""

import gc
import os
import shutil

from service.config import KEEPALIVE_REQUESTS, apply_multiprocess_metrics, metaflow_environment
from service.config import load as load_settings

settings = load_settings()
apply_multiprocess_metrics(settings)  # before any worker imports prometheus_client

# Load the app, the estimator's numpy, SciPy and scikit-learn, and the
# Metaflow client in the master: forked workers share those pages instead of
# importing each their own copy (docs/benchmarks.md). The watcher thread and
# the model itself start in each worker (post_worker_init).
preload_app = True
os.environ.update(metaflow_environment(settings))  # Metaflow reads it on import
import metaflow  # noqa: E402, F401
import service.recommender  # noqa: E402, F401
from threadpoolctl import threadpool_limits  # noqa: E402

# One BLAS thread: requests already run in parallel across workers and
# threads, and a multithreaded BLAS under each of them made 4 concurrent
# 64-factor ``recommend`` calls take 2.2 ms each instead of 0.1 ms. Set here,
# once: OpenBLAS keeps the limit across fork (OpenMP's is per thread, and
# request threads never had it), and doing it in each worker cost each added
# worker 0.7 to 1.3 MiB of PSS.
threadpool_limits(limits=1)

# -- server socket ------------------------------------------------------------
bind = settings["BIND"]

# -- workers ------------------------------------------------------------------
# gthread: the main thread keeps the heartbeat while a request thread runs a
# long selection, so gunicorn never kills a worker for judging a candidate.
# Two threads (LINEUP_THREADS): one still serves while the other runs a
# reload; more threads only queue behind the GIL (4 threads: p99 16 ms at 16
# connections, 2 threads: 11 ms, same throughput; docs/benchmarks.md).
workers = settings["WORKERS"]
worker_class = "gthread"
threads = settings["THREADS"]
timeout = 60
graceful_timeout = 30
keepalive = 5

# gunicorn 27's control socket defaults to one path per user, which two
# services on one host would share; Lineup is steered through /admin instead.
control_socket_disable = True

# -- logging: one line per event, on stdout ----------------------------------
accesslog = "-"
errorlog = "-"
loglevel = settings["LOG_LEVEL"]
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms run=%({x-model-run}o)s'
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": {"format": "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"},
    },
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "formatter": "line",
                   "stream": "ext://sys.stdout"},
    },
    "root": {"handlers": ["stdout"], "level": settings["LOG_LEVEL"].upper()},
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": settings["LOG_LEVEL"].upper(),
                           "propagate": False},
        "gunicorn.access": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "metaflow": {"level": "WARNING"},
    },
}


# -- server hooks -------------------------------------------------------------
def on_starting(server):
    """Start counting afresh: old workers' metric files would be summed in."""
    shutil.rmtree(settings["METRICS_DIR"], ignore_errors=True)
    apply_multiprocess_metrics(settings)


def child_exit(server, worker):
    """Drop a dead worker's live gauges from /metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def pre_request(worker, req):
    """Close a keep-alive connection after KEEPALIVE_REQUESTS requests, as nginx does.

    Workers share one listening socket and whichever wakes first accepts, so
    a client that opens all its connections at once can land them all on one
    worker and leave the other idle (half the throughput, seen here with
    wrk). A reconnecting client is accepted by a worker with time to spare,
    which evens the load out; the price is one local TCP handshake per 100
    requests.
    """
    if req.req_number % KEEPALIVE_REQUESTS == 0:
        req.must_close = True


def pre_fork(server, worker):
    """Move every object the master made so far out of the garbage collector's reach.

    A full collection writes to the header of every object it visits: in a
    worker, the first one copied the pages of the preloaded app, 30 MiB more
    PSS per worker. Frozen objects are still freed when their last reference
    goes; only garbage cycles through them are never collected.
    """
    gc.freeze()


def post_worker_init(worker):
    """Start the worker's model watcher and catalogue follower (threads do not survive a fork).

    The worker count tells /readyz how many siblings must hold a model.
    """
    worker.wsgi.config["GUNICORN_WORKERS"] = worker.cfg.workers
    worker.wsgi.extensions["lineup"].start()
    worker.wsgi.extensions["lineup_catalogue"].start()
    worker.log.info("worker %s watching for models", worker.pid)


def worker_exit(server, worker):
    """Stop the watcher so a graceful restart leaves no thread behind."""
    manager = getattr(worker, "wsgi", None)
    if manager is not None:
        manager.extensions["lineup"].stop()
        manager.extensions["lineup_catalogue"].stop()
