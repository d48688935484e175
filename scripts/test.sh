#!/usr/bin/env bash
# Runs every test of the project: installs what the tests need (system tools
# through apt, Python clients into .venv), then rustfmt, clippy, the debug
# build, `cargo test` (unit tests and the Rust end-to-end tests in tests/) and
# the Python end-to-end tests in tests/python.
#
#   bash scripts/test.sh
#
# Environment:
#   KBROKER_BIN       broker binary for the end-to-end tests
#                     (default: ${CARGO_TARGET_DIR:-target}/debug/kbroker)
#   CARGO_TARGET_DIR  honoured as by cargo
#   PYTHON            interpreter that creates .venv (default: python3)
#
# Safe to run again: installs are skipped when already done. The last line
# printed is `N passed, N failed` over cargo test and pytest together.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

START_SECONDS=$SECONDS
step() {
    printf '\n==> [%5ss] %s\n' "$((SECONDS - START_SECONDS))" "$*"
}

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi

# ---------------------------------------------------------------------------
# System tools from Debian's packages, as "command:package". A package is
# installed only when its command is missing, so a machine that has them all
# does not even run `apt-get update`.
SYSTEM_TOOLS=(
    "kcat:kcat"        # kcat 1.7.1 with librdkafka 2.0.2 on bookworm (tests/python/test_kcat.py)
    "etcd:etcd-server" # etcd 3.4 for cluster mode; the tests start their own on loopback
    # The network-partition fault test: a network namespace of its own
    # (unshare), its loopback brought up (ip), rules matching broker uids.
    "iptables:iptables"
    "unshare:util-linux"
    "ip:iproute2"
    "go:golang-go" # Go 1.19 builds the Go client checks (tests/go) in GOPATH mode
    "openssl:openssl" # test certificates for the TLS tests (tests/python/test_tls.py)
)
# Debian packages with no command of their own: the Go clients' sources
# under /usr/share/gocode (tests/python/test_go_clients.py).
SYSTEM_PACKAGES=(
    golang-github-shopify-sarama-dev # Sarama 1.22
    golang-github-segmentio-kafka-go-dev
    rapidjson-dev # librdkafka's own test runner (scripts/librdkafka-tests.sh)
    libssl-dev    # ... built with SSL (SCRAM credentials in its test 0081)
)

install_system_tools() {
    local missing=() pair package
    for pair in "${SYSTEM_TOOLS[@]}"; do
        if ! command -v "${pair%%:*}" >/dev/null 2>&1; then
            missing+=("${pair#*:}")
        fi
    done
    for package in "${SYSTEM_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$package")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "all present: ${SYSTEM_TOOLS[*]%%:*} ${SYSTEM_PACKAGES[*]}"
        return
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo)
    fi
    echo "installing: ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
}

# ---------------------------------------------------------------------------
# Python clients in .venv (gitignored). Reinstalled only when the
# requirements file or the interpreter changed, or an import fails.
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
REQUIREMENTS="tests/python/requirements.txt"
STAMP="$VENV/.requirements-stamp"

install_python_clients() {
    if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        echo "creating $VENV"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    local want
    want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1) $("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])')"
    if [ "$(cat "$STAMP" 2>/dev/null || true)" = "$want" ] &&
        "$VENV/bin/python" -c 'import pytest, pytest_timeout, confluent_kafka, kafka, snappy, lz4.frame, zstandard, crc32c, prometheus_client' >/dev/null 2>&1; then
        echo "up to date ($REQUIREMENTS unchanged)"
        return
    fi
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$REQUIREMENTS"
    echo "$want" >"$STAMP"
}

# ---------------------------------------------------------------------------
# Test counts, from the logs of cargo test and pytest. Each prints
# "PASSED FAILED", or nothing when the log does not allow an exact count.

# cargo prints "Running ..." / "Doc-tests ..." per test binary and
# "test result: ok. 3 passed; 0 failed; ..." when one finishes. A binary that
# crashed or a build that failed leaves no result line: no count then.
cargo_counts() { # log exit-status
    awk -v status="$2" '
        /^ *Running / || /^ *Doc-tests / { started++ }
        /^test result: / {
            results++
            for (i = 2; i <= NF; i++) {
                if ($i ~ /^passed;?$/) passed += $(i - 1)
                if ($i ~ /^failed;?$/) failed += $(i - 1)
            }
        }
        END {
            if (results == 0 || results != started) exit
            if (status != 0 && failed == 0) exit
            print passed + 0, failed + 0
        }' "$1"
}

# pytest's closing line, e.g. "==== 2 failed, 40 passed, 1 skipped in 93.1s ====".
# Errors (in fixtures or collection) count as failed.
pytest_counts() { # log exit-status
    case "$2" in 0 | 1 | 2) ;; *) return ;; esac
    local line
    line="$(grep -E '^=+ .* in [0-9.]+s.* =+$' "$1" | tail -n 1)" || return 0
    [ -n "$line" ] || return 0
    local passed failed errors
    passed="$(grep -oE '[0-9]+ passed' <<<"$line" | cut -d' ' -f1 || true)"
    failed="$(grep -oE '[0-9]+ failed' <<<"$line" | cut -d' ' -f1 || true)"
    errors="$(grep -oE '[0-9]+ errors?' <<<"$line" | cut -d' ' -f1 || true)"
    passed=${passed:-0} failed=${failed:-0} errors=${errors:-0}
    if [ "$2" -ne 0 ] && [ "$((failed + errors))" -eq 0 ]; then
        return
    fi
    echo "$passed" "$((failed + errors))"
}

# ---------------------------------------------------------------------------
step "system tools (apt)"
install_system_tools

step "python clients (.venv)"
install_python_clients

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "module graph: no circles, layers hold (scripts/module-graph.py)"
python3 scripts/module-graph.py broker/src coordinator/src storage/src protocol/src client/src admin/src

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build --workspace --all-targets"
cargo build --workspace --all-targets

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
export KBROKER_BIN="${KBROKER_BIN:-$TARGET_DIR/debug/kbroker}"
echo "KBROKER_BIN=$KBROKER_BIN"

LOGS="$(mktemp -d)"
trap 'rm -rf "$LOGS"' EXIT

step "cargo test --workspace"
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$LOGS/cargo-test.log"
cargo_status=${PIPESTATUS[0]}
set -e

step "pytest tests/python (KBROKER_BIN=$KBROKER_BIN)"
set +e
"$VENV/bin/python" -m pytest tests/python -v --durations=40 2>&1 | tee "$LOGS/pytest.log"
pytest_status=${PIPESTATUS[0]}
set -e

step "done (cargo test exit $cargo_status, pytest exit $pytest_status)"
cargo_result="$(cargo_counts "$LOGS/cargo-test.log" "$cargo_status")"
pytest_result="$(pytest_counts "$LOGS/pytest.log" "$pytest_status")"
if [ -n "$cargo_result" ] && [ -n "$pytest_result" ]; then
    read -r cargo_passed cargo_failed <<<"$cargo_result"
    read -r pytest_passed pytest_failed <<<"$pytest_result"
    echo "cargo test: $cargo_passed ok, $cargo_failed not ok; pytest: $pytest_passed ok, $pytest_failed not ok"
    echo "$((cargo_passed + pytest_passed)) passed, $((cargo_failed + pytest_failed)) failed"
else
    echo "no exact test count: cargo test said '${cargo_result:-?}', pytest said '${pytest_result:-?}' (see the output above)"
fi
if [ "$cargo_status" -ne 0 ] || [ "$pytest_status" -ne 0 ]; then
    exit 1
fi
