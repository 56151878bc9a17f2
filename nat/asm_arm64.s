#include "textflag.h"

// func storeRel(p *uint64, v uint64)
TEXT ·storeRel(SB), NOSPLIT, $0-16
	MOVD p+0(FP), R0
	MOVD v+8(FP), R1
	STLR R1, (R0)
	RET

// func storeRel4(p *uint64, a, b, c, d uint64)
TEXT ·storeRel4(SB), NOSPLIT, $0-40
	MOVD p+0(FP), R0
	MOVD a+8(FP), R1
	STLR R1, (R0)
	ADD $8, R0
	MOVD b+16(FP), R1
	STLR R1, (R0)
	ADD $8, R0
	MOVD c+24(FP), R1
	STLR R1, (R0)
	ADD $8, R0
	MOVD d+32(FP), R1
	STLR R1, (R0)
	RET
