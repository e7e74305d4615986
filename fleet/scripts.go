package fleet

import "github.com/redis/go-redis/v9"

// The scripts run atomically in Redis and take the time from Redis
// (TIME), so that leases expire by one clock whatever the replicas' clocks
// say. A semaphore is a sorted set of lease members scored by their expiry
// in Unix milliseconds; members at or before now are dead and removed.

// now is the Lua prelude that sets now, Redis's time in milliseconds.
const now = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// registerScript: KEYS[1] the replicas set; ARGV id, ttl ms. Registers
// this replica for ttl and returns the live replicas.
var registerScript = redis.NewScript(now + `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[2]))
return redis.call('ZCARD', KEYS[1])
`)

// acquireScript: KEYS[1] a semaphore; ARGV member, limit, ttl ms. Adds
// member when fewer than limit live leases are held; 1 if it did, else 0.
var acquireScript = redis.NewScript(now + `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[3]))
return 1
`)

// releaseScript: KEYS[1] a semaphore; ARGV member, linger ms. The lease
// stays for linger, never longer than it would have (LT), and an expired
// one is not brought back (XX).
var releaseScript = redis.NewScript(`
if tonumber(ARGV[2]) <= 0 then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
` + now + `
return redis.call('ZADD', KEYS[1], 'XX', 'LT', now + tonumber(ARGV[2]), ARGV[1])
`)

// renewScript: KEYS[1] a semaphore; ARGV ttl ms, then the members held.
// Extends them all, adding back those Redis lost (a restart, a fallback
// that outlasted the TTL); returns how many it added back.
var renewScript = redis.NewScript(now + `
local exp = now + tonumber(ARGV[1])
local added = 0
for i = 2, #ARGV do
  added = added + redis.call('ZADD', KEYS[1], exp, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[1]))
return added
`)

// countScript: KEYS[1] a semaphore. Returns its live leases.
var countScript = redis.NewScript(now + `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
`)

// flushScript: KEYS[1] a counter's window, KEYS[2] the flushes applied to
// it (a hash: replica id to the last seq applied); ARGV replica id, seq,
// n, ttl ms. Adds n unless this replica's seq was applied already (a
// retry of a flush whose reply was lost), and returns the total. A
// replica's seqs only grow, and it sends a batch again before any newer.
var flushScript = redis.NewScript(`
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') then
  redis.call('INCRBY', KEYS[1], ARGV[3])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return tonumber(redis.call('GET', KEYS[1]) or '0')
`)
