# syntax=docker/dockerfile:1
# The voice service as `make run` serves it (`python -m app.server`), on the CPU: the embedded espeak-ng engine
# by default, the real CosyVoice engine (upstream's code at COSYVOICE_COMMIT, with its dependencies) when a
# CosyVoice model dir is mounted where COSYVOICE_MODEL_DIR points (default /models/CosyVoice2-0.5B).
#
#   docker build -t cosyvoice-service .
#   docker run -p 8000:8000 -v cosyvoice-data:/data -v "$PWD/pretrained_models:/models:ro" cosyvoice-service
#
# Build arguments:
#   TORCH_INDEX       where torch==2.13.0 comes from: CPU wheels by default; a CUDA index for the GPU variant,
#                     e.g. https://download.pytorch.org/whl/cu128 (compose.gpu.yaml passes it)
#   COSYVOICE_COMMIT  the upstream FunAudioLLM/CosyVoice commit, fetched with git as scripts/use_upstream.sh
#                     does (github.com needed at build time); keep it equal to COSYVOICE_COMMIT in the Makefile.
#                     Without github.com, hand in a checkout of that commit instead (nothing is fetched then):
#                       docker build --build-context upstream=/path/to/CosyVoice -t cosyvoice-service .
#   APP_UID           the numeric uid (and gid) the service runs as (10001)
#
# Ports: 8000 (HTTP, every door and /health). Upstream's gRPC API is off unless COSYVOICE_GRPC_PORT is set
# (e.g. -e COSYVOICE_GRPC_PORT=50000 -p 50000:50000); it listens on COSYVOICE_GRPC_HOST, 0.0.0.0 here. The
# Wyoming door (Home Assistant) likewise: -e COSYVOICE_WYOMING_PORT=10200 -p 10200:10200, on 0.0.0.0 here.

ARG PYTHON_VERSION=3.11
ARG DEBIAN_RELEASE=trixie
ARG COSYVOICE_COMMIT=ace7c47f41bbd303aa6bf1ea80e6f9fbd595cd40

# ---- upstream CosyVoice's code at the pinned commit: a shallow fetch of that one commit ----
# (the full python image: it has git; nothing of this stage but the checkout reaches the image)
FROM python:${PYTHON_VERSION}-${DEBIAN_RELEASE} AS upstream-fetch
ARG COSYVOICE_COMMIT
WORKDIR /src
RUN git init -q . \
    && git -c http.lowSpeedLimit=1000 -c http.lowSpeedTime=30 \
        fetch -q --depth 1 https://github.com/FunAudioLLM/CosyVoice.git "${COSYVOICE_COMMIT}" \
    && git -c advice.detachedHead=false checkout -q FETCH_HEAD \
    && test "$(git rev-parse HEAD)" = "${COSYVOICE_COMMIT}" \
    && rm -rf .git

# The checkout at the root of a stage of its own, so that `--build-context upstream=DIR` replaces it whole.
FROM scratch AS upstream
COPY --from=upstream-fetch /src/ /

# ---- the service's dependencies, as a list read from pyproject.toml ----
# (a stage of its own: the layers below are rebuilt only when this list changes, not for any pyproject edit)
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS service-requirements
WORKDIR /build
COPY pyproject.toml ./
RUN python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' \
        > requirements.txt

# ---- the Python environment: torch, the service's and the CosyVoice engine's dependencies ----
# Built in the full python image (a compiler for the one sdist with a C extension, crcmod, which oss2 uses)
# and copied into the slim one. Only the two requirement lists reach this stage, so editing the app never
# reinstalls these.
FROM python:${PYTHON_VERSION}-${DEBIAN_RELEASE} AS deps
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /build
# torch first and from its own index, as `make install TORCH_INDEX=...` does; the steps below keep it
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir torch==2.13.0 --index-url "${TORCH_INDEX}"
# the service's dependencies (the app itself is not installed: it runs from /srv)
COPY --from=service-requirements /build/requirements.txt service-requirements.txt
RUN pip install --no-cache-dir -r service-requirements.txt
# What scripts/install_cosyvoice.sh installs from PyPI, under the same constraints (torch and numpy stay as
# they are), ahead of the app code. The script itself runs in the last stage, because its check imports the
# app: it finds these in place, adds torchaudio (repacked) and checks the engine imports.
COPY requirements-cosyvoice.txt ./
RUN printf 'torch==2.13.0\nnumpy==%s\n' "$(python -c 'import numpy; print(numpy.__version__)')" > constraints.txt \
    && pip install --no-cache-dir -c constraints.txt -r requirements-cosyvoice.txt \
    && pip install --no-cache-dir -c constraints.txt --no-deps cosyvoice2-fr-infer==0.1.5 openai-whisper==20250625

# ---- the image ----
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE}
ARG COSYVOICE_COMMIT
ARG APP_UID=10001
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN groupadd --gid "${APP_UID}" voice \
    && useradd --uid "${APP_UID}" --gid "${APP_UID}" --create-home --home-dir /home/voice --shell /usr/sbin/nologin voice \
    && mkdir -p /data \
    && chown "${APP_UID}:${APP_UID}" /data

COPY --from=deps /opt/venv /opt/venv
# upstream's package (and its licence) only: the engine imports `cosyvoice` from COSYVOICE_SRC
COPY --from=upstream /cosyvoice /opt/cosyvoice/cosyvoice
COPY --from=upstream /LICENSE /opt/cosyvoice/LICENSE

WORKDIR /srv
COPY requirements-cosyvoice.txt ./
COPY scripts/install_cosyvoice.sh scripts/use_upstream.sh ./scripts/
# the whole app, its web page's static files (app/web/static) included
COPY app ./app
# gRPC stubs from the app's copy of upstream's contract (as `make install`), then the CosyVoice engine as
# `make install-cosyvoice` makes it: the dependencies script (finds the deps stage's packages, installs the
# repacked torchaudio, imports the engine) and the choice of upstream code (checks /opt/cosyvoice imports,
# CosyVoice2 and CosyVoice3). Caches they write go to a scratch folder, not into /data.
RUN python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. app/api/runtime/cosyvoice.proto \
    && export XDG_CACHE_HOME=/tmp/build-cache MPLCONFIGDIR=/tmp/build-cache/matplotlib \
    && bash scripts/install_cosyvoice.sh /opt/venv \
    && COSYVOICE_COMMIT="${COSYVOICE_COMMIT}" COSYVOICE_SRC=/opt/cosyvoice bash scripts/use_upstream.sh /opt/venv \
    && rm -rf /tmp/build-cache /root/.cache

# The service's settings (COSYVOICE_*, docs/settings.md); anything here can be overridden with -e.
# Caches (espeak-ng's data copy, numba's, matplotlib's) live in the volume, built once.
ENV COSYVOICE_DATA_DIR=/data \
    COSYVOICE_MODEL_DIR=/models/CosyVoice2-0.5B \
    COSYVOICE_SRC=/opt/cosyvoice \
    COSYVOICE_GRPC_HOST=0.0.0.0 \
    COSYVOICE_WYOMING_HOST=0.0.0.0 \
    XDG_CACHE_HOME=/data/.cache \
    HOME=/home/voice

USER ${APP_UID}:${APP_UID}
VOLUME ["/data"]
EXPOSE 8000
# /health answers 200 once the engine is loaded (a CosyVoice model takes a while on a CPU: start period)
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["python", "-m", "app.server", "--host", "0.0.0.0", "--port", "8000"]
