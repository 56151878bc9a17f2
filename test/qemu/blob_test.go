package qemu

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"
)

// testBlob is a deterministic pseudo-random file that a test serves over
// HTTP for a guest to download (wget:URL:SHA256 in guest/init.sh): the same
// seed and size always give the same bytes and the same SHA-256.
type testBlob struct {
	Data   []byte
	SHA256 string // lower-case hex
}

// newTestBlob returns size bytes of the ChaCha8 stream of seed.
func newTestBlob(seed byte, size int) testBlob {
	var key [32]byte
	for i := range key {
		key[i] = seed + byte(i)
	}
	b := make([]byte, size)
	_, _ = rand.NewChaCha8(key).Read(b) // never fails
	sum := sha256.Sum256(b)
	return testBlob{Data: b, SHA256: hex.EncodeToString(sum[:])}
}

// Handler serves the blob at any path (with a Content-Length, as
// application/octet-stream) and counts the requests in *hits if not nil.
func (b testBlob) Handler(hits *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits != nil {
			hits.Add(1)
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(b.Data))
	})
}
