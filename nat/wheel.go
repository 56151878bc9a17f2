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
	for w.cursor < nowTick {
		s := uint16(w.cursor & wheelMask)
		for w.heads[s] != 0 {
			if budget <= 0 {
				e.wheelAt.Store(w.cursor)
				return n
			}
			// A passed slot is emptied: each flow is reclaimed or moves to
			// the slot of its later deadline, so the walk starts at the
			// head each time.
			k, g, _ := e.sweep(w.heads[s], now, budget, true)
			n += k
			budget -= g
		}
		budget--
		w.cursor++
	}
	e.wheelAt.Store(w.cursor)
	if current {
		// The current slot keeps the flows that live on where they are.
		for i := w.heads[nowTick&wheelMask]; i != 0 && budget > 0; {
			k, g, next := e.sweep(i, now, budget, false)
			n += k
			budget -= g
			i = next
		}
	}
	return n
}

// sweep looks at up to min(reclaimGroup, budget) flows of a slot's list
// from flow i on, reclaims the dead ones and, with move set, moves the
// others to the slots of their deadlines. It returns how many it reclaimed,
// how many it looked at and the flow after the last one looked at.
//
// The walk first goes through the group's records (each a cache miss, one
// after the other) and starts fetching their index slots, which then
// arrive while the walk goes on; remove finds them in the cache.
func (e *Engine) sweep(i uint32, now int64, budget int, move bool) (reclaimed, looked int, next uint32) {
	var grp [reclaimGroup]struct {
		i      uint32
		h0, h1 uint64 // the hashes of its keys
	}
	g := 0
	for ; i != 0 && g < len(grp) && g < budget; g++ {
		f := e.tab.flow(i)
		grp[g].h0, grp[g].h1 = e.tab.prefetchSlots(f)
		grp[g].i = i
		i = f.next
	}
	for _, m := range grp[:g] {
		f := e.tab.flow(m.i)
		if e.kill(f, now) {
			e.reclaimHashed(m.i, m.h0, m.h1)
			reclaimed++
		} else if move {
			e.unschedule(m.i, f)
			e.schedule(m.i, f)
		}
	}
	return reclaimed, g, i
}
