// Package fleet shares limits between the replicas of the gateway through
// Redis: counting semaphores whose leases expire (the SLNG session budget
// per key, per-caller concurrent streams) and per-minute counters
// (per-caller characters and audio seconds).
//
// A Fleet is either local (no Redis: every limit holds per process) or
// shared. A shared Fleet keeps every lease it holds alive with one
// heartbeat that renews them all; a replica that dies stops renewing, and
// its leases expire after Options.LeaseTTL, so the others get its share
// back within seconds. Times are Redis's own (TIME inside the scripts), so
// replicas' clocks do not matter.
//
// Redis is one server, a primary watched by Sentinel, or a Cluster (see
// Redis); multi-key scripts keep their keys in one slot. A Fleet checks at
// Connect that Redis is at least MinVersion, loads its scripts, and sends
// its heartbeat in round trips of a bounded size. A check made when a
// stream starts waits for Redis at most Options.StartBudget; past it the
// local share decides that check.
//
// When Redis stops answering, a shared Fleet falls back: every limit
// holds locally at this replica's share of it (the limit divided by the
// replicas last seen alive, at least 1), streams keep flowing, and the
// heartbeat keeps probing. When Redis answers again the heartbeat puts
// back every lease held, including those taken during the fallback, and
// adds the counts made meanwhile, so nothing is lost; a count whose reply
// was lost is sent again and applied once. The shared limits then hold
// again (a fleet over its limit after the fallback takes no new leases
// until it is under). Status reports the mode, for /readyz.
//
// A released lease of the session budget counts for Options.Linger more:
// SLNG counts a closed connection until it has noticed the close, and a
// lease handed on at once would let another replica's dial arrive first.
//
// What it does not do: it keeps no usage records (those are Prometheus
// counters and log lines in package callers), and it never blocks an
// audio chunk: it is asked when a stream or an upstream session starts
// and ends, and when a Synthesize text arrives.
//
// All methods of Fleet, Semaphore, Counter and Budget may be called
// concurrently.
package fleet
