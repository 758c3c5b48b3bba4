#!/usr/bin/env bash
# Sets up everything zeroserve needs on a Debian machine (as root), then:
#   ./bootstrap.sh serve   packs examples/site and serves it (https://localhost:8443)
#   ./bootstrap.sh test    runs the whole test suite
#   ./bootstrap.sh setup   only sets up
# Every step is idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(
    python3 python3-venv python3-dev gcc make clang llvm lld openssl ca-certificates
    android-libboringssl-dev android-boringssl libnghttp2-dev
    curl nginx libnginx-mod-http-lua wrk nghttp2-client redis-server
    libnss3-tools chromium
    caddy linux-perf
)

install_apt() {
    local missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "bootstrap: installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # Debian starts these as system services; the tests and benchmarks start their own.
    for svc in nginx redis-server caddy; do
        if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
            systemctl stop "$svc" || true
        fi
    done
}

install_python() {
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install -q -U pip setuptools wheel cffi
    .venv/bin/python -m pip install -q -e '.[test,bench]'
}

setup() {
    install_apt
    install_python
}

cmd="${1:-setup}"
case "$cmd" in
    setup)
        setup
        ;;
    serve)
        setup
        mkdir -p build
        .venv/bin/zeroserve pack examples/site -o build/site.tar
        exec .venv/bin/zeroserve run build/site.tar
        ;;
    test)
        shift || true
        exec .ci/run "$@"
        ;;
    *)
        echo "usage: $0 serve|test|setup" >&2
        exit 2
        ;;
esac
