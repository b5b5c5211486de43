#!/usr/bin/env bash
# Idempotent installer for the real-client test suite (Debian 12, root).
# - kcat from Debian (links librdkafka 2.0.2)
# - Python venv at ci/.venv with the pinned clients from ci/requirements.txt
# - the interop lab: Apache Kafka 4.4's client, tools and broker jars (Maven
#   Central, through ci/java/pom.xml) in ci/.lab/jars, with Brook's Java test
#   programs in ci/.lab/jars/brook-interop.jar; franz-go programs (Go module
#   proxy, ci/go) built into ci/.lab/bin
set -euo pipefail
CI_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$CI_DIR/.venv"
REQ="$CI_DIR/requirements.txt"

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

if ! command -v kcat >/dev/null 2>&1; then
    echo "setup: installing kcat"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q kcat
fi

# test_jbod.py makes ext4 file systems in files and loop-mounts them.
if ! command -v mkfs.ext4 >/dev/null 2>&1 || ! command -v losetup >/dev/null 2>&1; then
    echo "setup: installing e2fsprogs, mount"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q e2fsprogs mount
fi

# test_security.py makes its CA and certificates with the openssl command.
if ! command -v openssl >/dev/null 2>&1; then
    echo "setup: installing openssl"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q openssl
fi

# test_metrics.py checks a real scrape with promtool (Debian's prometheus package).
if ! command -v promtool >/dev/null 2>&1; then
    echo "setup: installing prometheus (promtool)"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends prometheus
fi

# test_cluster_netns.py builds network namespaces, veths and a bridge with ip.
if ! command -v ip >/dev/null 2>&1; then
    echo "setup: installing iproute2"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q iproute2
fi

PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "setup: creating venv $VENV"
    rm -rf "$VENV"
    if ! "$PY" -m venv "$VENV"; then
        # Debian's system python needs python3-venv for ensurepip.
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update -q
        $SUDO apt-get install -y -q python3-venv
        rm -rf "$VENV"
        "$PY" -m venv "$VENV"
    fi
fi

# Reinstall only when requirements.txt changed since the last successful install.
STAMP="$VENV/.requirements.sha256"
WANT="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
    echo "setup: installing python packages"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
    echo "$WANT" > "$STAMP"
fi

# Interop lab, Java side. Rebuilt when the pom or a Java source changed.
LAB="$CI_DIR/.lab"
mkdir -p "$LAB"
if ! command -v mvn >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
    echo "setup: installing maven and a JDK"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q maven openjdk-17-jdk-headless
fi
JSTAMP="$LAB/.java.sha256"
JWANT="$(cd "$CI_DIR/java" && find pom.xml src -type f | sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$JSTAMP" 2>/dev/null || true)" != "$JWANT" ] || [ ! -f "$LAB/jars/brook-interop.jar" ]; then
    echo "setup: resolving Kafka 4.4 jars and building the Java test programs (maven)"
    rm -rf "$LAB/jars"
    (cd "$CI_DIR/java" && mvn -B -q package dependency:copy-dependencies)
    cp "$CI_DIR/java/target/brook-interop-0.1.0.jar" "$LAB/jars/brook-interop.jar"
    echo "$JWANT" > "$JSTAMP"
fi
echo "setup: $(ls "$LAB/jars" | wc -l) jars in $LAB/jars ($("$CI_DIR/kafka-tool" kafka-topics --version 2>/dev/null | tail -1))"

# Interop lab, Go side (franz-go through the module proxy).
if [ -f "$CI_DIR/go/go.mod" ]; then
    if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
        export PATH="/usr/local/go/bin:$PATH"
    fi
    if ! command -v go >/dev/null 2>&1; then
        echo "setup: installing go"
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update -q
        $SUDO apt-get install -y -q golang-go
    fi
    # franz-go v1.22 / kadm v1.20 need Go 1.26 (the go line of ci/go/go.mod)
    GO_NEED="$(sed -n 's/^go \([0-9]*\.[0-9]*\).*/\1/p' "$CI_DIR/go/go.mod")"
    GO_HAVE="$(go env GOVERSION | sed -n 's/^go\([0-9]*\.[0-9]*\).*/\1/p')"
    if [ "$(printf '%s\n%s\n' "$GO_NEED" "$GO_HAVE" | sort -V | head -1)" != "$GO_NEED" ]; then
        echo "setup: ci/go needs Go >= $GO_NEED, found $(go env GOVERSION) ($(command -v go))" >&2
        exit 1
    fi
    echo "setup: building the franz-go programs ($(go env GOVERSION))"
    mkdir -p "$LAB/bin"
    (cd "$CI_DIR/go" && go build -o "$LAB/bin/" ./...)
fi

# Fail early if a codec backend is missing.
"$VENV/bin/python" - <<'PY'
import confluent_kafka, kafka.codec as kc, aiokafka.codec as ac, crc32c, pytest
assert kc.has_gzip() and kc.has_snappy() and kc.has_lz4() and kc.has_zstd(), "kafka-python codecs missing"
assert ac.has_gzip() and ac.has_snappy() and ac.has_lz4() and ac.has_zstd(), "aiokafka codecs missing"
print("setup: confluent-kafka %s (librdkafka %s), kafka-python ok, aiokafka ok" % (confluent_kafka.__version__, confluent_kafka.libversion()[0]))
PY
kcat -V 2>&1 | sed -n '4p' | sed 's/^/setup: kcat /'
