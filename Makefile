# Vivify — the two commands: `make run` (set up everything, start the main job) and
# `make test` (set up, run the tests). Every target is idempotent; stamps skip finished work.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
APT_PACKAGES := espeak-ng sox chromium portaudio19-dev
# Training audio beyond espeak-ng (issue 13): festival voices with their own segment times and
# klettres-data's human recordings. --no-install-recommends: festival recommends
# festvox-kallpc16k, a CMU voice kept out of training for the outside check. The tests need
# the first line only (~80 MB); `make data` installs them all (~490 MB, Russian alone 237 MB).
DATA_PACKAGES_TEST := festival festvox-kdlpc16k festvox-italp16k klettres-data
DATA_PACKAGES := $(DATA_PACKAGES_TEST) festvox-itapc16k festvox-czech-ph festvox-czech-dita \
	festvox-czech-krb festvox-czech-machac festvox-ru festvox-suopuhe-lj festvox-suopuhe-mv \
	festvox-ca-ona-hts festvox-hi-nsk festival-hi festvox-mr-nsk festival-mr festvox-te-nsk festival-te
# The SFU viewers go through (issue 18): the tests and bench-cluster start a loopback-only Janus
# with VideoRoom and the HTTP transport only (streamer/sfu/launcher.py; 13 MB with its libraries).
SFU_PACKAGES := janus
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup run test lint typecheck demo clean system-deps bench bench-quick bench-soak bench-stages bench-browser bench-compare bench-loopback bench-loopback-quick fuzz

setup: system-deps $(STAMPS)/venv $(STAMPS)/models $(STAMPS)/avatar

# Debian packages with apt's recommends off (see DATA_PACKAGES), if any is missing.
define apt_no_recommends
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends $$missing >/dev/null; \
	fi
endef

.PHONY: data-deps data-deps-test sfu-deps
data-deps-test:
	$(call apt_no_recommends,$(DATA_PACKAGES_TEST))

sfu-deps:
	$(call apt_no_recommends,$(SFU_PACKAGES))

data-deps:
	$(call apt_no_recommends,$(DATA_PACKAGES))

# Debian packages: espeak-ng is the demo voice and makes the test speech; sox checks audio;
# chromium runs the browser end-to-end tests (driven by Playwright, never its own browser);
# portaudio19-dev lets pyaudio build for `vivify talk`.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMPS)/venv: pyproject.toml setup.py
	@mkdir -p $(STAMPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,talk,livekit,pipecat]'
	@touch $@

# Face model files, taken from the mediapipe 0.10.21 wheel on PyPI and checked by sha256.
$(STAMPS)/models: $(STAMPS)/venv engines/avatar/model_store.py
	$(PY) -m vivify.streamer.cli fetch-models
	@touch $@

$(STAMPS)/avatar: $(STAMPS)/models
	$(PY) -m vivify.streamer.cli prepare default >/dev/null
	@touch $@

# The main job: the streaming server with the default avatar (prints its URL).
run: setup
	$(PY) -m vivify.streamer.cli serve $(SERVE_FLAGS)

# An offline demo clip (the default avatar speaking an espeak-ng sentence) in out/demo.mp4.
demo: setup
	$(PY) -m vivify.streamer.cli demo -o out/demo.mp4 --progress

# The tests also need the export side (torch CPU wheel, onnx, scipy; ray for the cluster tests):
# CI trains a tiny generator
# config for a few steps and checks the ONNX export, so the recipe stays honest.
test: setup $(STAMPS)/export data-deps-test sfu-deps
	$(PY) -m pytest -q

# mypy sees the ``vivify`` namespace through links in build/typing (see pyproject.toml).
TYPING_ROOTS := streamer engines export models client_web
lint: $(STAMPS)/venv
	@mkdir -p build/typing/vivify
	@for r in $(TYPING_ROOTS); do ln -sfn ../../../$$r build/typing/vivify/$$r; done
	$(VENV)/bin/ruff check streamer engines export bench tests examples setup.py
	$(VENV)/bin/mypy

typecheck: lint

clean:
	rm -rf $(STAMPS) out build *.egg-info

# Stage timings on ONE core: audio features, baseline driver, learned generator at batch 1/4/16
# on every runtime present, renderer (+ its exported graph if built), VP8/H.264 encode, offline render.
bench-stages: setup
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 taskset -c 0 $(PY) bench/stages.py

# The streaming server end to end over loopback WebRTC (real server process + aiortc peers):
# onset latency, session start, fps, A/V offset, interrupt, capacity. ~3–4 min; JSON in bench/results/.
bench-loopback: setup
	$(PY) bench/loopback.py

bench-loopback-quick: setup
	$(PY) bench/loopback.py --quick

# Everything above in one run (≤ 10 min; --quick ≤ 2 min) with progress, one JSON and a markdown
# report with plots in bench/results/run-<time>-<mode>/; a full run also refreshes
# bench/results/latest/. A failing stage is named and the rest still runs; exit 1 at the end.
bench: setup
	$(PY) -m bench.run

bench-quick: setup
	$(PY) -m bench.run --quick

