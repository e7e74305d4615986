package service

import (
	"strings"
	"time"
	"unicode"

	"github.com/speech-gateway/speech-gateway/slngpool"
)

// The caller's text on its way upstream: synthCore's text path.

// maxTurnText bounds the text of one turn, which the gateway keeps until the
// turn is spoken so that it can replay it on a new upstream session.
const maxTurnText = 1 << 20

// hasLetter reports whether text holds a letter, in any script.
func hasLetter(text string) bool { return strings.ContainsFunc(text, unicode.IsLetter) }

// text adds text to the open turn and sends it, dialling first if the
// session ended between turns.
//
// A text with no letter (",", " ", "42") does not go upstream alone: it
// waits (held) and goes with the next text of the turn, or with the turn's
// flush as its last text. Some providers refuse a text message without a
// letter and fail the whole turn (Sarvam); LiveKit's SLNG plugin never
// sends one either, except a reply's last.
func (c *synthCore) text(text string, flush bool, now time.Time) {
	if c.state.has(draining) {
		c.fail(errDraining)
		return
	}
	send, err := c.book.addText(text, maxTurnText)
	if err != nil {
		c.fail(invalid("text.text", "a turn holds at most %d bytes of text: flush more often", maxTurnText))
		return
	}
	if !send {
		if flush {
			c.flush(now)
		}
		return
	}
	if !flush && !hasLetter(text) {
		c.held += text
		return
	}
	c.sendText(c.held+text, flush, now)
}

// bargeInWait bounds how long a turn that comes while SLNG has not
// answered a clear waits for that answer before it goes to a new session:
// LiveKit's SLNG plugin waits 150 ms, then opens a socket of its own.
const bargeInWait = 150 * time.Millisecond

// clearQuiet is how long the session that answered a clear must then be
// quiet before the turns that waited go to it. Routes send audio of the
// discarded turn after their answer at times, and nothing tells it from
// the next turn's: LiveKit's SLNG plugin wants 100 ms of quiet after the
// answer, and discards a socket that sends anything else. So does the
// gateway (see strayAfterClear).
const clearQuiet = 100 * time.Millisecond

// sendText sends the open turn's text not yet sent, then, with flush, ends
// the turn.
func (c *synthCore) sendText(text string, flush bool, now time.Time) {
	c.held = ""
	if c.parks(now) {
		// SLNG has not answered a clear yet: until it does, its frames may
		// be the discarded turn's, so the text waits in the book (see
		// unpark and clearTimedOut).
		c.cmds = append(c.cmds, ttsCmd{kind: cmdCharge, text: text})
		if flush {
			c.flushBook(now)
		}
		return
	}
	if c.state.upstream == upGone {
		// The text waits in the book; the new session hears it as part of
		// the replay (see onAcquired).
		c.cmds = append(c.cmds, ttsCmd{kind: cmdCharge, text: text})
		if flush {
			c.flushBook(now)
		}
		c.dial(slngpool.PurposeRollover)
		return
	}
	c.book.sentPiece(c.book.open.text.Len())
	c.cmds = append(c.cmds, ttsCmd{kind: cmdText, sess: c.lease.Session, text: text, charge: true})
	if flush {
		c.flush(now)
	}
}

// flush ends the open turn. A flush without text is ignored: SLNG treats a
// bare flush as a protocol violation. Text held for a neighbour goes now,
// as the turn's last.
func (c *synthCore) flush(now time.Time) {
	if c.held != "" {
		c.sendText(c.held, true, now)
		return
	}
	if c.parks(now) {
		c.flushBook(now)
		return
	}
	if c.flushBook(now) && c.state.upstream != upGone {
		c.cmds = append(c.cmds, ttsCmd{kind: cmdFlush, sess: c.lease.Session})
	}
}

// flushBook queues the open turn to be spoken, if it has text.
func (c *synthCore) flushBook(now time.Time) bool {
	// Registered before the flush goes out, so that the turn its audio
	// belongs to is always found.
	t := c.book.flush(now)
	if t == nil {
		return false
	}
	if len(c.book.pending) == 1 {
		c.progress = now // the watchdog runs from the first flush of a run
	}
	c.idleSince = time.Time{}
	return true
}

// clear discards the open turn and every pending one. SLNG answers its
// `clear` with `cleared` (or an end of a turn) after the last frame of the
// discarded turns; a Cancel is acknowledged at once (barge-in wants no
// wait), a Clear when that answer arrives, or after ClearTimeout without
// one (see clearTimedOut).
func (c *synthCore) clear(cancel bool, now time.Time) {
	c.state.markDirty()
	c.held = ""
	live := c.state.upstream != upGone && !c.dialling
	c.out = append(c.out, c.book.clear(cancel, live, now)...)
	if live {
		c.cmds = append(c.cmds, ttsCmd{kind: cmdClear, sess: c.lease.Session})
	}
}

// parks reports whether the caller's text must wait for SLNG to answer a
// clear, and notes when the first text began to wait.
func (c *synthCore) parks(now time.Time) bool {
	if (len(c.book.clears) == 0 && c.quietUntil.IsZero()) || c.state.upstream == upGone {
		return false
	}
	if c.parkedAt.IsZero() {
		c.parkedAt = now
	}
	return true
}

// unpark sends the session the turns that waited for SLNG's answer to a
// clear, once it came.
func (c *synthCore) unpark(now time.Time) {
	if c.parkedAt.IsZero() || len(c.book.clears) > 0 || !c.quietUntil.IsZero() || c.lease == nil {
		return
	}
	c.parkedAt = time.Time{}
	c.replay(c.lease.Session, now)
}
