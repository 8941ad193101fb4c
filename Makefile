# Set-up and the two entry points; see README.md.
VENV ?= .venv
PY := $(VENV)/bin/python
export DVC_NO_ANALYTICS ?= 1

.PHONY: setup test test-fast repro repro-cpu seeds mutation
setup: $(VENV)/.installed

# torch/torchvision are pinned here, not in pyproject.toml: pip would otherwise be free to pick any
# build satisfying the ranges there (the pinned pair is the one this project is tested with).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Lint, then every test (tests/: one folder per package of pipeline/, tests/stages/ end to end), one
# pytest-xdist worker per core (each test module whole on one worker: --dist loadfile, in pyproject.toml).
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q -n auto

# Lint and the unit tests only: no test marked e2e (dvc CLI, torchrun, killed processes) or slow.
test-fast: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q -n auto -m "not e2e and not slow"

repro: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" dvc repro

# The CPU settings (README, Running on a CPU), each value here only: the real 619-pair subset at 128 px,
# ~15 min on 2 cores. On a CPU-only machine the validate stage stops the defaults and names this target.
# CPU_DATA: another copy of the subset (or of the pets).
CPU_DATA ?= ../shared/data/oxford-iiit-pet-mini
CPU_SETTINGS = -S data.source=$(CPU_DATA) -S image_size=128 -S epochs=40 -S batch_size=8 -S augment=flip \
	-S unet.base_channels=16 -S init=kaiming -S warmup_epochs=1 -S resnet34_unet.zero_init_residual=true
# With device=cpu, asked for: the guard, which names this target, lets it through on a slow or busy CPU too.
repro-cpu: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" dvc exp run $(CPU_SETTINGS) -S device=cpu

# Seeds (docs/training.md, "Seeds: how large is the noise"): both models trained once per seed of SEEDS (DVC
# queues one experiment per value of the comma list) with the settings SETS (e.g. SETS="$(CPU_SETTINGS)"), JOBS at
# a time (1: a training uses every core); waits for them, then prints each model's mean and spread of test Dice
# and saves them where petseg diff reads them. Queued runs execute in copies under .dvc/tmp/exps: a data.source
# outside the repository must be an absolute path there.
SEEDS ?= 0,1,2
JOBS ?= 1
SETS ?=
SEEDS_QUEUED := .dvc/tmp/seeds-queued.txt
seeds: setup
	mkdir -p $(dir $(SEEDS_QUEUED))
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" dvc exp run --queue -S 'seed=$(SEEDS)' $(SETS) > $(SEEDS_QUEUED)
	cat $(SEEDS_QUEUED)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" dvc queue start -j $(JOBS)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pipeline.cli.queue $(SEEDS_QUEUED)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" petseg seeds --save

# Mutation testing of metrics, losses, data, dataset and training with mutmut: slow (see
# docs/mutation.md), so not part of `test` or CI. Results are cached in mutants/ (delete it for a
# fresh run); MUTMUT_ARGS="'pipeline.evaluate.metrics*'" runs only some mutants again.
MUTMUT_CHILDREN ?= 1
mutation: setup
	test -x $(VENV)/bin/mutmut || $(PY) -m pip install -q -e '.[dev,mutation]'
	OMP_NUM_THREADS=1 PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/mutmut run --max-children $(MUTMUT_CHILDREN) $(MUTMUT_ARGS)
	$(VENV)/bin/mutmut results
	$(VENV)/bin/mutmut export-cicd-stats && cat mutants/mutmut-cicd-stats.json
