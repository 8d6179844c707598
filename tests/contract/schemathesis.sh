#!/usr/bin/env bash
# schemathesis against the real API (uvicorn, a real Redis, a registered teacher; no
# worker, so jobs stay queued): every check, a bounded time. schemathesis lives in its own
# virtual environment, not among the project's dependencies.
#   make schemathesis            (SCHEMATHESIS_SECONDS=120 by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.venv-schemathesis
SECONDS_BUDGET=${SCHEMATHESIS_SECONDS:-120}
if [ ! -x "$VENV/bin/schemathesis" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis>=4,<5"
fi
tmp=$(mktemp -d)
port=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
.venv/bin/python - "$tmp" <<'PY'
import sys
from pathlib import Path
from tests.helpers import make_synth, make_teacher
root = Path(sys.argv[1])
make_teacher(root / "teacher.pt", make_synth(root / "synth", labeled=3, unlabeled=0)["labeled"].keypoints_json)
PY
DISTILL_API_KEYS=schemathesis-key DISTILL_TEACHER="$tmp/teacher.pt" DISTILL_DATA_DIR="$tmp/data" \
    .venv/bin/distill serve --port "$port" > "$tmp/api.log" 2>&1 &
api=$!
trap 'kill $api 2>/dev/null; wait $api 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" > /dev/null && break
    sleep 0.2
done
# /readyz is left out: without a worker it answers 503 "not ready" by design, which
# schemathesis counts as a server error.
"$VENV/bin/schemathesis" --config-file tests/contract/schemathesis.toml \
    run "http://127.0.0.1:$port/openapi.json" \
    -H "Authorization: Bearer schemathesis-key" --max-time "$SECONDS_BUDGET" --workers 1 \
    --suppress-health-check too_slow --exclude-path /readyz
