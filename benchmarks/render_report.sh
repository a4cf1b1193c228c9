#!/usr/bin/env bash
# Render check: open the report page in headless Chromium and save a screenshot.
#   bash benchmarks/render_report.sh [results/biovid/report.html] [benchmarks/out/report.png]
# Needs Chromium (Debian: `apt-get install -y chromium`). Exits non-zero when the page fails
# to render: no screenshot, or one so small it is blank.
set -euo pipefail
page="${1:-results/biovid/report.html}"
shot="${2:-benchmarks/out/report.png}"
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [[ -z "$browser" ]]; then
    echo "chromium not found: apt-get install -y chromium" >&2
    exit 2
fi
[[ -f "$page" ]] || { echo "no such page: $page (run the report step first)" >&2; exit 2; }
mkdir -p "$(dirname "$shot")"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
# --no-sandbox: containers/CI run as root; the page is a local file we wrote.
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --user-data-dir="$profile" --window-size=1200,2400 \
    --screenshot="$(realpath -m "$shot")" "file://$(realpath "$page")" >/dev/null 2>&1 || true
size=$(stat -c %s "$shot" 2>/dev/null || echo 0)
if (( size < 20000 )); then
    echo "render check failed: screenshot $shot missing or blank ($size bytes)" >&2
    exit 1
fi
echo "render check ok: $shot ($size bytes)"
