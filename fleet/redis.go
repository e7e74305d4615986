package fleet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Redis says where a shared Fleet keeps its limits and how to reach it:
// one server, a primary that Sentinel watches, or a Cluster, over TCP or
// TLS. Its String never shows a password.
type Redis struct {
	// URL locates Redis; rediss:// instead of redis:// uses TLS.
	//   - Mode "single": redis://[user:password@]host:port/db.
	//   - Mode "sentinel": the sentinels, and the name of the primary they
	//     watch: redis://[user:password@]host:port/db?master_name=NAME
	//     [&addr=host:port...]; the user and password are the sentinels'.
	//   - Mode "cluster": seed nodes, redis://[user:password@]host:port
	//     [?addr=host:port...].
	URL string
	// Mode is "single" (DefaultRedisMode), "sentinel" or "cluster".
	Mode string
	// Password, when set, authenticates with Redis (the primary, or every
	// node of a Cluster) in place of one in URL: read from a mounted
	// Secret, it need not be in a URL.
	Password string
}

// DefaultRedisMode is the Mode of a Redis that names none: one server.
const DefaultRedisMode = "single"

// CheckMode reports a Mode that is not single, sentinel or cluster ("" is
// DefaultRedisMode), before any connection is tried.
func (r Redis) CheckMode() error {
	switch r.Mode {
	case "", DefaultRedisMode, "sentinel", "cluster":
		return nil
	}
	return fmt.Errorf("fleet: redis mode %q is not single, sentinel or cluster", r.Mode)
}

// MinVersion is the oldest Redis the scripts run on: they use ZADD with
// XX and LT, which came with Redis 6.2.
const MinVersion = "6.2.0"

// errOldRedis wraps the error of a Redis older than MinVersion.
var errOldRedis = errors.New("fleet: redis is too old")

// client builds the go-redis client that r describes, with every command
// bounded by timeout and never retried by the client, nor a failed dial:
// a slow Redis means fallback, not a stuck stream. It returns the address to name in logs
// and errors, which holds no password.
func (r Redis) client(timeout time.Duration) (redis.UniversalClient, string, error) {
	// The parsers' errors quote the URL, password and all: never wrapped.
	bad := func(want string) error {
		return fmt.Errorf("fleet: the redis url is not %s", want)
	}
	maint := &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	if err := r.CheckMode(); err != nil {
		return nil, "", err
	}
	switch r.Mode {
	case "", DefaultRedisMode:
		o, err := redis.ParseURL(r.URL)
		if err != nil {
			return nil, "", bad("redis://[user:password@]host:port/db or rediss://…")
		}
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = timeout, timeout, timeout, timeout
		o.DialerRetries, o.ContextTimeoutEnabled, o.MaxRetries, o.DisableIdentity, o.MaintNotificationsConfig = 1, true, -1, true, maint
		if r.Password != "" {
			o.Password = r.Password
		}
		return redis.NewClient(o), o.Addr, nil
	case "sentinel":
		o, err := redis.ParseFailoverURL(r.URL)
		if err != nil || o.MasterName == "" {
			return nil, "", bad("redis://[user:password@]sentinel:port/db?master_name=NAME[&addr=sentinel:port…] (or rediss://…)")
		}
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = timeout, timeout, timeout, timeout
		o.DialerRetries, o.ContextTimeoutEnabled, o.MaxRetries, o.DisableIdentity = 1, true, -1, true
		if r.Password != "" {
			o.Password = r.Password
		}
		return redis.NewFailoverClient(o), o.MasterName + " at " + strings.Join(o.SentinelAddrs, ","), nil
	default: // cluster
		o, err := redis.ParseClusterURL(r.URL)
		if err != nil {
			return nil, "", bad("redis://[user:password@]host:port[?addr=host:port…] (or rediss://…)")
		}
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = timeout, timeout, timeout, timeout
		o.DialerRetries, o.ContextTimeoutEnabled, o.MaxRetries, o.DisableIdentity, o.MaintNotificationsConfig = 1, true, -1, true, maint
		if r.Password != "" {
			o.Password = r.Password
		}
		return redis.NewClusterClient(o), "cluster " + strings.Join(o.Addrs, ","), nil
	}
}

// String names r for logs: the mode and URL without its password.
func (r Redis) String() string {
	u := r.URL
	if scheme, rest, ok := strings.Cut(u, "://"); ok {
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			u = scheme + "://…@" + rest[at+1:]
		}
	}
	return cmp.Or(r.Mode, DefaultRedisMode) + " " + u
}

// scripts are every script the Fleet runs, loaded into Redis (every node
// of a Cluster) before the heartbeat's pipelines run them by hash.
var scripts = []*redis.Script{registerScript, acquireScript, releaseScript, renewScript, countScript, flushScript}

// prepare checks that Redis is recent enough and loads the scripts.
func (f *Fleet) prepare(ctx context.Context) error {
	ctx, cancel := f.opCtx(ctx)
	defer cancel()
	info, err := f.rdb.Info(ctx, "server").Result()
	if err != nil {
		return err
	}
	if err := checkVersion(info); err != nil {
		return err
	}
	return f.loadScripts(ctx)
}

// loadScripts loads every script, on every node of a Cluster.
func (f *Fleet) loadScripts(ctx context.Context) error {
	for _, s := range scripts {
		if err := s.Load(ctx, f.rdb).Err(); err != nil {
			return err
		}
	}
	return nil
}

// checkVersion reads redis_version from the reply of INFO server and
// fails, wrapping errOldRedis, below MinVersion.
func checkVersion(info string) error {
	var version string
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			version = v
			break
		}
	}
	if version == "" {
		return errors.New("fleet: redis reported no redis_version")
	}
	if compareVersions(version, MinVersion) < 0 {
		return fmt.Errorf("%w: redis %s is older than %s, which the fleet's scripts need (ZADD … XX LT)", errOldRedis, version, MinVersion)
	}
	return nil
}

// compareVersions compares dotted versions numerically, part by part; a
// part that is not a number counts as 0.
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(as), len(bs)) {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x - y
		}
	}
	return 0
}

// refusal reports whether err is Redis refusing the Fleet (a wrong
// password, a missing permission, a version too old) rather than Redis
// being unreachable: a replica does not start on such an error, since
// waiting would not mend it.
func refusal(err error) bool {
	if errors.Is(err, errOldRedis) {
		return true
	}
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	msg := rerr.Error()
	for _, prefix := range []string{"WRONGPASS", "NOAUTH", "NOPERM", "ERR AUTH", "ERR invalid password", "ERR Client sent AUTH"} {
		if strings.HasPrefix(msg, prefix) {
			return true
		}
	}
	return false
}
