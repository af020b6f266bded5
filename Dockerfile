# basketcast serving image: FastAPI + uvicorn + onnxruntime over a memory-mapped serving bundle.
# Only the `serve` extra is installed: no LightGBM, XGBoost, implicit, MLflow, PyTorch or plotting.
# It does bring SciPy (the fresh online rows after a posted order reuse the offline feature code's
# sparse neighbour search) and the clients of the online stores: redis and psycopg[binary].
#
# The server listens on 0.0.0.0 here, so it needs an admin token for /admin/* (basketcast serve
# refuses to start off loopback without one); pass it at run time, never bake it in.
#
# Serve a run folder mounted at /model (RUN_DIR/serving holds the bundle; the bundle folder
# itself works too):
#   docker build -t basketcast-serve .
#   docker run --rm -p 8000:8000 -e BASKETCAST_ADMIN_TOKEN="$(openssl rand -hex 24)" \
#     -v "$PWD/artifacts/model:/model:ro" basketcast-serve
#
# Or bake a run folder of the build context into the image (only its serving/ bundle is copied;
# .dockerignore lets artifacts/**/serving through, so keep the run under artifacts/):
#   docker build -t basketcast-serve:model --build-arg MODEL_DIR=artifacts/model .
#   docker run --rm -p 8000:8000 -e BASKETCAST_ADMIN_TOKEN=... basketcast-serve:model
#
# Knobs at run time: BASKETCAST_WORKERS (uvicorn worker processes, default 2: one per core),
# BASKETCAST_PORT (default 8000) and BASKETCAST_HOST (default 0.0.0.0). The server writes only to /tmp (multi-worker metrics
# files) and to BASKETCAST_STATE_DIR=/var/lib/basketcast (the embedded order log and online store,
# SQLite; a VOLUME owned by the non-root user, unused when BASKETCAST_ORDER_LOG / _ONLINE_STORE
# name PostgreSQL / Redis): with a read-only root filesystem, mount a tmpfs on /tmp and keep a
# volume on the state folder. onnxruntime's telemetry is off (ORT_DISABLE_TELEMETRY=1). Compose,
# Kubernetes and Render set-ups: deploy/README.md. Verified without a Docker engine by docker/verify.sh.

# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first (the base list + the serve extra, read from pyproject.toml) so that a
# change of source code does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
print("\n".join(p["dependencies"] + p["optional-dependencies"]["serve"]))' > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# basketcast/pipeline, /features and /serving are symlinks to the folders copied below (COPY keeps
# them as links); the wheel holds one top-level package, basketcast.
COPY basketcast ./basketcast
COPY pipeline ./pipeline
COPY features ./features
COPY serving ./serving
# The test suites bundled in wheels (numpy, pyarrow: ~24 MB) and the installers (pip, setuptools)
# are not needed at run time.
RUN pip install --no-deps . && python -c "import basketcast.pipeline.cli" \
    && pip check \
    && find /opt/venv/lib -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} + \
    && pip uninstall --yes --quiet pip setuptools

# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="basketcast-serve" \
      org.opencontainers.image.description="basketcast next-basket recommender: HTTP serving of a trained run"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BASKETCAST_MODEL_DIR=/model \
    BASKETCAST_HOST=0.0.0.0 \
    BASKETCAST_PORT=8000 \
    BASKETCAST_WORKERS=2 \
    BASKETCAST_STATE_DIR=/var/lib/basketcast \
    ORT_DISABLE_TELEMETRY=1

RUN groupadd --gid 10001 basketcast \
    && useradd --uid 10001 --gid basketcast --no-log-init --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin basketcast \
    && mkdir /model \
    && install -d -o basketcast -g basketcast -m 0750 /var/lib/basketcast

# The embedded stores (SQLite) live here: a fresh volume on it starts owned by the server's user.
VOLUME ["/var/lib/basketcast"]

COPY --from=builder /opt/venv /opt/venv

# Optional: bake RUN_DIR/serving of the build context into /model/serving. Only MODEL_DIR is
# bind-mounted, for this step only (without it, a small file stands in and nothing is baked), so
# BuildKit sends no bundle it does not bake and nothing but the bundle lands in a layer.
ARG MODEL_DIR=""
RUN --mount=type=bind,source=${MODEL_DIR:-pyproject.toml},target=/bake \
    if [ -n "$MODEL_DIR" ]; then \
      src=/bake; \
      if [ -f /bake/serving/ranker.onnx ]; then src=/bake/serving; fi; \
      if [ ! -f "$src/manifest.json" ] || [ ! -f "$src/ranker.onnx" ]; then \
        echo "MODEL_DIR=$MODEL_DIR: no serving bundle (RUN_DIR/serving/ranker.onnx...) in the build" \
             "context; keep the run under artifacts/ (the only place .dockerignore lets through)" >&2; \
        exit 1; \
      fi; \
      cp -r "$src" /model/serving && chmod -R a+rX,go-w /model; \
    fi

USER basketcast:basketcast
WORKDIR /tmp
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('BASKETCAST_PORT', '8000'), timeout=4)"

# `exec` so that uvicorn is PID 1 and gets SIGTERM from `docker stop`.
CMD ["sh", "-c", "exec basketcast serve --model \"$BASKETCAST_MODEL_DIR\" --host \"$BASKETCAST_HOST\" --port \"$BASKETCAST_PORT\" --workers \"$BASKETCAST_WORKERS\""]
