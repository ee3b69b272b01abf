# TokenVault — the two set-up commands are `make run` and `make test`.
SWIFT     ?= swift
HOME_DIR  ?= .tokenvault
KEYS_DIR  ?= Keys
BIN       := .build/debug/tokenvault
APT_DEPS  := libsodium-dev libsqlite3-dev pkg-config

.PHONY: run test build deps clean

# Installs what a fresh Debian machine lacks (as root), or says what to install.
deps:
	@missing=""; for p in $(APT_DEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing system packages:$$missing — run: sudo apt-get install -y$$missing" >&2; exit 1; fi; \
	fi

build: deps
	$(SWIFT) build

# Builds, initialises the local default vault (data in .tokenvault/, keyring in Keys/) and shows it working.
run: build
	@chmod 700 $(KEYS_DIR)
	@test -f $(HOME_DIR)/vault.db || $(BIN) init --home $(HOME_DIR) --keys $(KEYS_DIR)
	@echo "--- demo: put, get and list on the local vault ($(HOME_DIR), keyring $(KEYS_DIR)/)"
	@printf 'EAAB-demo-token-%s\n' "$$(date +%s)" | $(BIN) put demo/ads --kind user --force --home $(HOME_DIR) --keys $(KEYS_DIR)
	@printf 'get demo/ads -> '; $(BIN) get demo/ads --home $(HOME_DIR) --keys $(KEYS_DIR); echo
	@$(BIN) list --home $(HOME_DIR) --keys $(KEYS_DIR)

test: deps
	$(SWIFT) test --disable-xctest

clean:
	rm -rf .build
