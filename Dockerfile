# Lineup's image. No Docker engine runs where Lineup is developed, so this
# file has not been built there: its steps are kept identical to the README's
# set-up (`pip install .`, then `lineup serve`, which runs gunicorn with
# service/gunicorn_conf.py) so that what the tests cover is what runs here.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LINEUP_HOME=/var/lib/lineup \
    LINEUP_BIND=0.0.0.0:8000 \
    METAFLOW_USER=lineup

RUN useradd --create-home --uid 10001 lineup \
    && mkdir -p /var/lib/lineup \
    && chown lineup /var/lib/lineup

WORKDIR /app
COPY pyproject.toml setup.cfg README.md wsgi.py gunicorn.conf.py ./
COPY service ./service
COPY sanity_tests ./sanity_tests
RUN pip install --no-cache-dir .

USER lineup
# The Metaflow datastore (LINEUP_HOME/metaflow) and the decision state
# (LINEUP_HOME/state). Mount the trainer's datastore at the same absolute
# path it had when the runs were made: artifacts record that path.
VOLUME ["/var/lib/lineup"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)" || exit 1
CMD ["lineup", "serve"]
