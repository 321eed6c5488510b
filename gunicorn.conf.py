"""gunicorn settings: the ones `lineup serve` uses, kept in the package."""

from service.gunicorn_conf import *  # noqa: F401,F403
