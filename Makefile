# The README's two commands: `make demo` and `make test`. Each sets up .venv first (idempotent).
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: env demo test bench clean-env

env:
	@bash tools/setup_env.sh

demo: env
	$(PY) tools/demo.py

test: env
	$(PY) -m pytest -q -n auto --dist loadfile $(PYTEST_ARGS)

bench: env
	$(PY) benchmarks/run.py

clean-env:
	rm -rf .venv
