# The two commands a fresh machine needs: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: demo test lint redis-server chromium mutate

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

# The chat page's browser client: socket.io-client, pinned in package-lock.json, never committed.
$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq npm)
	npm ci --no-audit --no-fund
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

test: lint redis-server chromium $(NODE_STAMP)
	$(BIN)/pytest

# Mutation testing (not part of `make test`): the envelope decoder, token verification, webhook
# signatures and idempotency, and the offset helpers and replay seam, each mutant against the fast
# direct-call tests listed under [tool.mutmut] in pyproject.toml. Of web/server.py only the replay
# seam is run. Prints the score per module (tests/mutation_score.py); `mutmut results` and
# `mutmut show NAME` for the survivors. The copy of the tree in mutants/ is git-ignored.
MUTANTS := "bus.envelope.*" "web.auth.*" "web.webhooks.*" \
	"web.server.xǁChatServerǁ_emit__mutmut_*" "web.server.xǁChatServerǁ_catch_up__mutmut_*" \
	"web.server.xǁChatServerǁ_replay__mutmut_*" "web.server.xǁChatServerǁ_start_replay__mutmut_*" \
	"web.server.xǁChatServerǁ_on_ack__mutmut_*" "web.server.xǁChatServerǁ_deliver__mutmut_*"

mutate: $(STAMP) redis-server
	$(BIN)/mutmut run --max-children 2 $(MUTANTS)
	$(BIN)/python -m tests.mutation_score
