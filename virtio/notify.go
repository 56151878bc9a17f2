package virtio

// Doorbell is the driver -> device "available buffer notification" (a kick,
// virtio 1.2 §2.7.13.3), as seen by the device. vhostuser implements it
// with the vring kick fd (an eventfd, or a pipe on macOS).
type Doorbell interface {
	// Wait blocks until the driver kicks. It returns ErrInterrupted after
	// Interrupt, or another error if the underlying fd is gone.
	Wait() error
	// Interrupt makes a blocked Wait, or the next one, return ErrInterrupted.
	Interrupt()
}

// Notifier is the device -> driver "used buffer notification" (a call,
// virtio 1.2 §2.7.14). vhostuser implements it with the vring call fd.
type Notifier interface {
	// Notify signals the driver.
	Notify() error
}
