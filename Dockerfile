# The deployable kernel: JupyterLab + Voila + trading_lib on a CUDA-capable base (not built in CI).
# GPU hosts: build with --build-arg EXTRAS=gpu to add the optional `gpu` extra (cupy, tensorrt, xgboost).
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
ARG EXTRAS=""
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv make git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/trading_lib
COPY . .
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, pinned in every pip call (on a GPU host swap in the CUDA build of the same version)
RUN pip install torch==2.13.0 \
    && pip install torch==2.13.0 -r requirements.txt \
    && pip install torch==2.13.0 --no-deps -e . \
    && if [ -n "$EXTRAS" ]; then pip install torch==2.13.0 -e ".[$EXTRAS]"; fi \
    && python -m ipykernel install --sys-prefix --name trading-lib --display-name "Python (trading-lib)"
# secrets (ALPACA_API_KEY, ALPACA_SECRET_KEY, REDIS_URL) are passed at run time as environment variables, never baked in
EXPOSE 8888 8866
CMD ["jupyter", "lab", "--ip=0.0.0.0", "--no-browser"]
