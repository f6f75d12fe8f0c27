#!/usr/bin/env bash
# Renders a bluegreen report (report.html) to a PNG with headless Chromium, so a person can
# look at it without a browser at hand. Not run in CI.
#
#   scripts/render-report.sh REPORT.html OUT.png [WIDTH]
#
# Needs Debian's `chromium` (apt-get install chromium); set CHROMIUM to use another binary.
# The page is opened as a local file with networking off (a report needs nothing else).
# HEIGHT=px sets the window height when the guess cuts the page short.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
    echo "usage: $0 REPORT.html OUT.png [WIDTH]" >&2
    exit 2
fi
html=$1
out=$2
width=${3:-1100}

chromium=${CHROMIUM:-}
if [[ -z $chromium ]]; then
    for c in chromium chromium-browser google-chrome; do
        if command -v "$c" >/dev/null; then chromium=$c; break; fi
    done
fi
if [[ -z $chromium ]]; then
    echo "no chromium found: apt-get install chromium (or set CHROMIUM)" >&2
    exit 2
fi
if [[ ! -f $html ]]; then
    echo "no such file: $html" >&2
    exit 2
fi

# Headless Chromium shoots the window, not the page: make the window about as tall as the
# page (table rows, charts, list items; HEIGHT overrides).
rows=$(grep -o '<tr' "$html" | wc -l)
charts=$(grep -o '<svg' "$html" | wc -l)
items=$(grep -o '<li>' "$html" | wc -l)
height=${HEIGHT:-$(( 700 + rows * 31 + charts * 215 + items * 44 ))}
(( height > 30000 )) && height=30000

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
abs=$(cd "$(dirname "$html")" && pwd)/$(basename "$html")
case $out in /*) ;; *) out=$PWD/$out ;; esac

# --no-sandbox: containers and root shells have no user namespaces for the sandbox.
timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --user-data-dir="$profile" --no-first-run --disable-extensions \
    --proxy-server='127.0.0.1:9' --proxy-bypass-list='<-loopback>' \
    --window-size="$width,$height" --screenshot="$out" "file://$abs" 2>/dev/null
echo "wrote $out (${width}x${height})"
