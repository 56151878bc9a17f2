# vhost-arcnet. `make setup` once, then `make demo` / `make test`.
SHELL       := /bin/bash
GO          ?= go
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.7.0
BIN         ?= bin/vhost-arcnet
UNIT        := $(shell $(GO) list ./... 2>/dev/null | grep -v '/test/')
# Packages whose unit tests also run on arm64 (qemu-user), where ring
# ordering uses the arm64 acquire/release instructions.
ARM64_UNIT  := ./virtio/... ./vhostuser/... ./datapath/... ./nat/...

.PHONY: all setup build test unit race arm64 e2e lint cross bench bench-dpdk bench-gvproxy demo clean soak

all: build

setup:                ## install what the build and the tests need (apt, Go modules)
	bash test/deps.sh

build:
	CGO_ENABLED=0 $(GO) build -buildvcs=auto -o $(BIN) ./cmd/vhost-arcnet

test: setup lint cross race fuzz-short arm64 e2e demo   ## the whole test suite (CI runs this), the demo included

unit:
	$(GO) test -count=1 $(UNIT)

race:
	$(GO) test -race -count=1 $(UNIT)

arm64:
	CGO_ENABLED=0 GOARCH=arm64 $(GO) test -count=1 -exec qemu-aarch64-static $(ARM64_UNIT)

e2e:                  ## real peers: QEMU guests, DPDK virtio_user (root)
	$(GO) test -count=1 -timeout 30m ./test/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

cross:                ## macOS (Apple Silicon, Intel) and arm64 Linux builds, no cgo
	CGO_ENABLED=0 GOOS=darwin GOARCH=arm64 $(GO) build ./...
	CGO_ENABLED=0 GOOS=darwin GOARCH=arm64 $(GO) vet ./...
	CGO_ENABLED=0 GOOS=darwin GOARCH=amd64 $(GO) build ./...
	CGO_ENABLED=0 GOOS=darwin GOARCH=amd64 $(GO) vet ./...
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build ./...

# Fuzzing: every `func Fuzz*` in a *_test.go, each run alone for FUZZTIME
# (`make fuzz FUZZTIME=10m`); `fuzz-short` (part of `make test`) gives each
# 2 s. A crasher is written to the package's testdata/fuzz/FuzzX/ by go test
# and fails the target (a bare "context deadline exceeded" at the end is a
# race in go's coordinator, go.dev/issue/75804, unfixed in go1.26: not a
# failure). FUZZSAVE=1 also copies the new interesting inputs go keeps in
# its cache into testdata/fuzz/FuzzX/ (commit the ones worth keeping). The
# last "execs" of each run is summed up at the end.
# FUZZMINTIME bounds the minimizing of each new input (go's default, 60s,
# stops the fuzzing of large inputs for most of a short run: "0/sec").
FUZZTIME    ?= 10m
FUZZMINTIME ?= 5s
FUZZSAVE    ?=
define fuzz_all
	@sum=$$(mktemp); log=$$(mktemp); fail=0; cache=$$($(GO) env GOCACHE)/fuzz; \
	for f in $$(grep -rl --include='*_test.go' '^func Fuzz' . | sort); do \
	  pkg=./$$(dirname $${f#./}); \
	  for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
	    echo "== $$t $$pkg ($(1))"; \
	    $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(1) -fuzzminimizetime $(FUZZMINTIME) $$pkg 2>&1 | tee $$log; rc=$${PIPESTATUS[0]}; \
	    execs=$$(sed -n 's/.*execs: \([0-9]*\).*/\1/p' $$log | tail -1); \
	    if [ $$rc -eq 0 ]; then res=ok; \
	    elif grep -q '^    context deadline exceeded$$' $$log && ! grep -q 'Failing input written' $$log; then \
	      res='ok (go.dev/issue/75804: "context deadline exceeded" at fuzztime, no failing input)'; \
	    else fail=1; res=FAIL; fi; \
	    printf '%-18s %-24s %12s execs  %s\n' "$$t" "$$pkg" "$${execs:-?}" "$$res" >>$$sum; \
	    if [ -n "$(2)" ] && [ -d "$$cache/$$($(GO) list $$pkg)/$$t" ]; then \
	      mkdir -p $$pkg/testdata/fuzz/$$t && cp -n "$$cache/$$($(GO) list $$pkg)/$$t"/* $$pkg/testdata/fuzz/$$t/; fi; \
	  done; \
	done; \
	echo "== fuzz summary ($(1) per target)"; cat $$sum; rm -f $$sum $$log; exit $$fail
endef

.PHONY: fuzz fuzz-short
fuzz:                 ## every fuzz target alone for FUZZTIME (default 10m); FUZZSAVE=1 keeps new corpus entries
	$(call fuzz_all,$(FUZZTIME),$(FUZZSAVE))

fuzz-short:           ## every fuzz target for 2 s (part of make test)
	$(call fuzz_all,2s,)

# make soak: the load tests for longer than make test runs them (5 s of
# traffic, 1,000 churn cycles): SOAK_SECONDS of 64 guests' traffic through
# the switch and again through the TAP and the NAT, then SOAK_CYCLES
# connect/negotiate/disconnect cycles; each checks that nothing was lost
# uncounted and that fds, goroutines and RSS come back (root: namespaces).
SOAK_SECONDS ?= 600
SOAK_CYCLES  ?= 20000
soak:                 ## the load and churn tests for longer (SOAK_SECONDS=600, SOAK_CYCLES=20000)
	LOAD_SECONDS=$(SOAK_SECONDS) LOAD_CHURN_CYCLES=$(SOAK_CYCLES) $(GO) test -count=1 -v -timeout 6h \
		-run '^(TestLoad64|TestLoad64TAP|TestChurn)$$' ./test/load/

bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 1s $(UNIT)

bench-dpdk: build     ## side by side with DPDK's vhost library
	bash bench/vs-dpdk.sh

bench-gvproxy:        ## frame sockets guest to guest, side by side with gvproxy v0.8.9
	bash bench/vs-gvproxy.sh

demo: setup build     ## a guest: DHCP, DNS, a page and a file fetched through NAT, a host client through a forward
	ARCNET_DEMO=1 ARCNET_BIN=$(abspath $(BIN)) $(GO) test -count=1 -v -run '^TestDemo$$' ./test/qemu/

clean:
	rm -rf bin

# The XDP uplink's program (hostif/xdp/bpf/arcnet.c): its object and Go
# bindings are committed, so build and test need no clang; `make bpf`
# regenerates them after a change to the C source.
.PHONY: bpf bpf-deps
bpf-deps:             ## clang and llvm-strip for `make bpf` (apt)
	@command -v clang >/dev/null && command -v llvm-strip >/dev/null || \
	  { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends clang llvm >/dev/null; }

bpf: bpf-deps         ## regenerate hostif/xdp's BPF object and bindings (bpf2go)
	cd hostif/xdp && $(GO) generate .
