# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install sandbox demo test docs clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned to the CPU build on this disk: a bare `torch` pulls a multi-GB CUDA build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,lab,docs]"
	touch $(STAMP)

install: $(STAMP) sandbox

# Model-written commands run only inside bubblewrap (README, "Security model"). Installed where we
# can (root with apt-get); elsewhere the message says what to run.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; }; }; } || \
	  echo "warning: bubblewrap (bwrap) is missing and could not be installed: run 'sudo apt-get install bubblewrap'; the lab's terminal and code domains and executing verifiers need it"

# The lab's comparison at demo size (SFT and PivotRL from the bundled base).
demo: $(STAMP) sandbox
	$(BIN)/pivotrl lab run --preset demo -o runs/lab-demo

test: $(STAMP) sandbox
	$(BIN)/python -m pytest -q

# The documentation site into site/ (strict: a broken link or anchor, or a moved evidence file, fails it).
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) build dist site src/*.egg-info .pytest_cache
