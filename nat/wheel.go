package nat

// Expiry uses a hashed timing wheel with lazy rescheduling, so that a packet
// never touches anything but its own flow record:
//
//   - A flow sits in the slot of the tick that holds its deadline (or the
//     last slot of the wheel's horizon when the deadline is further away).
//     Invariant: a flow's slot tick is at or before its deadline's tick.
//   - A packet that extends the deadline only stores the new deadline; the
//     flow stays where it is (the invariant still holds).
//   - A state change that shortens the deadline (FIN, RST) moves the flow to
//     an earlier slot: O(1) with the doubly linked slot lists.
//   - When the wheel passes a slot, each flow in it is either dead (reclaimed)
//     or was extended (moved to the slot of its new deadline). A flow is
//     moved at most once per timeout period, so the work is O(1) amortized
//     per flow, and Translate bounds it per call.
//   - A lookup that finds a dead flow that the wheel has not reached yet
//     reclaims it on the spot, so expiry is exact whatever the wheel's lag.

const (
	tickShift = 30 // one tick is 2^30 ns, about 1.07 s
	wheelBits = 12 // 4096 slots: a horizon of about 73 minutes
	wheelSize = 1 << wheelBits
	wheelMask = wheelSize - 1
)

type wheel struct {
	heads  [wheelSize]uint32
	cursor int64 // the next tick to process; every earlier slot is done
}

// schedule links flow i into the slot for its deadline.
func (e *Engine) schedule(i uint32, f *flow) {
	w := &e.wheel
	t := f.deadline() >> tickShift
	t = max(t, w.cursor)
	t = min(t, w.cursor+wheelSize-1)
	s := uint16(t & wheelMask)
	f.slot = s
	f.prev = 0
	f.next = w.heads[s]
	if f.next != 0 {
		e.tab.flow(f.next).prev = i
	}
	w.heads[s] = i
}

// unschedule unlinks flow i from its slot.
func (e *Engine) unschedule(i uint32, f *flow) {
	w := &e.wheel
	if f.prev != 0 {
		e.tab.flow(f.prev).next = f.next
	} else if w.heads[f.slot] == i {
		w.heads[f.slot] = f.next
	}
	if f.next != 0 {
		e.tab.flow(f.next).prev = f.prev
	}
	f.prev, f.next = 0, 0
}

// shortened moves flow i after its deadline moved earlier, if its slot is
// now later than the deadline's tick.
func (e *Engine) shortened(i uint32, f *flow) {
	t := max(f.deadline()>>tickShift, e.wheel.cursor)
	// The slot's tick is the only one in [cursor, cursor+wheelSize) with
	// that index.
	c := e.wheel.cursor
	slotTick := c + (int64(f.slot)-c)&wheelMask
	if slotTick > t {
		e.unschedule(i, f)
		e.schedule(i, f)
	}
}

// reclaimGroup is the number of flows advance looks at together.
const reclaimGroup = 32

// advance runs the wheel up to now, doing at most budget units of work (one
// per slot passed and one per flow looked at), and returns how many flows it
// reclaimed. With current set, it also reclaims the dead flows of the
// current tick's slot (Expire does; Translate does not, to keep its cost
// bounded).
func (e *Engine) advance(now int64, budget int, current bool) int {
	w := &e.wheel
	nowTick := now >> tickShift
	if nowTick-w.cursor > wheelSize {
		// Every slot index is visited within the next wheelSize ticks, so
		// older ticks need no visit of their own.
		w.cursor = nowTick - wheelSize
	}
	n := 0
	var grp [reclaimGroup]struct {
		i      uint32
		h0, h1 uint64 // the hashes of its keys
	}
	for w.cursor < nowTick {
		s := w.cursor & wheelMask
		for w.heads[s] != 0 {
			if budget <= 0 {
				e.wheelAt.Store(w.cursor)
				return n
			}
			// Walk the first flows of the slot (each record a cache miss,
			// one after the other) and start fetching their index slots,
			// which then arrive while the walk goes on; remove finds them in
			// the cache.
			g := 0
			for i := w.heads[s]; i != 0 && g < len(grp) && g < budget; g++ {
				f := e.tab.flow(i)
				grp[g].h0, grp[g].h1 = e.tab.prefetchSlots(f)
				grp[g].i = i
				i = f.next
			}
			budget -= g
			// Each is the slot's head in turn: a flow that lives on moves
			// to a later slot.
			for _, m := range grp[:g] {
				i := m.i
				f := e.tab.flow(i)
				e.unschedule(i, f)
				if e.kill(f, now) {
					e.reclaimHashed(i, m.h0, m.h1)
					n++
				} else {
					e.schedule(i, f)
				}
			}
		}
		budget--
		w.cursor++
	}
	e.wheelAt.Store(w.cursor)
	if current {
		s := nowTick & wheelMask
		for i := w.heads[s]; i != 0 && budget > 0; budget-- {
			f := e.tab.flow(i)
			next := f.next
			if e.kill(f, now) {
				e.reclaim(i)
				n++
			}
			i = next
		}
	}
	return n
}
