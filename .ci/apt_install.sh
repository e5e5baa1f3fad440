#!/usr/bin/env bash
# Install the Debian packages not yet installed, as root with apt-get; a no-op where all are
# (or where there is no dpkg). Without root, say what to install and exit 1.
#
#   bash .ci/apt_install.sh "WHAT NEEDS THEM" PACKAGE...
set -euo pipefail
what=$1
shift
command -v dpkg-query >/dev/null || exit 0
missing=()
for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
[ ${#missing[@]} = 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
    echo "$what need: run as root 'apt-get install ${missing[*]}', then rerun make" >&2
    exit 1
fi
