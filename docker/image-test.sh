#!/usr/bin/env bash
# make image-test: build the image on a Debian 12 base made here with debootstrap (no base image is pulled), then run,
# inside the container and without network, a short train job and the dashboard server's health check.
# Needs root (or sudo) for debootstrap/dockerd, docker.io and debootstrap (installed by `make docker-tools`).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-trading-lib:cpu-test}
BASE_IMAGE=${BASE_IMAGE:-trading-lib-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUDO=$( [ "$(id -u)" = 0 ] || echo sudo )
mkdir -p build

# 1. a Docker daemon (started here when none answers; its log: build/dockerd.log)
if ! docker info >/dev/null 2>&1; then
  echo "image-test: starting dockerd (log: build/dockerd.log)"
  $SUDO sh -c 'nohup dockerd > build/dockerd.log 2>&1 &'
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "image-test: dockerd did not start:"; tail -20 build/dockerd.log; exit 1; }
fi

# 2. the base image: Debian 12 (bookworm) minbase from the Debian archive, imported as $BASE_IMAGE
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  root=$(mktemp -d /tmp/trading-lib-rootfs.XXXXXX)
  echo "image-test: debootstrap bookworm into $root"
  $SUDO debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$MIRROR" > build/debootstrap.log
  $SUDO tar -C "$root" -c . | docker import - "$BASE_IMAGE"
  $SUDO rm -rf "$root"
fi

# 2b. a Python >= 3.11.5 on it (requirements.txt's pins need it; Debian 12's own python3.11 is 3.11.2): the host's
#     CPython 3.11 (HOST_PYTHON, default python3.11 on PATH), its standard library only, under /usr/local
PY_BASE=${PY_BASE:-trading-lib-python:3.11-bookworm}
if ! docker image inspect "$PY_BASE" >/dev/null 2>&1; then
  HOST_PYTHON=${HOST_PYTHON:-$(command -v python3.11)}
  "$HOST_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11, 5))' \
    || { echo "image-test: $HOST_PYTHON is older than 3.11.5; set HOST_PYTHON"; exit 1; }
  pfx=$("$HOST_PYTHON" -c 'import sys; print(sys.base_prefix)')
  rm -rf build/python-base && mkdir -p build/python-base/python/bin build/python-base/python/lib build/python-base/python/include
  cp -L "$pfx/bin/python3.11" build/python-base/python/bin/
  cp -a "$pfx"/lib/libpython3.11.so* build/python-base/python/lib/
  cp -a "$pfx/include/python3.11" build/python-base/python/include/
  tar -C "$pfx/lib" --exclude='python3.11/site-packages/*' --exclude=python3.11/test --exclude=__pycache__ \
      --exclude=python3.11/idlelib --exclude=python3.11/tkinter --exclude=python3.11/turtledemo -c python3.11 \
    | tar -C build/python-base/python/lib -x
  docker build -f docker/python-base.Dockerfile --build-arg BASE="$BASE_IMAGE" -t "$PY_BASE" build/python-base
fi

# 3. stage the host's CA bundle (pip inside the build trusts what the host trusts) and the torch CPU wheel
cp "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" docker/certs/host-ca.crt
for d in ${PIP_FIND_LINKS:-}; do cp "$d"/torch-2.13.0*.whl docker/wheels/ 2>/dev/null || true; done
trap 'rm -f docker/certs/host-ca.crt docker/wheels/*.whl' EXIT

# 4. build
t0=$(date +%s)
docker build --build-arg BASE="$PY_BASE" -t "$IMAGE" .
echo "image-test: built $IMAGE in $(( $(date +%s) - t0 )) s, $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}')"

# 5. inside the container, no network: who runs, the kernel, a short train job, the dashboard health check
docker run --rm --network none "$IMAGE" bash docker/smoke.sh
