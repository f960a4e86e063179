#!/bin/sh
# Headless Chromium for tests/test_ui_browser.py (Playwright drives it via executable_path;
# `playwright install` downloads are not possible on CI). Idempotent and quiet: does nothing
# when /usr/bin/chromium is already there. Needs root and the Debian package mirror.
set -eu
[ -x /usr/bin/chromium ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
/usr/bin/chromium --headless --no-sandbox --disable-gpu --version >/dev/null
