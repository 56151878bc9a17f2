#include "textflag.h"

// func storeRel(p *uint64, v uint64)
TEXT ·storeRel(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), AX
	MOVQ v+8(FP), CX
	MOVQ CX, (AX)
	RET

// func storeRel4(p *uint64, a, b, c, d uint64)
TEXT ·storeRel4(SB), NOSPLIT, $0-40
	MOVQ p+0(FP), AX
	MOVQ a+8(FP), CX
	MOVQ CX, 0(AX)
	MOVQ b+16(FP), CX
	MOVQ CX, 8(AX)
	MOVQ c+24(FP), CX
	MOVQ CX, 16(AX)
	MOVQ d+32(FP), CX
	MOVQ CX, 24(AX)
	RET
