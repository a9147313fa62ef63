#!/usr/bin/env bash
# Make the napari plugin tests (tests/napari, marker `napari`) runnable on this machine.
#
#   .ci/napari-up.sh [PYTHON]     # idempotent; PYTHON defaults to .venv/bin/python
#
# Installs the `napari` extra and pytest-qt into the virtual environment when they are
# missing, and, with root and apt (Debian/Ubuntu), Xvfb and the xcb/OpenGL libraries that
# Qt 6's xcb platform plugin loads (the list napari's own CI installs). napari draws on an
# OpenGL canvas, which Qt's `offscreen` platform cannot give, so a headless run needs Xvfb.
# When any part cannot be set up it prints one line on stderr and exits 1: `make test`
# goes on and the napari viewer tests then skip.
set -uo pipefail

PY=${1:-.venv/bin/python}
APT_PACKAGES=(xvfb libgl1 libegl1 libopengl0 libdbus-1-3 libxkbcommon-x11-0 libxcb-icccm4
    libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0
    libxcb-xinput0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libfontconfig1)

fail() {
    echo "napari-up: $*" >&2
    exit 1
}

if ! "$PY" -c "import napari, pytestqt" 2>/dev/null; then
    "$PY" -m pip install -q -e ".[napari]" "pytest-qt>=4.4,<5" >/tmp/fluoden-napari-pip.log 2>&1 \
        || fail "pip could not install the napari extra (log: /tmp/fluoden-napari-pip.log)"
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    [[ $(id -u) == 0 ]] || fail "not root: cannot apt-get install ${missing[*]}"
    command -v apt-get >/dev/null || fail "no apt-get: install Xvfb and the xcb libraries by hand"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; } \
        || fail "apt-get could not install ${missing[*]}"
fi
exit 0
