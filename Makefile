# vhost-arcnet. `make setup` once, then `make demo` / `make test`.
SHELL       := /bin/bash
GO          ?= go
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.7.0
BIN         ?= bin/vhost-arcnet
UNIT        := $(shell $(GO) list ./... 2>/dev/null | grep -v '/test/')
# Packages whose unit tests also run on arm64 (qemu-user), where ring
# ordering uses the arm64 acquire/release instructions.
ARM64_UNIT  := ./virtio/... ./vhostuser/... ./datapath/... ./nat/...

.PHONY: all setup build test unit race arm64 e2e lint cross bench bench-dpdk demo clean

all: build

setup:                ## install what the build and the tests need (apt, Go modules)
	bash test/deps.sh

build:
	CGO_ENABLED=0 $(GO) build -buildvcs=auto -o $(BIN) ./cmd/vhost-arcnet

test: setup lint cross race arm64 e2e demo   ## the whole test suite (CI runs this), the demo included

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

cross:                ## Apple Silicon and arm64 Linux builds, no cgo
	CGO_ENABLED=0 GOOS=darwin GOARCH=arm64 $(GO) build ./...
	CGO_ENABLED=0 GOOS=darwin GOARCH=arm64 $(GO) vet ./...
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 1s $(UNIT)

bench-dpdk: build     ## side by side with DPDK's vhost library
	bash bench/vs-dpdk.sh

demo: setup build     ## a guest: DHCP, DNS, a page and a file fetched through NAT, a host client through a forward
	ARCNET_DEMO=1 ARCNET_BIN=$(abspath $(BIN)) $(GO) test -count=1 -v -run '^TestDemo$$' ./test/qemu/

clean:
	rm -rf bin
