# The two commands a fresh machine needs: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: demo test lint redis-server chromium haproxy cluster cluster-stop mutate

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

# The chat page's browser client: socket.io-client, pinned in package-lock.json, never committed. Copied
# into web/static/vendor/ (gitignored), where the package build (setup.py) puts it for wheels and sdists.
$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq npm)
	npm ci --no-audit --no-fund
	mkdir -p web/static/vendor
	cp node_modules/socket.io-client/dist/socket.io.min.js node_modules/socket.io-client/dist/socket.io.min.js.map \
		web/static/vendor/
	touch $(NODE_STAMP)

demo: $(STAMP) $(NODE_STAMP)
	$(BIN)/switchboard demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The tests start their own redis-server processes on free loopback ports.
redis-server:
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)

# The browser tests drive Debian's chromium with Playwright (a dev dependency); no browser download.
chromium:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The local cluster (deploy/local/) and its end-to-end test put HAProxy in front of three replicas.
haproxy:
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || (apt-get update -qq && apt-get install -y -qq haproxy)

test: lint redis-server chromium haproxy $(NODE_STAMP)
	$(BIN)/pytest

# Redis, three replicas and HAProxy on loopback ports; Ctrl-C or `make cluster-stop` stops them.
cluster: $(STAMP) $(NODE_STAMP) redis-server haproxy
	$(BIN)/python deploy/local/cluster.py

cluster-stop:
	@if [ -f deploy/local/.cluster.pid ]; then kill -TERM "$$(cat deploy/local/.cluster.pid)"; else echo "no cluster running"; fi
# Mutation testing (not part of `make test`): the envelope decoder, token verification, webhook
# signatures and idempotency, and the offset helpers and replay seam, each mutant against the fast
# direct-call tests listed under [tool.mutmut] in pyproject.toml. Prints the score per module (tests/mutation_score.py); `mutmut results` and
# `mutmut show NAME` for the survivors. The copy of the tree in mutants/ is git-ignored.
MUTANTS := "bus.envelope.*" "web.auth.*" "web.webhooks.*" "web.signatures.*" "web.mailbox.*"

mutate: $(STAMP) redis-server
	$(BIN)/mutmut run --max-children 2 $(MUTANTS)
	$(BIN)/python -m tests.mutation_score
