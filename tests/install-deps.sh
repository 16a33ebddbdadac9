#!/bin/sh
# Install the Debian packages the build and the tests need (the daemon's
# liburing and libnuma, the real programs run under LD_PRELOAD among them;
# systemd for systemd-analyze, man-db and groff-base for the unit and man
# page checks; clang and libclang-rt-dev, whose libclang_rt.fuzzer and
# sanitizer runtimes clang's -fsanitize=fuzzer,address,undefined needs,
# for the fuzz targets), if any is missing. Runs apt-get only when
# something is absent. systemd need not run: systemd-analyze verify works
# on files.
set -eu
pkgs="build-essential pkg-config libcmocka-dev liburing-dev libnuma-dev python3 git systemd man-db groff-base"
pkgs="$pkgs clang libclang-rt-dev"
# promtool, which checks hakctl's Prometheus metrics (test_hakctl.sh).
pkgs="$pkgs prometheus"
# google-pprof, which reads the heap profiler's output (test_prof).
pkgs="$pkgs google-perftools"
# xmllint, which parses malloc_info's XML (test_stats).
pkgs="$pkgs libxml2-utils"
# make valgrind. (make asan and make tsan need nothing more: gcc's libasan,
# libubsan and libtsan come with build-essential's gcc.)
pkgs="$pkgs valgrind"
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
