# The deployable kernel: JupyterLab + Voila + trading_lib + the `trading-lib` Jupyter kernel, run as a non-root user.
#   GPU hosts (default base, a CUDA runtime): docker build -t trading-lib .          (or: make image)
#   CPU hosts:  docker build --build-arg BASE=python:3.11-slim-bookworm \
#                 --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t trading-lib:cpu .
#   Offline hosts (only the package registries reachable, as in CI): make image-test builds a Debian base with
#   debootstrap and stages the host's CA bundle (docker/certs/) and torch CPU wheel (docker/wheels/); see README.
# Python is 3.11 (>= 3.11.5: the pins in requirements.txt are a Python 3.11.7 freeze) on every base: the base's own
# python3.11 when recent enough (python:3.11-slim-bookworm), else the deadsnakes PPA (Ubuntu 24.04 of the CUDA images).
ARG BASE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
FROM ${BASE}
# EXTRAS=gpu adds the optional `gpu` extra of pyproject.toml (cupy, tensorrt, xgboost) on GPU hosts
ARG EXTRAS=""
ARG UID=1000
# CPU hosts with internet: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu (the CPU build; PyPI's is the CUDA one)
ARG TORCH_INDEX_URL=""
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt MPLBACKEND=Agg

# extra CA certificates for apt and pip (docker/certs/*.crt, e.g. a TLS-inspecting proxy's; none by default)
COPY docker/certs/ /usr/local/share/ca-certificates/trading-lib/
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini make libgomp1 \
    && update-ca-certificates \
    && if command -v python3.11 >/dev/null && python3.11 -c 'import sys, venv; sys.exit(sys.version_info < (3, 11, 5))'; then \
         echo "using the base's $(python3.11 --version)"; \
       elif . /etc/os-release && [ "$ID" = ubuntu ]; then \
         apt-get install -y --no-install-recommends software-properties-common gpg-agent \
         && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
         && apt-get install -y --no-install-recommends python3.11 python3.11-venv; \
       else \
         echo "BASE has no Python >= 3.11.5 (requirements.txt needs it; Debian 12's python3.11 is 3.11.2):"; \
         echo "use BASE=python:3.11-slim-bookworm (CPU) or a CUDA Ubuntu image (deadsnakes PPA)"; exit 1; \
       fi \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid ${UID} --shell /bin/bash trader

# dependencies first (their layer survives code changes). torch first and pinned in every pip call; docker/wheels/
# may hold a staged wheel (the CPU build for CPU images); otherwise PyPI's torch (the CUDA build) is used.
WORKDIR /opt/trading_lib
COPY docker/wheels/ /tmp/wheels/
COPY requirements.txt ./
RUN python3.11 -m venv /opt/venv \
    && /opt/venv/bin/python -m pip install -q --upgrade pip \
    && /opt/venv/bin/python -m pip install -q --find-links /tmp/wheels ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0 \
    && /opt/venv/bin/python -m pip install -q --find-links /tmp/wheels torch==2.13.0 -r requirements.txt \
    && rm -rf /tmp/wheels
ENV PATH=/opt/venv/bin:$PATH

COPY --chown=trader:trader . .
RUN pip install -q torch==2.13.0 --no-deps -e . \
    && if [ -n "$EXTRAS" ]; then pip install -q torch==2.13.0 -e ".[$EXTRAS]"; fi \
    && python -m ipykernel install --sys-prefix --name trading-lib --display-name "Python (trading-lib)" \
    && rm -rf docker/wheels docker/certs/*.crt \
    && mkdir -p runs data_store && chown -R trader:trader /opt/trading_lib

# secrets (ALPACA_API_KEY, ALPACA_SECRET_KEY, REDIS_URL, TRADING_ALERT_URLS, TRADING_DASHBOARD_TOKEN, JUPYTER_TOKEN)
# are passed at run time as environment variables, never baked in
USER trader
EXPOSE 8888 8866 9108
ENTRYPOINT ["tini", "--"]
CMD ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", "--ServerApp.root_dir=/opt/trading_lib", \
     "--MappingKernelManager.default_kernel_name=trading-lib"]
