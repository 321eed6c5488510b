"""gunicorn settings for the floor app: Lineup's own, minus Lineup's hooks.

Every server setting (worker class, threads, workers, timeouts, keep-alive
and its reconnect policy, access log) is imported from
``service.gunicorn_conf``, so a change there moves the floor too. The other
hooks are left out: they start Lineup's watcher.
"""

from service.gunicorn_conf import (  # noqa: F401
    access_log_format,
    accesslog,
    bind,
    errorlog,
    graceful_timeout,
    keepalive,
    logconfig_dict,
    loglevel,
    pre_request,
    threads,
    timeout,
    worker_class,
    workers,
)
