# make image-test's offline stand-in for python:3.11-slim-bookworm: the Debian 12 base made with debootstrap plus the
# host's own CPython 3.11 (>= 3.11.5, which requirements.txt needs; Debian 12's python3.11 is 3.11.2), installed under
# /usr/local as in the official python images. Built by docker/image-test.sh from the staged build/python-base/.
ARG BASE=trading-lib-base:bookworm
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 libsqlite3-0 libffi8 libbz2-1.0 \
      liblzma5 zlib1g libreadline8 libncursesw6 libuuid1 libexpat1 libnsl2 libtirpc3 \
    && rm -rf /var/lib/apt/lists/*
COPY python/ /usr/local/
RUN ldconfig && ln -sf python3.11 /usr/local/bin/python3 && ln -sf python3.11 /usr/local/bin/python \
    && python3.11 -c "import ssl, sqlite3, ctypes, lzma, bz2, zlib, venv, ensurepip, sys; print('python', sys.version.split()[0])"
