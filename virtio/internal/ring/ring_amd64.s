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
// TSO lets a later load pass an earlier store (store buffer); a full
// barrier forbids that, which notification suppression needs (store our
// index, then load the other side's event index). A LOCK-prefixed
// read-modify-write is one (Intel SDM vol. 3 §9.2.2: "Locked instructions
// have a total order", and loads and stores are not reordered with them;
// AMD's manual says the same) for the write-back memory the rings live in, and costs less than MFENCE, which also orders non-temporal and
// write-combining accesses we never make (on AMD Zen MFENCE is dispatch
// serializing: perf f2b-copy-64 had 6% of the backend in it, once per
// transmit batch). Adding 0 to the word at the top of our own stack, the
// return address, changes nothing and hits a line no other CPU holds. Linux
// (smp_mb since 4.15) and DPDK (rte_smp_mb) use the same instruction.
TEXT ·fullFence(SB), NOSPLIT, $0-0
	LOCK
	ADDL $0, 0(SP)
	RET
