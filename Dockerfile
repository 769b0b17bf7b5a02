# One image for the Faust worker (default command) and the simulated producer
# (`python -m producer ...`). docker-compose.yml runs both from it.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so editing the code does not
# reinstall them. (README.m[d]: copied when present, no error when absent.)
COPY pyproject.toml README.m[d] ./
RUN python -c "import tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY app/ ./app/
COPY agents/ ./agents/
COPY tables/ ./tables/
COPY producer/ ./producer/
COPY devstack/ ./devstack/

RUN pip install . && rm -rf build ./*.egg-info

ENV PYTHONPATH=/app \
    LAKE_DIR=/data/lake \
    STATE_DIR=/data/state \
    WEB_HOST=0.0.0.0 \
    WEB_PORT=6066

# Non-root; the data folders belong to it, so a fresh named volume mounted on
# them inherits that ownership.
RUN useradd --create-home --uid 10001 --user-group app \
    && mkdir -p /data/lake /data/state \
    && chown -R app:app /data
USER app

EXPOSE 6066

CMD ["faust", "-A", "app", "worker", "-l", "info"]
