package slngpool

import "time"

// KeyChanged tells the pool that the gateway's own SLNG key (the Client's
// default key, used by endpoints without an APIKey of their own) has
// changed, e.g. because the mounted Secret was rotated. Standby sessions
// dialled with the old key are closed at once, and sessions in use go back
// to SLNG rather than to the pool when their streams end; streams in
// flight keep their sessions. What the pool learned of each configuration
// is kept, but failures and pauses that may have been the old key's are
// forgotten, so that the new key is tried at once. It does not block on
// SLNG.
func (p *Pool) KeyChanged() {
	p.mu.Lock()
	p.gen++
	var old []*idleSession
	for k, list := range p.idle {
		if k.own {
			old = append(old, list...)
		}
	}
	for _, is := range old {
		p.removeIdleLocked(is)
	}
	for k, r := range p.routes {
		if !k.own || k.gen == p.gen {
			continue
		}
		delete(p.routes, k)
		delete(p.pauses, k.cred)
		r.fails, r.next, r.stopped = 0, time.Time{}, false
		r.rejected, r.reported = "", false
		k.gen = p.gen
		p.routes[k] = r
	}
	p.mu.Unlock()
	for _, is := range old {
		is.unwatch()
		p.discard(is.s, is.key, "key_changed")
	}
	p.wake()
}

// staleLocked reports a key of the gateway's own credential from before
// the last KeyChanged: its sessions must not be kept.
func (p *Pool) staleLocked(k poolKey) bool {
	return k.own && k.gen != p.gen
}
