# Two commands set up a fresh machine and run the project:
#   make demo   # installs into .venv if needed, then runs the main job on the synthetic world
#   make test   # installs if needed, then lint + the whole test suite
# TORCH_SPEC picks the PyTorch build (default: the pinned CPU wheel, see ci/install.sh).

VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PYPROJS := $(wildcard packages/*/pyproject.toml)

.PHONY: install test test-fast lint demo bench reproduce full-size clean

install: $(STAMP)

$(STAMP): ci/install.sh $(PYPROJS)
	test -x $(PY) || python3 -m venv $(VENV)
	bash ci/install.sh $(PY)
	touch $(STAMP)

lint: install
	bash ci/lint.sh $(PY)

test: install
	bash ci/lint.sh $(PY)
	bash ci/test.sh $(PY)

test-fast: install
	bash ci/test.sh $(PY) -m "not slow and not dist"

demo: install
	bash ci/demo.sh $(PY)

bench: install
	bash ci/bench.sh $(PY)

# one world, all five papers, one table + plot (see README "Reproduce: one table"); REPRODUCE_ARGS="--size small"
reproduce: install
	bash ci/reproduce.sh $(PY) $(REPRODUCE_ARGS)

# every README training + real-data evaluation at the released model sizes (docs/real_data.md; ~8 GB RAM, ~10 GB disk)
full-size: install
	$(PY) benchmarks/full_size.py --out full_size_out $(FULL_SIZE_ARGS)

clean:
	rm -rf demo_out bench_out reproduce_out full_size_out .pytest_cache
