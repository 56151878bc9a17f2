package ring

import "sync/atomic"

// or32 is sync/atomic's OR: LOCK OR on amd64, LDSETAL/LDAXR-STLXR on arm64;
// sequentially consistent, so concurrent markers never lose a bit.
func or32(p *uint32, mask uint32) { atomic.OrUint32(p, mask) }
