PYTHON ?= python3

.PHONY: install test test-all e2e run

install:
	$(PYTHON) -m pip install -e '.[test,tune,mpnet]'

## The test suite CI runs (slow tests run in their short configuration).
test:
	$(PYTHON) -m pytest -q

e2e:
	$(PYTHON) -m pytest -q e2e
