# TokenVault — the two set-up commands are `make run` and `make test`.
SWIFT     ?= swift
HOME_DIR  ?= .tokenvault
KEYS_DIR  ?= Keys
BIN       := .build/debug/tokenvault
APT_DEPS  := libsodium-dev libsqlite3-dev pkg-config

.PHONY: run test build deps clean bench

# Installs what a fresh Debian machine lacks (as root), or says what to install.
deps:
	@missing=""; for p in $(APT_DEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing system packages:$$missing — run: sudo apt-get install -y$$missing" >&2; exit 1; fi; \
	fi

build: deps
	$(SWIFT) build

# Builds, initialises the local default vault (data in .tokenvault/, keyring in Keys/), stores a demo
# token, and runs the daemon in the foreground on .tokenvault/tokenvault.sock (Ctrl-C stops it).
run: build
	@chmod 700 $(KEYS_DIR)
	@test -f $(HOME_DIR)/vault.db || $(BIN) init --home $(HOME_DIR) --keys $(KEYS_DIR)
	@test -f $(HOME_DIR)/policy.toml || printf '# who may read what over the socket (default deny)\n[[allow]]\nuid = %s\ntokens = ["demo/*"]\nproof = true\n' "$$(id -u)" > $(HOME_DIR)/policy.toml
	@printf 'EAAB-demo-token-%s\n' "$$(date +%s)" | $(BIN) put demo/ads --kind user --force --home $(HOME_DIR) --keys $(KEYS_DIR)
	@$(BIN) list --home $(HOME_DIR) --keys $(KEYS_DIR)
	@echo "--- serving on $(HOME_DIR)/tokenvault.sock; in another shell:"
	@echo "    $(BIN) get demo/ads --socket $(HOME_DIR)/tokenvault.sock"
	@echo "    $(BIN) audit query --home $(HOME_DIR) --keys $(KEYS_DIR)"
	@exec $(BIN) serve --home $(HOME_DIR) --keys $(KEYS_DIR)

# Serial: many tests block on sockets and child processes, and on 2 cores parallel tests can starve
# Swift's cooperative thread pool that the in-process daemons need.
test: deps
	$(SWIFT) test --disable-xctest --no-parallel

# Release build, the measuring instruments from ../shared/loadgen (built into .build-bench, never copied
# in), then scripts/bench.sh, which writes Docs/BENCHMARKS.md.
bench: deps
	$(SWIFT) build -c release
	$(MAKE) -s -C ../shared/loadgen OUT=$(CURDIR)/.build-bench/loadgen
	scripts/bench.sh

clean:
	rm -rf .build
