#include "textflag.h"

// func lines(p *uintptr, n int)
TEXT ·lines(SB), NOSPLIT, $0-16
	MOVD p+0(FP), R0
	MOVD n+8(FP), R1
	CMP $0, R1
	BLE done
loop:
	MOVD.P 8(R0), R2
	PRFM (R2), PLDL1KEEP
	SUB $1, R1
	CBNZ R1, loop
done:
	RET

// func linesW(p *uintptr, n int)
TEXT ·linesW(SB), NOSPLIT, $0-16
	MOVD p+0(FP), R0
	MOVD n+8(FP), R1
	CMP $0, R1
	BLE donew
loopw:
	MOVD.P 8(R0), R2
	PRFM (R2), PSTL1KEEP
	SUB $1, R1
	CBNZ R1, loopw
donew:
	RET
