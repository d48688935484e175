#!/usr/bin/env bash
# The docker-compose cluster (docker-compose.yml): 3 etcd members, 3 brokers.
#
#   bash scripts/compose.sh up     # build the binaries and images, start the cluster
#   bash scripts/compose.sh down   # stop it and remove its containers and network
#   bash scripts/compose.sh test   # up, kcat through every broker, kill a leader,
#                                  # watch leadership move, read everything back, down
#
# KBROKER_COMPOSE_PROFILE=dev builds the broker unoptimised (the test
# suite's check does); the default is release.
#
# Nothing is pulled: the broker is built here as a static binary
# (RUSTFLAGS=-C target-feature=+crt-static) and copied into docker/broker;
# Debian's etcd (package etcd-server) and its libc are copied into
# docker/etcd; both images are FROM scratch. Installs etcd-server and kcat
# with apt-get when they are missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi

TARGET=x86_64-unknown-linux-gnu
# Compose v2 (`docker compose`) or v1 (Debian's `docker-compose`).
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
else
    COMPOSE=(docker-compose)
fi
COMPOSE+=(-p kbroker -f "$ROOT/docker-compose.yml")
BOOTSTRAP=127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094

say() { printf '==> %s\n' "$*"; }

need() { # command package
    if ! command -v "$1" >/dev/null 2>&1; then
        say "installing $2"
        local sudo=()
        [ "$(id -u)" -ne 0 ] && sudo=(sudo)
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" </dev/null
    fi
}

stage() {
    need etcd etcd-server
    # KBROKER_COMPOSE_PROFILE=dev builds the same static binary without
    # optimisation, in a third of the time: the test suite's check uses it.
    local profile="${KBROKER_COMPOSE_PROFILE:-release}" dir
    case "$profile" in
        release) dir=release ;;
        dev) dir=debug ;;
        *)
            echo "KBROKER_COMPOSE_PROFILE must be release or dev, not '$profile'" >&2
            return 2
            ;;
    esac
    say "building the static broker ($profile)"
    RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --profile "$profile" --locked -p broker --bin kbroker --target "$TARGET"
    cp "target/$TARGET/$dir/kbroker" docker/broker/kbroker
    local etcd
    etcd="$(command -v etcd)"
    cp "$etcd" docker/etcd/etcd
    # The two files `ldd etcd` names: libc and the dynamic loader.
    cp -L /lib/x86_64-linux-gnu/libc.so.6 docker/etcd/libc.so.6
    cp -L /lib64/ld-linux-x86-64.so.2 docker/etcd/ld-linux-x86-64.so.2
}

# Prints the containers' last log lines and the reason; fails.
give_up() { # reason
    "${COMPOSE[@]}" logs --tail 60 >&2
    echo "$1" >&2
    return 1
}

# Waits until every broker lists all three brokers.
wait_ready() {
    local deadline=$((SECONDS + 120)) port
    for port in 19092 19093 19094; do
        until [ "$(kcat -L -b "127.0.0.1:$port" -m 5 2>/dev/null | grep -c ' at 127.0.0.1:1909')" = 3 ]; do
            [ "$SECONDS" -lt "$deadline" ] ||
                give_up "the brokers did not all register within 120 s" || return
            sleep 1
        done
    done
    say "three brokers registered"
}

up() {
    stage
    say "${COMPOSE[*]} up -d --build"
    "${COMPOSE[@]}" up -d --build
    need kcat kcat
    wait_ready
}

down() {
    "${COMPOSE[@]}" down --volumes --remove-orphans
}

leader_of() { # topic partition
    kcat -L -b "$BOOTSTRAP" -t "$1" -m 5 2>/dev/null |
        awk -v p="$2" '$1 == "partition" && $2 == p"," { print $4; exit }' | tr -d ,
}

test_cluster() {
    trap down EXIT
    up
    local topic=compose-check count=300 port i
    say "producing $count records through each broker"
    for port in 19092 19093 19094; do
        for i in $(seq 1 "$count"); do echo "via-$port-$i"; done |
            kcat -P -b "127.0.0.1:$port" -t "$topic" -X acks=all -X message.timeout.ms=30000
    done
    kcat -L -b "$BOOTSTRAP" -t "$topic"
    local leader
    leader="$(leader_of "$topic" 0)"
    [ -n "$leader" ] || { echo "no leader for $topic/0" >&2; return 1; }
    say "killing broker$leader, the leader of $topic/0"
    local killed_at=$SECONDS
    "${COMPOSE[@]}" kill "broker$leader" >/dev/null
    local now deadline=$((SECONDS + 60))
    while true; do
        now="$(leader_of "$topic" 0)"
        if [ -n "$now" ] && [ "$now" != "$leader" ] && [ "$now" != "-1" ]; then
            break
        fi
        [ "$SECONDS" -lt "$deadline" ] || { echo "leadership did not move" >&2; return 1; }
        sleep 0.5
    done
    say "$topic/0 moved from broker$leader to broker$now after $((SECONDS - killed_at)) s"
    # A consumer reads up to the high watermark, and the new leader's
    # moves up to what it has once the other follower fetches from it, a
    # moment after the move: read again until everything is there.
    local got reads=0 read_from=$SECONDS
    deadline=$((SECONDS + 30))
    while true; do
        got="$(kcat -C -b "$BOOTSTRAP" -t "$topic" -o beginning -e -q | grep -c '^via-' || true)"
        reads=$((reads + 1))
        [ "$got" != $((3 * count)) ] || break
        say "read $got of $((3 * count)) records"
        [ "$SECONDS" -lt "$deadline" ] ||
            give_up "read $got of $((3 * count)) records within 30 s" || return
        sleep 1
    done
    say "read all $got records back with broker$leader down ($reads reads, $((SECONDS - read_from)) s)"
    "${COMPOSE[@]}" start "broker$leader" >/dev/null
    wait_ready
    say "compose cluster check passed"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    test) test_cluster ;;
    *)
        echo "usage: $0 up|down|test" >&2
        exit 2
        ;;
esac
