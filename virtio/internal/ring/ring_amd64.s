#include "textflag.h"

// amd64 is TSO (Intel SDM vol. 3 §9.2.2): loads are not reordered with
// other loads, stores not with other stores, and stores not with earlier
// loads. So a plain MOV is already an acquire load / release store; being
// an assembly function keeps the Go compiler from moving accesses across it.

// func loadAcquire16(p *uint16) uint16
TEXT ·loadAcquire16(SB), NOSPLIT, $0-10
	MOVQ    p+0(FP), AX
	MOVWLZX (AX), BX
	MOVW    BX, ret+8(FP)
	RET

// func storeRelease16(p *uint16, v uint16)
TEXT ·storeRelease16(SB), NOSPLIT, $0-10
	MOVQ p+0(FP), AX
	MOVW v+8(FP), BX
	MOVW BX, (AX)
	RET

// func fullFence()
// TSO lets a later load pass an earlier store (store buffer); MFENCE
// forbids that, which notification suppression needs (store our index,
// then load the other side's event index).
TEXT ·fullFence(SB), NOSPLIT, $0-0
	MFENCE
	RET
