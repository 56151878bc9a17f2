#include "textflag.h"

// func loadAcquire16(p *uint16) uint16
// LDARH: load-acquire halfword; no later load or store is observed before
// it (Arm ARM B2.3.7), so descriptors are read after the avail idx.
TEXT ·loadAcquire16(SB), NOSPLIT, $0-10
	MOVD  p+0(FP), R0
	LDARH (R0), R1
	MOVH  R1, ret+8(FP)
	RET

// func storeRelease16(p *uint16, v uint16)
// STLRH: store-release halfword; every earlier load and store is observed
// before it, so used elements and buffer bytes are visible before used idx.
TEXT ·storeRelease16(SB), NOSPLIT, $0-10
	MOVD  p+0(FP), R0
	MOVHU v+8(FP), R1
	STLRH R1, (R0)
	RET

// func fullFence()
// DMB ISH (option 0xb): full barrier (loads and stores, both directions)
// over the inner shareable domain, which holds every CPU that may run the
// guest's driver. Our index stores are STLRH and the following loads LDARH,
// which ARMv8 already keeps in order (RCsc), but callers may also use plain
// stores before the fence (used elements), so the fence does not rely on it.
TEXT ·fullFence(SB), NOSPLIT, $0-0
	DMB $0xb
	RET
