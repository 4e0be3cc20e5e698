#!/usr/bin/env bash
# Installs what the test suite needs from outside Rust, when missing
# (FUSE itself, /dev/fuse, is the kernel's: tests/tests/mount.rs names it
# when it is absent):
# Python's prometheus_client (the Prometheus parser that reads the relay's
# /metrics) and Debian's chromium with its chromium-driver (the headless
# browser that signs in to the web page, clicks and downloads), both for
# tests/tests/web.rs and tests/tests/web_browser.rs; moto's S3 server, from PyPI (the
# object store of relay/src/store/tests.rs and tests/tests/storage.rs);
# Debian's PostgreSQL (the shared catalog of the catalog's tests and
# tests/tests/relays.rs); Python's aiosmtpd (the SMTP server of
# tests/tests/alerts.rs); Debian's lintian and man-db (tests/tests/package.rs);
# openssl (certificates for the HTTPS tests). Run by .ci/run and by the README's
# second command; a test whose peer is missing fails with a line naming it.
set -euo pipefail

if ! python3 -c 'import prometheus_client' 2>/dev/null; then
  echo "installing Python's prometheus_client (the tests parse /metrics with it)" >&2
  python3 -m pip install --quiet prometheus_client 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages prometheus_client
fi

if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
  echo "installing Python's aiosmtpd (the SMTP server tests/tests/alerts.rs mails to)" >&2
  python3 -m pip install --quiet aiosmtpd 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages aiosmtpd
fi

if ! python3 -c 'import moto.server' 2>/dev/null; then
  echo "installing moto's S3 server (the object store the storage tests run against)" >&2
  python3 -m pip install --quiet 'moto[server]' 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages 'moto[server]'
fi

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "installing Debian's chromium and chromium-driver (the web tests drive the page in it)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# lintian and man-db: tests/tests/package.rs runs lintian on the packages,
# and systemd-analyze verify looks up each unit's Documentation= man page.
if ! command -v lintian >/dev/null || ! command -v man >/dev/null; then
  echo "installing Debian's lintian and man-db (the package test checks the .debs with them)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lintian man-db >/dev/null
fi

# Debian's PostgreSQL: relay/src/catalog/pg_server.rs makes a cluster with
# its initdb and pg_ctl (the catalog's unit tests and tests/tests/relays.rs).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "installing Debian's postgresql (the catalog's tests run against it)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

# curl: deploy/alert-webhook.sh posts with it; dpkg-deb: deploy/package.sh;
# fusermount3 (Debian's fuse3): tests/tests/mount.rs unmounts `ferry mount`
# with it, as a user would; openssl: the tests' PostgreSQL gets a CA and a
# certificate from it (the catalog is reached over verified TLS).
need=()
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v fusermount3 >/dev/null || need+=(fuse3)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# --garage: also Garage (a distributed S3-compatible store) for bench/'s
# STORE=garage tier: three nodes on loopback, replication 3 (bench/s3.sh).
if [ "${1:-}" = --garage ] && ! command -v garage >/dev/null; then
  echo "installing Garage (cargo install garage: a real distributed object store for bench/)" >&2
  cargo install --locked --quiet garage --version 2.5.0 --no-default-features --features bundled-libs,sqlite
fi
