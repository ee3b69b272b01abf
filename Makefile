# TokenVault — the two set-up commands are `make run` and `make test`.
SWIFT     ?= swift
HOME_DIR  ?= .tokenvault
KEYS_DIR  ?= Keys
BIN       := .build/debug/tokenvault
APT_DEPS  := libsodium-dev libsqlite3-dev pkg-config postgresql libcurl4-openssl-dev zlib1g-dev chromium
PREFIX    ?= /usr/local
DESTDIR   ?=
STATIC    := .build-static

.PHONY: run test build deps clean bench bench-delivery bench-audit fuzz test-asan test-tsan soak install deb static

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
# Swift's cooperative thread pool that the in-process daemons need. The store tests run against SQLite and
# against a private PostgreSQL cluster started for the run (scripts/with-postgres.sh; stopped at the end).
# Then the installed build: `make install` into a temporary DESTDIR and `make deb`, checked by
# scripts/test-install.sh (no toolchain path in ldd, completions, man page, units, package contents).
test: deps
	scripts/with-postgres.sh $(SWIFT) test --disable-xctest --no-parallel
	scripts/test-install.sh

# The release binary with the Swift runtime linked in (runs on a machine without the toolchain).
static: deps
	$(SWIFT) build -c release --static-swift-stdlib --scratch-path $(STATIC)

# `make install PREFIX=/usr/local DESTDIR=/tmp/stage`: binary, completions, man page, systemd units.
install: static
	scripts/install.sh $(STATIC)/release/tokenvault "$(DESTDIR)" "$(PREFIX)"

# `make deb`: a Debian package (dpkg-deb) in .build-static/deb/.
deb: static
	scripts/deb.sh $(STATIC)/release/tokenvault $(STATIC)/deb

# Release build, the measuring instruments from ../shared/loadgen (built into .build-bench, never copied
# in), then scripts/bench.sh, which writes Docs/BENCHMARKS.md.
bench: deps
	$(SWIFT) build -c release
	$(MAKE) -s -C ../shared/loadgen OUT=$(CURDIR)/.build-bench/loadgen
	scripts/bench.sh

# Only the delivery benchmarks (run, watch, the credential socket): replaces that section of Docs/BENCHMARKS.md.
bench-delivery: deps
	$(SWIFT) build -c release
	R=$$(mktemp); T=$(CURDIR)/.build/release/tokenvault D=$${BENCH_DIR:-/tmp/tokenvault-bench} R=$$R scripts/bench-delivery.sh && \
	python3 scripts/bench_report.py $$R --delivery-only | python3 scripts/splice_section.py Docs/BENCHMARKS.md "## Delivery"; rm -f $$R

# Only the auditor's benchmarks (10M-record queries beside grep, the report, the index's cost): replaces that section.
bench-audit: deps
	$(SWIFT) build -c release
	$(MAKE) -s -C ../shared/loadgen OUT=$(CURDIR)/.build-bench/loadgen
	R=$$(mktemp); T=$(CURDIR)/.build/release/tokenvault L=$(CURDIR)/.build-bench/loadgen D=$${BENCH_DIR:-/tmp/tokenvault-bench} R=$$R \
	  scripts/bench-audit.sh && \
	python3 scripts/bench_report.py $$R --audit-only | python3 scripts/splice_section.py Docs/BENCHMARKS.md "## The auditor's side"; rm -f $$R

clean:
	rm -rf .build $(STATIC)

# libFuzzer over every parser of untrusted bytes (request lines, policy files, audit lines, import files),
# FUZZ_SECONDS each, from the seeds in Fuzz/corpus (new inputs go to .build-fuzz/corpus, never the repo).
FUZZ_SECONDS ?= 60
FUZZERS      := FuzzRequest FuzzPolicy FuzzAuditLine FuzzImport
fuzz: deps
	@for f in $(FUZZERS); do \
	  TOKENVAULT_FUZZ=1 $(SWIFT) build --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer --product $$f || exit 1; \
	done
	@mkdir -p .build-fuzz/crashes
	@for f in $(FUZZERS); do \
	  mkdir -p .build-fuzz/corpus/$$f; echo "--- $$f, $(FUZZ_SECONDS) s"; \
	  SWIFT_BACKTRACE=enable=no .build-fuzz/debug/$$f -max_total_time=$(FUZZ_SECONDS) -timeout=5 -rss_limit_mb=2048 \
	    -print_final_stats=1 -artifact_prefix=.build-fuzz/crashes/$$f- .build-fuzz/corpus/$$f Fuzz/corpus/$$f \
	    > .build-fuzz/$$f.log 2>&1; rc=$$?; \
	  grep -E "^(Done|stat::number_of_executed_units)" .build-fuzz/$$f.log; \
	  if [ $$rc -ne 0 ]; then grep -E "ERROR|Fatal|Assertion|SUMMARY|Test unit written" .build-fuzz/$$f.log; \
	    echo "fuzz: $$f failed (exit $$rc); the input is in .build-fuzz/crashes/" >&2; exit 1; fi; \
	done
	@echo "fuzz: no crash in $(FUZZERS)"

# The whole suite under AddressSanitizer and ThreadSanitizer, each in a build folder of its own.
# (Leak checks off: the CLI child processes the tests run exit without freeing what Swift still holds.)
test-asan: deps
	ASAN_OPTIONS="detect_leaks=0 $(ASAN_OPTIONS)" scripts/with-postgres.sh $(SWIFT) test --disable-xctest --no-parallel --sanitize=address --scratch-path .build-asan

test-tsan: deps
	TSAN_OPTIONS="halt_on_error=1 $(TSAN_OPTIONS)" scripts/with-postgres.sh $(SWIFT) test --disable-xctest --no-parallel --sanitize=thread --scratch-path .build-tsan

# A bounded 10-minute soak (SOAK_SECONDS): 64 clients, a put every second; memory, descriptors and p99
# must stay flat. Appends its figures to Docs/BENCHMARKS.md.
soak: deps
	$(SWIFT) build -c release
	$(MAKE) -s -C ../shared/loadgen OUT=$(CURDIR)/.build-bench/loadgen
	scripts/soak.sh
