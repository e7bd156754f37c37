# The two commands of the README. Both do all set-up on a fresh Debian 12 machine (root).
SHELL := /bin/bash
CARGO ?= $(shell command -v cargo 2>/dev/null || echo $(HOME)/.cargo/bin/cargo)

.PHONY: demo demo-ha test deps build install check bench bench-load bench-smoke clean

deps:
	@bash scripts/install-deps.sh
	@bash scripts/hugepages.sh

build: deps
	$(CARGO) build --release --bins

## make install: privlinkd, privlinkctl, /etc/privlink/privlink.toml (from the embedded
## default, never over an existing file) and privlinkd.service (systemctl enable --now
## privlinkd starts it); PREFIX=/usr/local, DESTDIR= as usual
PREFIX ?= /usr/local
install: build
	bash scripts/install.sh --prefix $(PREFIX) $(if $(DESTDIR),--destdir $(DESTDIR))

## make demo: the appliance on its embedded default, between two namespaces, until Ctrl-C
demo: build
	bash scripts/demo.sh target/release/privlinkd

## make demo-ha: an HA pair (nodes a and b) on the embedded default between the same two
## namespaces, sharing its configuration through one etcd; a keep-alive connection
## survives kill -9 of the active node; until Ctrl-C
demo-ha: build
	bash scripts/demo-ha.sh target/release/privlinkd

## make test: every test (unit, property, DPDK integration, end to end in namespaces)
test: deps
	$(CARGO) build --release --bins
	CARGO=$(CARGO) PRIVLINKD=$(CURDIR)/target/release/privlinkd bash scripts/test.sh

## make bench: the whole-appliance benchmark (scripts/bench.sh; BENCH_ARGS="--runs 5 …")
## and the criterion benches of the hot functions. Not part of `make test`.
bench: deps
	$(CARGO) build --release --bins
	CARGO=$(CARGO) bash scripts/bench.sh --no-build $(BENCH_ARGS)
	$(CARGO) bench -p appliance

## make bench-load: testpmd txonly -> privlinkd -> testpmd rxonly (scripts/bench-load.sh;
## LOAD_ARGS="--gen-ports … --appliance-ports … --sink-ports …" for real NICs)
bench-load: deps
	$(CARGO) build --release --bins
	PRIVLINKD=$(CURDIR)/target/release/privlinkd bash scripts/bench-load.sh $(LOAD_ARGS)

## make bench-smoke: the harness in a few seconds (exit 0 when privlinkd forwards)
bench-smoke:
	$(CARGO) build --release --bins
	CARGO=$(CARGO) bash scripts/bench.sh --smoke --no-build --out bench-out/smoke

check:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean
