#!/usr/bin/env bash
# Install what the napari viewer tests need beyond pip: an X server (Xvfb, which pytest-xvfb
# starts) and the X/xcb libraries Qt's xcb platform plugin loads. A no-op where they exist.
set -euo pipefail
PACKAGES="xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 libxcb-render-util0
libxcb-randr0 libxcb-shape0 libxcb-xkb1 libxcb-cursor0 libxkbcommon-x11-0 libdbus-1-3
libfontconfig1 libgl1 libegl1"
bash "$(dirname "$0")/apt_install.sh" "the napari viewer tests (Xvfb, Qt's X libraries)" $PACKAGES
