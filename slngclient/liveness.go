package slngclient

import (
	"context"
	"time"

	"github.com/coder/websocket"
)

// liveness sends keepalive messages when the session has been quiet and
// pings to find dead peers. It exits when the session ends.
func (cn *conn) liveness(keepalive, pingEvery, pingTimeout time.Duration) {
	defer close(cn.liveDone)
	if keepalive <= 0 && pingEvery <= 0 {
		return
	}
	lastPing := time.Now()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		now := time.Now()
		wait := time.Hour
		if keepalive > 0 {
			wait = min(wait, time.Unix(0, cn.lastSend.Load()).Add(keepalive).Sub(now))
		}
		if pingEvery > 0 {
			wait = min(wait, lastPing.Add(pingEvery).Sub(now))
		}
		t.Reset(max(wait, time.Millisecond))
		select {
		case <-cn.ctx.Done():
			return
		case <-t.C:
		}
		now = time.Now()
		if keepalive > 0 && now.Sub(time.Unix(0, cn.lastSend.Load())) >= keepalive {
			if err := cn.write(cn.ctx, websocket.MessageText, msgKeepalive); err != nil {
				return
			}
			cn.keepalives.Add(1)
		}
		if pingEvery > 0 && now.Sub(lastPing) >= pingEvery {
			lastPing = now
			held, frames := cn.heldFor(now), cn.framesIn.Load()
			pctx, cancel := context.WithTimeout(cn.ctx, pingTimeout)
			err := cn.ping(pctx)
			cancel()
			if err != nil && cn.ctx.Err() == nil && (cn.heldFor(time.Now())-held > heldPingGrace || cn.framesIn.Load() != frames) {
				// The consumer held the reader back meanwhile, so the
				// pong may be waiting unread behind its frames; or frames
				// came while the pong did not, so SLNG is there and the
				// pong waits behind what it sent before (a backlog the
				// reader is still working through after a hold, say).
				// Neither proves SLNG silent: the next ping tries again.
				continue
			}
			if err != nil {
				if cn.ctx.Err() == nil {
					cn.pingLost.Store(true)
					cn.ws.CloseNow()
				}
				return
			}
		}
	}
}

// heldPingGrace is how long the consumer may hold the reader back during a
// ping before a missing pong stops counting as SLNG's silence.
const heldPingGrace = time.Millisecond

// ping sends a WebSocket ping and waits, within ctx, for its pong.
func (cn *conn) ping(ctx context.Context) error {
	if err := cn.ended(); err != nil {
		return err
	}
	cn.pings.Add(1)
	// The pong never comes if the reader stops: end the wait then too.
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(cn.ctx, cancel)()
	if err := cn.ws.Ping(pctx); err != nil {
		if err := cn.ended(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return NewTimeout("no pong", err)
		}
		return lost("ping failed", err)
	}
	return nil
}
