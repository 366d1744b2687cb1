package protect

// subBuffer is how many signals a subscriber may be behind. The kernel
// fires a trigger at most once per window (>= 500 ms) and a partition's
// policy handles a signal in microseconds: 16 is minutes of a slow
// reader, not a normal queue.
const subBuffer = 16

// Subscribe returns a channel of confirmed pressure signals and a cancel
// function that ends the subscription (and closes the channel). Delivery
// never blocks the protector: when a subscriber's buffer is full the
// signal is dropped for it and counted (Stats.Dropped). A dropped signal
// loses nothing a reaction needs: the next confirmed window brings the
// next one, and a throttle steps at most once per window anyway.
func (p *Protector) Subscribe() (<-chan Signal, func()) {
	p.subMu.Lock()
	defer p.subMu.Unlock()
	id := p.next
	p.next++
	ch := make(chan Signal, subBuffer)
	p.subs[id] = ch
	return ch, func() {
		p.subMu.Lock()
		defer p.subMu.Unlock()
		if _, ok := p.subs[id]; ok {
			delete(p.subs, id)
			close(ch)
		}
	}
}

func (p *Protector) publish(sig Signal) {
	p.signals.Add(1)
	p.subMu.Lock()
	defer p.subMu.Unlock()
	for _, ch := range p.subs {
		select {
		case ch <- sig:
		default:
			p.dropped.Add(1)
		}
	}
}