# A hostile client against a real `vivify serve` on loopback (issue 15): every case bounded,
# ~1 min; one line per case, JSON + server log in bench/results/fuzz-latest.*; exit 1 on a failure.
fuzz: setup
	$(PY) -m bench.fuzz

# Server memory over 10 minutes of sessions opening and closing (not part of `make bench`).
bench-soak: setup
	$(PY) -m bench.soak

# One `vivify serve` vs `vivify cluster` (one node per core on a local Ray), loopback WebRTC:
# sessions held at 25 fps, spread, spill-over, recovery after a node kill, viewers via Janus
# (issue 18). ~5 min; JSON in bench/results/cluster-<time>.json. Installs Ray if missing.
.PHONY: bench-cluster
bench-cluster: setup sfu-deps
	@$(PY) -c "import ray" 2>/dev/null || $(PY) -m pip install -q -e '.[cluster]'
	$(PY) -m bench.cluster $(CLUSTER_FLAGS)

# Browser-side figures: click → first frame (median of 5) and 30 s of call mode from getStats().
bench-browser: setup
	$(PY) bench/browser.py

# Two versions side by side in one run, alternating, as ratios: make bench-compare A=<sha> B=<sha>
bench-compare: setup
	@test -n "$(A)" -a -n "$(B)" || { echo "usage: make bench-compare A=<sha> B=<sha>"; exit 2; }
	$(PY) bench/compare.py $(A) $(B)

# --- learned generator (issue 3) ---
# The recipe: corpus → teacher → distilled student → ONNX in models/ → evaluation report.
# Needs torch (the export extra: torch==2.13.0 is the local CPU wheel; never loosen the pin).
GEN := artifacts/generator
.PHONY: data train distill export eval export-deps

export-deps: setup $(STAMPS)/export

$(STAMPS)/export: $(STAMPS)/venv
	$(PY) -m pip install -q -e '.[dev,talk,livekit,pipecat,export,cluster]'
	@touch $@

data: export-deps data-deps
	$(PY) -m vivify.export.data.build --out $(GEN)/corpus

# One core each (the other is left to the machine's other jobs). Fixed step counts, so a run is
# reproducible from its seed; WINDOW and LOOKAHEAD are the shipped model's W and L
# (docs/generator.md, revision 4: W = 1, L = 1 keeps onset → mouth within 250 ms). Since
# revision 5 the model does not see its cache's mouth (GeneratorConfig.mouth_cache); since
# revision 6 the calibration samples the mouth with noise × 0.5 (export/calibrate.py's default).
WINDOW ?= 1
LOOKAHEAD ?= 1
RECIPE_FLAGS := --closure-boost 0.3 --seed 0
train: export-deps
	$(PY) -m vivify.export.train --corpus $(GEN)/corpus --out $(GEN)/teacher.pt --threads 1 --steps 18000 --max-minutes 0 --lookahead $(LOOKAHEAD) --window $(WINDOW) $(RECIPE_FLAGS)

distill: export-deps
	$(PY) -m vivify.export.distill --teacher $(GEN)/teacher.pt --corpus $(GEN)/corpus --out $(GEN)/student.pt --threads 1 --pairs 8192 --steps 1500 --max-minutes 0 $(RECIPE_FLAGS)

# ONNX into models/, then the mouth's calibration fitted on training clips (export/calibrate.py).
export: export-deps
	$(PY) -m vivify.export.onnx_export --student $(GEN)/student.pt --out models
	$(PY) -m vivify.export.calibrate --manifest models/motion_generator.json --corpus $(GEN)/corpus

# The corpus's own evaluation (jaw, closures, sung vowels, drift), then the held-out sources
# scored on the rendered video (export/holdout_eval.py: 16 clips a source, ~15 min here).
eval: export-deps
	$(PY) -m vivify.export.evaluate --corpus $(GEN)/corpus --teacher $(GEN)/teacher.pt --out bench/results
	$(PY) -m vivify.export.holdout_eval --out bench/results/holdout

# --- GPU engines (issue 7) ---
# Renderer graph → ONNX, then a golden clip (CPU renderer = reference, PSNR ≥ 40 dB per frame) and
# Polygraphy's Comparator over torch, ONNX Runtime and any GPU runtime present. Report and contact
# sheet in artifacts/parity/ (see docs/engines.md for the tolerances).
.PHONY: parity
parity: export-deps
	OMP_NUM_THREADS=1 $(PY) -m vivify.export.parity --out artifacts/parity

# Full per-frame pipeline (generator → renderer graph → uint8 frames on the host) vs batch, on the
# best runtime present (torch CUDA + CUDA graphs on a GPU host); JSON in bench/results/.
.PHONY: bench-pipeline
bench-pipeline: export-deps
	$(PY) -m bench.pipeline $(PIPELINE_FLAGS)

# What a lent GPU host needs (renderer graph + the default avatar's bank in artifacts/engines),
# then on that host: bash bench/gpu_check.sh (docs/engines.md, "make gpu-check").
.PHONY: gpu-bundle gpu-check
gpu-bundle: export-deps
	bash bench/gpu_check.sh --prepare

gpu-check: gpu-bundle
	PYTHON=$(PY) bash bench/gpu_check.sh
