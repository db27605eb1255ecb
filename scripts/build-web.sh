#!/usr/bin/env bash
# Builds the web console into build/web, which sproutd serves at / (see
# src/api/api_static.c): the page, its script and style from web/, and the
# front-end libraries (xterm.js and its fit addon, uPlot) copied from
# web/node_modules, installed by `npm ci` from web/package-lock.json when
# missing or older than the lockfile. Nothing is fetched at run time.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f web/node_modules/.package-lock.json ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
        echo "==> installing the web console's libraries (npm ci in web/)"
        (cd web && npm ci --no-audit --no-fund --loglevel=error --ignore-scripts)
fi
mkdir -p build
tmp=$(mktemp -d build/.web.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/vendor"
cp web/app.js web/app.css "$tmp/"
cp web/node_modules/@xterm/xterm/lib/xterm.js web/node_modules/@xterm/xterm/css/xterm.css \
        web/node_modules/@xterm/addon-fit/lib/addon-fit.js \
        web/node_modules/uplot/dist/uPlot.iife.min.js web/node_modules/uplot/dist/uPlot.min.css "$tmp/vendor/"
cp web/index.html "$tmp/" # last: make's target
rm -rf build/web
chmod 755 "$tmp"
mv "$tmp" build/web
trap - EXIT
