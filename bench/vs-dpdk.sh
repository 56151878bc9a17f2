#!/bin/bash
# vs-dpdk.sh - vhost-arcnet against DPDK's vhost-user backend, side by side: test/dpdk/cmd/vs-dpdk (flags or the same env knobs).
cd "$(dirname "$0")/.." && exec go run ./test/dpdk/cmd/vs-dpdk "$@"
