#!/usr/bin/env bash
# Install what the napari viewer tests need beyond pip: an X server (Xvfb, which pytest-xvfb
# starts) and the X/xcb libraries Qt's xcb platform plugin loads. A no-op where they exist.
set -euo pipefail
PACKAGES="xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 libxcb-render-util0
libxcb-randr0 libxcb-shape0 libxcb-xkb1 libxcb-cursor0 libxkbcommon-x11-0 libdbus-1-3
libfontconfig1 libgl1 libegl1"
missing=()
for package in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if [ ${#missing[@]} = 0 ] || ! command -v dpkg-query >/dev/null; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
    echo "the napari viewer tests need Xvfb and Qt's X libraries: run as root" \
         "'apt-get install ${missing[*]}', then rerun make" >&2
    exit 1
fi
