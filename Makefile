# Set-up and the two things you run most. Every target creates .venv on first use.
#   make smoke   train the smoke suite, then report on it (the main job)
#   make test    run the tests
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DB     ?= sqlite:///db/results.sqlite

.PHONY: smoke test check install clean

$(BIN)/bench: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# Keep an installed torch (e.g. a CUDA build); otherwise take the pinned CPU wheel, so pip
	# never resolves `torch>=2.1` to the newest CUDA build (several GB) on a CPU machine.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $(BIN)/bench

install: $(BIN)/bench

# Two 1-thread jobs at a time: on the 2-core CI machine that is faster than one 2-thread job, it does
# not collapse when something else runs, and 1 thread keeps the numbers those of the expected values
# in suites/smoke.toml (on a CPU the thread count changes the last bits; README "Speed").
SMOKE_RUN ?= --workers 2 --threads 1

smoke: install
	$(BIN)/bench run suites/smoke.toml --db $(DB) $(SMOKE_RUN)
	$(BIN)/bench report smoke --db $(DB)

# The gate: exit 1 if an expected value is off or a claim fails. The smoke claims rest on 2 seeds:
# decided on the reference CPU, but another CPU's rounding can spread a cell's seeds until a Welch
# test cannot decide them, so inconclusive is allowed here.
check: install
	$(BIN)/bench check suites/smoke.toml --db $(DB) --allow-inconclusive

test: install
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) db/results.sqlite* db/results.checkpoints db/checkpoints reports/*.md reports/*.html reports/figures
