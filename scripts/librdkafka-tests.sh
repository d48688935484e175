#!/usr/bin/env bash
# Builds librdkafka's own regression test runner (tests/test-runner) from
# the librdkafka source that the rdkafka-sys crate ships (so the version is
# the one the `rdkafka` crate tests use), into
# ${CARGO_TARGET_DIR:-target}/librdkafka-tests, and prints the directory of
# the runner. Built once; a later call with the same source just prints it.
#
#   bash scripts/librdkafka-tests.sh
#
# Needs the cargo registry to hold rdkafka-sys (any `cargo build` of this
# workspace fetches it), gcc, g++, make and OpenSSL's headers (libssl-dev:
# without SSL, librdkafka refuses AlterUserScramCredentials before sending
# it, and test 0081's SCRAM sub-tests would not reach the broker).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
OUT="$TARGET_DIR/librdkafka-tests"

SRC="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/rdkafka-sys-*/librdkafka 2>/dev/null | sort | tail -n 1 || true)"
if [ -z "$SRC" ] || [ ! -d "$SRC/tests" ]; then
    echo "librdkafka's source (with tests/) not found in the cargo registry: run 'cargo build --workspace --all-targets' first" >&2
    exit 1
fi
FLAGS="--disable-gssapi --disable-sasl --disable-zstd --disable-lz4-ext --disable-curl"
if [ -x "$OUT/tests/test-runner" ] && [ "$(cat "$OUT/.source" 2>/dev/null || true)" = "$SRC $FLAGS" ]; then
    echo "$OUT/tests"
    exit 0
fi
rm -rf "$OUT"
cp -r "$SRC" "$OUT"
cd "$OUT"
# What the tests against a PLAINTEXT broker need, and SSL (SCRAM's hashes
# on the client side).
# (Its mklove configure takes any configure.* file here for a module: the
# log goes beside the tree.)
LOG="$OUT.log"
# shellcheck disable=SC2086 # FLAGS is a list of words
./configure $FLAGS >"$LOG" 2>&1 ||
    { tail -n 30 "$LOG" >&2; exit 1; }
make -j2 libs >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; exit 1; }
make -C tests -j2 build >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; exit 1; }
echo "$SRC $FLAGS" >.source
echo "$OUT/tests"
