#!/usr/bin/env bash
# The docker-compose cluster (docker-compose.yml): 3 etcd members, 3 brokers.
#
#   bash scripts/compose.sh up     # build the binaries and images, start the cluster
#   bash scripts/compose.sh down   # stop it and remove its containers and network
#   bash scripts/compose.sh test   # up, kcat through every broker, kill a leader,
#                                  # watch leadership move, read everything back, down
#
# The secured cluster (docker-compose.secure.yml: SASL_SSL with SCRAM for
# clients and between brokers, ACLs on):
#
#   bash scripts/compose.sh secure-up     # certificates and passwords in docker/secure, cluster
#   bash scripts/compose.sh secure-down
#   bash scripts/compose.sh secure-test   # secure-up, a user and its ACLs made with
#                                         # `kbroker admin`, kcat over SASL_SSL, a denied
#                                         # user, a leader killed, everything read back, down
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
    COMPOSE_BIN=(docker compose)
else
    COMPOSE_BIN=(docker-compose)
fi
COMPOSE=("${COMPOSE_BIN[@]}" -p kbroker -f "$ROOT/docker-compose.yml")
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

# Scrapes every broker's /metrics (127.0.0.1:9404-9406): the records of
# topic $1 appended, summed over the brokers, are $2 (each counted once, by
# its leader), and exactly one broker is the active controller.
check_metrics() {
    say "scraping /metrics of every broker"
    python3 - "$1" "$2" <<'PY'
import sys, time, urllib.request

topic, expected = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 30
while True:
    appended, controllers, problem = 0, 0, None
    for port in (9404, 9405, 9406):
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError as error:
            problem = f"127.0.0.1:{port}/metrics: {error}"
            break
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name == f'kafka_server_brokertopicmetrics_messagesin_total{{topic="{topic}"}}':
                appended += int(float(value))
            elif name == "kafka_controller_kafkacontroller_activecontrollercount":
                controllers += int(float(value))
    if problem is None and appended == expected and controllers == 1:
        print(f"metrics: {appended} records of {topic} appended, one active controller")
        break
    if time.monotonic() > deadline:
        sys.exit(problem or f"metrics: {appended} records of {topic} appended (want {expected}), {controllers} active controllers (want 1)")
    time.sleep(1)
PY
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
    check_metrics "$topic" $((3 * count))
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

# ---------------------------------------------------------------------------
# The secured cluster.
SECURE_DIR="$ROOT/docker/secure"
SECURE_BOOTSTRAP=127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094
SECURE_COMPOSE=("${COMPOSE_BIN[@]}" -p kbroker-secure -f "$ROOT/docker-compose.secure.yml" --env-file "$SECURE_DIR/.env")

# A CA and the brokers' certificate (every address they are reached at),
# its key encrypted (ssl.key.password), and the passwords; once.
secure_material() {
    need openssl openssl
    mkdir -p "$SECURE_DIR"
    chmod 700 "$SECURE_DIR"
    [ -s "$SECURE_DIR/.env" ] && [ -s "$SECURE_DIR/broker.pem" ] && return
    local dir="$SECURE_DIR" key_password
    openssl rand -hex 16 >"$dir/broker.password"
    openssl rand -hex 16 >"$dir/admin.password"
    key_password="$(openssl rand -hex 16)"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=kbroker secure compose CA" \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=broker" \
        -keyout "$dir/broker.key" -out "$dir/broker.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:172.31.253.21,IP:172.31.253.22,IP:172.31.253.23\n' >"$dir/san.ext"
    openssl x509 -req -in "$dir/broker.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 30 -extfile "$dir/san.ext" -out "$dir/broker.crt" 2>/dev/null
    # One PEM file: the encrypted PKCS#8 key and the chain (KIP-651).
    openssl pkcs8 -topk8 -v2 aes-256-cbc -in "$dir/broker.key" -passout "pass:$key_password" >"$dir/broker.pem"
    cat "$dir/broker.crt" >>"$dir/broker.pem"
    rm -f "$dir/broker.key" "$dir/broker.csr" "$dir/ca.key" "$dir/san.ext" "$dir/ca.srl"
    chmod 644 "$dir/broker.pem" "$dir/ca.pem"
    {
        echo "BROKER_PASSWORD=$(cat "$dir/broker.password")"
        echo "ADMIN_PASSWORD=$(cat "$dir/admin.password")"
        echo "KEY_PASSWORD=$key_password"
    } >"$dir/.env"
    # The admin tool's connection (kbroker admin --command-config).
    cat >"$dir/admin.properties" <<PROPERTIES
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(cat "$dir/admin.password")";
ssl.truststore.type=PEM
ssl.truststore.location=$dir/ca.pem
PROPERTIES
    say "certificates and passwords in $dir"
}

# kcat over SASL_SSL as user $1 with password $2, then the rest.
secure_kcat() {
    local user="$1" password="$2" mechanism="${MECHANISM:-SCRAM-SHA-512}"
    shift 2
    kcat -X security.protocol=SASL_SSL -X sasl.mechanisms="$mechanism" -X sasl.username="$user" \
        -X sasl.password="$password" -X ssl.ca.location="$SECURE_DIR/ca.pem" "$@"
}

secure_wait_ready() {
    local deadline=$((SECONDS + 180)) port admin
    admin="$(cat "$SECURE_DIR/admin.password")"
    for port in 29092 29093 29094; do
        until [ "$(secure_kcat admin "$admin" -L -b "127.0.0.1:$port" -m 5 2>/dev/null | grep -c ' at 127.0.0.1:2909')" = 3 ]; do
            [ "$SECONDS" -lt "$deadline" ] || {
                "${SECURE_COMPOSE[@]}" logs --tail 60 >&2
                echo "the secured brokers did not all register within 180 s" >&2
                return 1
            }
            sleep 1
        done
    done
    say "three secured brokers registered"
}

secure_up() {
    stage
    secure_material
    say "${SECURE_COMPOSE[*]} up -d --build"
    "${SECURE_COMPOSE[@]}" up -d --build
    need kcat kcat
    secure_wait_ready
}

secure_down() {
    [ -s "$SECURE_DIR/.env" ] || return 0
    "${SECURE_COMPOSE[@]}" down --volumes --remove-orphans
}

secure_leader_of() { # topic partition
    secure_kcat admin "$(cat "$SECURE_DIR/admin.password")" -L -b "$SECURE_BOOTSTRAP" -t "$1" -m 5 2>/dev/null |
        awk -v p="$2" '$1 == "partition" && $2 == p"," { print $4; exit }' | tr -d ,
}

secure_test() {
    trap secure_down EXIT
    secure_up
    local admin="docker/broker/kbroker admin --bootstrap-server $SECURE_BOOTSTRAP --command-config $SECURE_DIR/admin.properties"
    local topic=secure-check count=300 alice i
    alice="$(openssl rand -hex 12)"
    say "kbroker admin over SASL_SSL: a topic, user alice (SCRAM-SHA-256) and her ACLs"
    $admin topics create "$topic" --partitions 3 --replication-factor 3
    $admin users set-scram alice --mechanism SCRAM-SHA-256 --password "$alice"
    $admin acls create --allow-principal User:alice --operation Write --operation Read --topic "$topic"
    $admin acls list
    say "alice produces $count records (acks=all) with kcat"
    for i in $(seq 1 "$count"); do echo "secure-$i"; done |
        MECHANISM=SCRAM-SHA-256 secure_kcat alice "$alice" -P -b "$SECURE_BOOTSTRAP" -t "$topic" \
            -X acks=all -X message.timeout.ms=30000
    say "bob (no credential) and alice on another topic are refused"
    if secure_kcat bob "$alice" -L -b "$SECURE_BOOTSTRAP" -m 5 >/dev/null 2>&1; then
        echo "bob was let in" >&2
        return 1
    fi
    if echo denied | MECHANISM=SCRAM-SHA-256 secure_kcat alice "$alice" -P -b "$SECURE_BOOTSTRAP" \
        -t secure-other -X message.timeout.ms=10000 2>/dev/null; then
        echo "alice wrote to a topic she has no ACL for" >&2
        return 1
    fi
    local leader now deadline
    leader="$(secure_leader_of "$topic" 0)"
    [ -n "$leader" ] || { echo "no leader for $topic/0" >&2; return 1; }
    say "killing broker$leader, the leader of $topic/0"
    "${SECURE_COMPOSE[@]}" kill "broker$leader" >/dev/null
    deadline=$((SECONDS + 60))
    while true; do
        now="$(secure_leader_of "$topic" 0)"
        if [ -n "$now" ] && [ "$now" != "$leader" ] && [ "$now" != "-1" ]; then
            break
        fi
        [ "$SECONDS" -lt "$deadline" ] || { echo "leadership did not move" >&2; return 1; }
        sleep 0.5
    done
    say "$topic/0 moved from broker$leader to broker$now"
    local got
    deadline=$((SECONDS + 30))
    while true; do
        got="$(MECHANISM=SCRAM-SHA-256 secure_kcat alice "$alice" -C -b "$SECURE_BOOTSTRAP" -t "$topic" \
            -o beginning -e -q | grep -c '^secure-' || true)"
        [ "$got" != "$count" ] || break
        [ "$SECONDS" -lt "$deadline" ] || {
            "${SECURE_COMPOSE[@]}" logs --tail 60 >&2
            echo "read $got of $count records within 30 s" >&2
            return 1
        }
        sleep 1
    done
    say "alice read all $got records back with broker$leader down"
    say "secured compose cluster check passed"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    test) test_cluster ;;
    secure-up) secure_up ;;
    secure-down) secure_down ;;
    secure-test) secure_test ;;
    *)
        echo "usage: $0 up|down|test|secure-up|secure-down|secure-test" >&2
        exit 2
        ;;
esac
