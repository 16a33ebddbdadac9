#!/bin/sh
# Install the Debian packages the build and the tests need (the daemon's
# liburing and libnuma, the real programs run under LD_PRELOAD among them;
# systemd for systemd-analyze, man-db and groff-base for the unit and man
# page checks), if any is missing. Runs apt-get only when something is
# absent. systemd need not run: systemd-analyze verify works on files.
set -eu
pkgs="build-essential pkg-config libcmocka-dev liburing-dev libnuma-dev python3 git systemd man-db groff-base"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
echo "installing:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
