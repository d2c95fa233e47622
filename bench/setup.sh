#!/bin/sh
# Install what the benchmark needs from Debian's packages: prosody and ejabberd (the
# reference servers) and openssl (the bench's self-signed certificate). The bench
# starts its own server processes; system instances the packages may have started
# are stopped.
set -eu

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need=""
command -v prosody >/dev/null 2>&1 || need="$need prosody"
[ -x /usr/sbin/ejabberdctl ] || need="$need ejabberd"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
command -v taskset >/dev/null 2>&1 || need="$need util-linux"
if [ -n "$need" ]; then
    $SUDO apt-get update -q
    # policy-rc.d 101 keeps the package from starting the system service.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $need
fi

# stop_pidfile FILE: if a package started its system service anyway, stop exactly
# the process its pid file names.
stop_pidfile() {
    if [ -f "$1" ]; then
        pid="$(cat "$1")"
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            $SUDO kill "$pid" || true
        fi
    fi
}

stop_pidfile /run/prosody/prosody.pid
# Debian's ejabberd writes its VM's pid here (EJABBERD_PID_PATH in
# /etc/default/ejabberd); SIGTERM stops the VM cleanly. An epmd that start left
# behind is not ours to stop; the bench's node runs without epmd anyway.
stop_pidfile /run/ejabberd/ejabberd.pid
