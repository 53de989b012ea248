# The two README commands:  `make run` (set up + main job)  and  `make test`.
# VENV may live outside the clone (CI caches it there, keyed on pyproject.toml).
VENV ?= .venv
KEY := $(shell sha256sum pyproject.toml | cut -c1-12)
STAMP := $(VENV)/.fgsd-deps-$(KEY)
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: run smoke study seeds test test-all test-slurm setup dvc-yaml clean

run: setup                 ## the main job: every stage on the default preset (params.yaml)
	snakemake --cores all

smoke: setup               ## the whole DAG on the smoke preset (minutes)
	snakemake --cores all --configfile config/smoke.yaml

study: setup               ## the study: conditional gain vs classes and crop scale (not in the main job; 80-120 min)
	snakemake --cores all study

seeds: setup               ## only Figs 4-5's numbers on every training seed's models (the main job makes them too)
	snakemake --cores all seeds

test: setup                ## lint, then the default test suite (includes the smoke chain end to end)
	ruff check src tests benchmarks
	pytest

test-all: setup            ## also the slow tests (Debian downloads) and the SLURM check
	pytest -m ""

test-slurm: setup          ## the SLURM profile on a real one-node SLURM (root + apt-get; ~5 min)
	pytest -m slurm -s

dvc-yaml: setup            ## regenerate dvc.yaml from the Snakemake DAG
	python -m fgsd.dvcgen

setup: $(STAMP)
	@python -c "import fgsd, pathlib, sys; sys.exit(pathlib.Path(fgsd.__file__).parent != pathlib.Path('src/fgsd').resolve())" 2>/dev/null \
	  || pip install -q --no-deps -e .

$(STAMP):                  # its name carries the hash of pyproject.toml, so no mtime check
	python3 -m venv $(VENV)
	pip install -q -e '.[test]'
	touch $@

clean:                     ## remove outputs (not the venv or the data cache)
	rm -rf results .snakemake
