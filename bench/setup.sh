#!/bin/sh
# Install what the benchmark needs from Debian's packages: prosody (the reference
# server) and openssl (the bench's self-signed certificate). The bench starts its
# own Prosody process; a system instance the package may have started is stopped.
set -eu

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need=""
command -v prosody >/dev/null 2>&1 || need="$need prosody"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
command -v taskset >/dev/null 2>&1 || need="$need util-linux"
if [ -n "$need" ]; then
    $SUDO apt-get update -q
    # policy-rc.d 101 keeps the package from starting the system service.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $need
fi

# If the package started the system service anyway, stop exactly that process.
pidfile=/run/prosody/prosody.pid
if [ -f "$pidfile" ]; then
    pid="$(cat "$pidfile")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        $SUDO kill "$pid" || true
    fi
fi
