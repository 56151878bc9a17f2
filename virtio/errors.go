package virtio

import "errors"

// Sentinel errors; the package wraps them with detail, test with errors.Is.
var (
	// ErrOutOfBounds means a guest address range is not inside guest memory
	// (or not inside one region where one region is required).
	ErrOutOfBounds = errors.New("guest address out of bounds")
	// ErrBadChain means a descriptor chain breaks a rule of virtio 1.2 §2.7.5.
	ErrBadChain = errors.New("bad descriptor chain")
	// ErrBadRing means a ring index or ring layout breaks virtio 1.2 §2.7.
	ErrBadRing = errors.New("bad virtqueue ring")
	// ErrBroken is wrapped by every error of a queue the guest has broken;
	// the error is sticky: every later call returns it.
	ErrBroken = errors.New("virtqueue broken")
	// ErrFault means an access to guest memory faulted: the frontend
	// shrank the file behind it (fault.go). *Fault wraps it.
	ErrFault = errors.New("guest memory fault")
	// ErrInterrupted is returned by Doorbell.Wait after Interrupt.
	ErrInterrupted = errors.New("wait interrupted")
)
