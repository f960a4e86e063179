#!/bin/sh
# A font with Chinese glyphs for the OCR tests that render Chinese words (tests/text_photos.py
# finds it through fontconfig). Idempotent and quiet like install-browser.sh; needs root and
# the Debian package mirror.
set -eu
fc-list :lang=zh file | grep -q . && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-microhei >/dev/null
