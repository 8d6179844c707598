#!/usr/bin/env bash
# schemathesis against the real stack (uvicorn, one RQ worker, a real Redis, a registered
# teacher): every check, every operation, a bounded time. schemathesis lives in its own
# virtual environment, not among the project's dependencies.
#   make schemathesis   120 s (SCHEMATHESIS_SECONDS), a new random seed each run
#   make contract       60 s, SCHEMATHESIS_SEED=1 (part of `make test`; the seed fixes the
#                       generated data, not how many cases fit in the time or the job ids)
#
# Before the run, seed.py makes what the path parameters name (a finished job in a
# dataset, a job to delete) and writes their ids as schemathesis dictionaries: about
# half the generated ids are real ones, so the operations behind an id are tested past
# their 404, and the other half stay random (malformed and unknown ids).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.venv-schemathesis
# Pinned: the generated configuration's dictionaries need a recent 4.x, and a new
# release must not change what CI checks unannounced.
VERSION=4.32.5
SECONDS_BUDGET=${SCHEMATHESIS_SECONDS:-120}
SEED=()
if [ -n "${SCHEMATHESIS_SEED:-}" ]; then SEED=(--seed "$SCHEMATHESIS_SEED"); fi
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "version $VERSION\$"; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
fi
tmp=$(mktemp -d)
api=
trap '[ -n "$api" ] && { kill $api 2>/dev/null; wait $api 2>/dev/null; }; rm -rf "$tmp"' EXIT
port=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
.venv/bin/python - "$tmp" <<'PY'
import sys
from pathlib import Path
from tests.helpers import make_synth, make_teacher
root = Path(sys.argv[1])
synth = make_synth(root / "synth", labeled=3, unlabeled=0)["labeled"]
make_teacher(root / "teacher.pt", synth.keypoints_json)
PY
# One torch thread: the worker shares this machine with the API and schemathesis.
DISTILL_API_KEYS=schemathesis-key DISTILL_TEACHER="$tmp/teacher.pt" DISTILL_DATA_DIR="$tmp/data" \
    DISTILL_TORCH_THREADS=1 .venv/bin/distill serve --port "$port" --with-worker > "$tmp/api.log" 2>&1 &
api=$!
.venv/bin/python tests/contract/seed.py "http://127.0.0.1:$port" schemathesis-key \
    "$tmp/synth/images/labeled" tests/contract/schemathesis.toml "$tmp/schemathesis.toml" \
    || { tail -30 "$tmp/api.log"; exit 1; }
"$VENV/bin/schemathesis" --config-file "$tmp/schemathesis.toml" \
    run "http://127.0.0.1:$port/openapi.json" \
    -H "Authorization: Bearer schemathesis-key" --max-time "$SECONDS_BUDGET" --workers 1 \
    --suppress-health-check too_slow ${SEED[@]+"${SEED[@]}"} \
    || { echo "--- the service's log (last 40 lines)"; tail -40 "$tmp/api.log"; exit 1; }
