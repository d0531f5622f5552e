# The two front doors: `make demo` and `make test`. Each works on a fresh machine with only
# Python 3.11: it builds .venv, installs normlab and what it needs, and (as root, where apt
# exists) Debian's Fashion-MNIST package so everything runs offline.

PYTHON ?= python3.11
VENV   ?= .venv
TORCH  ?= torch==2.13.0
EPOCHS ?= 20
NORMS  ?= bn,ln,gn,bn+l1
OUT    ?= runs/demo-fashion-mnist-$(EPOCHS)ep
BIN    := $(VENV)/bin
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: demo test data browser bench clean

$(BIN)/normlab: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found; pass PYTHON=python3.x (3.10 or newer)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# Pinned first: on CPU-only machines this is a small CPU build; unpinned pip would fetch CUDA.
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

data:
	@if [ ! -d $(FASHION_DIR) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's dataset-fashion-mnist"; \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; } || \
		echo "could not install dataset-fashion-mnist; normlab will try to download Fashion-MNIST"; \
	fi

# The report test renders report.html in headless Chromium; without it that one test skips.
browser:
	@if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium (for the report-rendering test)"; \
		apt-get install -y -q chromium >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } || \
		echo "could not install chromium; the report-rendering test will be skipped"; \
	fi

# Run again, it continues (or just re-reports) the same run instead of starting over.
demo: $(BIN)/normlab data
	$(BIN)/normlab compare --dataset fashion-mnist --norms $(NORMS) --epochs $(EPOCHS) --out $(OUT) \
		$$([ -f $(OUT)/results.json ] && echo --resume)

test: $(BIN)/normlab data browser
	$(BIN)/python -m pytest -q

bench: $(BIN)/normlab
	$(BIN)/normlab bench --json

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info src/*.egg-info
