//go:build amd64 || arm64

package nat

// storeRel stores v at p with release ordering: stores before it in program
// order are visible to other cores before it is (x86-64: a plain MOV, which
// TSO orders, Intel SDM vol. 3A §9.2.2; arm64: STLR, Arm ARM B2.3). The
// lock holder writes the index slots and the records of flows that are not
// live with it: lock-free readers (fast.go) read them with atomic loads
// (acquire) and validate what they read by the record's word, which only
// needs stores to become visible in program order. atomic.Uint64.Store is
// sequentially consistent, on x86-64 an XCHG that waits for every earlier
// store to reach the cache: a new flow made about a dozen, each stalling on
// the cache misses of the stores before it (BenchmarkNewFlowsChurn).
//
//go:noescape
func storeRel(p *uint64, v uint64)

// storeRel4 is storeRel of a, b, c and d to the four words from p on, in
// that order.
//
//go:noescape
func storeRel4(p *uint64, a, b, c, d uint64)
