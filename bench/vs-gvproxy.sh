#!/bin/bash
# vs-gvproxy.sh - guest-to-guest through frame sockets: vhost-arcnet against gvisor-tap-vsock's
# gvproxy v0.8.9, side by side in one run (test/framesock/cmd/vs-gvproxy; its flags pass through,
# e.g. -seconds 5 -runs 3 -sizes 64,1514 -pairs stream,dgram,mixed). gvproxy is a benchmark peer,
# not a dependency: it is installed into a temporary GOBIN and removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
GOBIN=$(mktemp -d)
trap 'rm -rf "$GOBIN"' EXIT
export GOBIN
go install github.com/containers/gvisor-tap-vsock/cmd/gvproxy@v0.8.9
go run ./test/framesock/cmd/vs-gvproxy -gvproxy "$GOBIN/gvproxy" "$@"
