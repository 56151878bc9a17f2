package vhostuser

import (
	"github.com/arcnet/vhost-arcnet/virtio"
)

// Dirty page logging (vhost-user spec "Migration"): SET_LOG_BASE maps the
// log area, VHOST_F_LOG_ALL in SET_FEATURES turns logging on and off. While
// it is on, every queue marks what it writes (buffers and the used ring)
// and the Device gets the log for anything else it writes.

// effectiveLog is the log writes go to now: nil while logging is off.
func (s *Session) effectiveLog() *virtio.DirtyLog {
	if !s.logOn || s.logArea == nil {
		return nil
	}
	return s.logArea.log
}

// applyLog gives the current log to the device and every started queue.
// virtio.Queue.SetLog is atomic, so running queues need not stop.
func (s *Session) applyLog() {
	l := s.effectiveLog()
	s.dev.SetLog(l)
	for i := range s.rings {
		if q := s.rings[i].q; q != nil {
			q.SetLog(l)
		}
	}
}

// SET_LOG_BASE with LOG_SHMFD: one fd, and a "Log description" (size and
// offset of the area in it). Its reply echoes the 16-byte log description,
// as rust-vmm's backend does: rust-vmm's frontend reads exactly that since
// vhost 0.16 (vhost/src/vhost_user/frontend.rs set_log_base,
// recv_reply::<VhostUserLog>; cloud-hypervisor v53 and later) and would
// wait forever for the missing bytes of a shorter reply; QEMU reads any
// reply and checks only its request code (hw/virtio/vhost-user.c
// vhost_user_set_log_base). (rust-vmm vhost 0.15 and older, in
// cloud-hypervisor up to v52, read a u64 ack there instead: their live
// migration does not work with this backend.)
//
// QEMU resizes the log while logging (memory hotplug): a queue may be in
// the middle of a Mark on the old area after SetLog swapped it, so the
// started rings are paused around the swap and only then is the old area
// unmapped.
func (s *Session) setLogBase(p *payload, fds *fdSet) ([]byte, error) {
	l, err := mapLog(fds.fds[0], p.Log, s.onFault)
	if err != nil {
		return nil, err
	}
	old := s.logArea
	var paused []bool
	if old != nil {
		paused = s.pauseAll()
	}
	s.logArea = l
	s.retiringLog = old // unmapped by teardown if resume faults
	s.applyLog()
	err = s.resume(paused)
	if old != nil {
		old.unmap()
	}
	s.retiringLog = nil
	if err != nil {
		return nil, err
	}
	s.log.Debug("dirty log area set", "size", p.Log.Size)
	b := s.replyBody()[:sizeLog]
	ne.PutUint64(b[0:], p.Log.Size)
	ne.PutUint64(b[8:], p.Log.Offset)
	return b, nil
}

// SET_LOG_FD: an eventfd to tell the frontend the log changed. It is kept
// (and closed with the session); the log is shared memory the frontend
// reads when it syncs, so nothing is signalled on it.
func (s *Session) setLogFD(_ *payload, fds *fdSet) ([]byte, error) {
	closeFD(&s.logFD)
	s.logFD = fds.take(0)
	return nil, nil
}
