# One way to set up, test and run: the README's commands, which .ci/run calls.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OUT    ?= out

.PHONY: setup test lint types unit contract demo bench bench-tta bench-onnx bench-service bench-load bench-train bench-precision bench-distill schemathesis clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

## setup: create .venv with the project and its pinned dependencies
setup: $(STAMP)

## test: lint, type-check, the whole suite (starts its own Redis when none answers) and the
## API contract check (schemathesis, 60 s, a fixed seed for the generated data)
test: lint types unit contract

lint: $(STAMP)
	$(BIN)/ruff check .

types: $(STAMP)
	$(BIN)/mypy distill jobs service worker training

unit: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

contract: $(STAMP)
	SCHEMATHESIS_SECONDS=60 SCHEMATHESIS_SEED=1 bash tests/contract/schemathesis.sh

## demo: `distill loop` end to end on synthetic data, through the real stack (TASK=keypoints|boxes)
TASK ?= keypoints
demo: $(STAMP)
	$(BIN)/python -m training.demo --task $(TASK) --out $(OUT)/demo-$(TASK)

## bench-tta: shared-box keypoint TTA vs naive vs floor, and pseudo-label quality
bench-tta: $(STAMP)
	$(BIN)/python benchmarks/tta_bench.py --out $(OUT)/bench-tta

## bench-onnx: an ONNX teacher (YOLO layout), standard preset vs its single pass, images/s
bench-onnx: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/onnx_teacher.py --out $(OUT)/bench-onnx

bench-service: $(STAMP)
	$(BIN)/python benchmarks/service_bench.py

## bench-load: concurrent clients, several workers, Redis restarted mid-run; lost/duplicated
bench-load: $(STAMP)
	$(BIN)/python benchmarks/load_test.py

## schemathesis: every schemathesis check against the real stack, a new seed each run (~3 min)
schemathesis: $(STAMP)
	bash tests/contract/schemathesis.sh

## bench-train: training iterations per second on this CPU (boxes, keypoints; one thread)
bench-train: $(STAMP)
	$(BIN)/python benchmarks/train_speed.py --data $(OUT)/speed-data

## bench-precision: fp32 against bf16 training (--precision), AP and CPU time, seeds 1 and 2
bench-precision: $(STAMP)
	$(BIN)/python benchmarks/precision_ap.py --out $(OUT)/precision

bench-distill: $(STAMP)
	$(BIN)/python benchmarks/distill_experiment.py

bench: bench-tta bench-service

clean:
	rm -rf $(OUT) .mypy_cache .ruff_cache .pytest_cache
