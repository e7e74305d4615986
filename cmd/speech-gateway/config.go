package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/speech-gateway/speech-gateway/callers"
	"github.com/speech-gateway/speech-gateway/catalog"
	"github.com/speech-gateway/speech-gateway/fleet"
	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
	"github.com/speech-gateway/speech-gateway/service"
	"github.com/speech-gateway/speech-gateway/slngclient"
	"github.com/speech-gateway/speech-gateway/slngpool"
)

// config is the gateway's configuration: the options of the packages it
// wires, composed, and what serving them takes. The settings table
// (settings.go) binds each flag to one field here; everything else is
// left at the packages' defaults.
type config struct {
	serve   serving
	service service.Config
	pool    slngpool.Options
	client  slngclient.Options // APIKey: the gateway's key, never logged
	callers callers.Options
	fleet   fleetConfig
	catalog catalogConfig

	prewarmTTS []*speechv1.SynthesisConfig
	prewarmSTT []*speechv1.RecognitionConfig
	// legacyWorldPart is the deprecated --slng-world-part, which sets
	// client.Region, with a warning at start-up.
	legacyWorldPart string
	// warnings are said once the logger exists: old names that were read.
	warnings []string
}

// serving is what the binary itself needs to serve the packages:
// listeners, TLS, the key file, transport limits, shutdown, logs and the
// embedded simulator of --dev.
type serving struct {
	listen, adminListen, debugListen string
	memProfileRate                   int // with debugListen: runtime.MemProfileRate

	// TLS on the gRPC port (servertls.go): off without tlsCertFile;
	// mutual with tlsClientCAFile. The files are re-read every tlsReload
	// (negative: never).
	tlsCertFile, tlsKeyFile, tlsClientCAFile string
	tlsReload                                time.Duration
	// keyFile holds the SLNG key, re-read every keyReload (negative:
	// never).
	keyFile   string
	keyReload time.Duration

	maxStreamsPerConn int // negative: no limit
	// maxHeaderListSize bounds a request's metadata (HTTP/2
	// SETTINGS_MAX_HEADER_LIST_SIZE); more is refused by the transport.
	maxHeaderListSize int
	// streamWindow and connWindow fix the HTTP/2 receive windows; negative
	// leaves grpc-go's dynamic ones.
	streamWindow, connWindow int
	shutdownDelay            time.Duration

	logLevel, logFormat string // logFormat "": json, console with dev
	dev, devRealtime    bool
	devProfile          string
}

// defaultServing is the binary's own defaults.
func defaultServing() serving {
	return serving{
		listen:            ":50051",
		adminListen:       ":9090",
		memProfileRate:    runtime.MemProfileRate, // Go's, until the debug listener sets another
		tlsReload:         10 * time.Second,
		keyReload:         10 * time.Second,
		maxStreamsPerConn: 1000,
		maxHeaderListSize: 64 << 10,
		streamWindow:      256 << 10,
		connWindow:        4 << 20,
		logLevel:          "info",
		devProfile:        "realistic",
	}
}

// fleetConfig is the replicas' shared limits: a Fleet, its Redis, and the
// upstream session budget it keeps per SLNG key.
type fleetConfig struct {
	opts          fleet.Options
	redis         fleet.Redis // URL and Password: never logged
	passwordFile  string
	sessionBudget int // negative or 0: none
}

// catalogConfig is the model catalog: the file that replaces the built-in
// one (empty: the built-in one), and how it is watched.
type catalogConfig struct {
	file string
	opts catalog.Options
}

// defaultConfig is the configuration with every setting at its default:
// the packages' own (their DefaultOptions) and the binary's.
func defaultConfig() *config {
	return &config{
		serve:   defaultServing(),
		service: service.DefaultConfig(),
		pool:    slngpool.DefaultOptions(),
		client:  slngclient.DefaultOptions(),
		callers: callers.DefaultOptions(),
		fleet:   fleetConfig{opts: fleet.DefaultOptions(), redis: fleet.Redis{Mode: fleet.DefaultRedisMode}},
		catalog: catalogConfig{opts: catalog.DefaultOptions()},
	}
}

// envPrefix starts every environment variable of the gateway.
const envPrefix = "SPEECH_GATEWAY_"

// envName is the environment variable of the setting name: envPrefix and
// the name in upper case, with _ for -.
func envName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// parseConfig reads the settings from the environment, then from flags,
// which win. Every duration and limit left at 0 takes its default; a
// negative one means what its setting's off says, and is refused where
// there is no off.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c, def := defaultConfig(), defaultConfig()
	fs := flag.NewFlagSet("speech-gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { writeUsage(stderr, def) }
	showVersion := fs.Bool("version", false, versionUsage)
	env := flag.NewFlagSet("environment", flag.ContinueOnError) // every setting, the secret ones too
	for _, s := range settings {
		if err := bind(env, s.name, s.field(c)); err != nil {
			return nil, err
		}
		if !s.envOnly {
			_ = bind(fs, s.name, s.field(c))
		}
	}
	var errs []error
	for _, s := range settings {
		v, name, warning := lookupEnv(getenv, s)
		if warning != "" {
			c.warnings = append(c.warnings, warning)
		}
		if v == "" {
			continue
		}
		if err := env.Set(s.name, v); err != nil {
			shown := fmt.Sprintf("%q", v)
			if s.envOnly {
				shown = "(secret)"
			}
			errs = append(errs, fmt.Errorf("%s=%s: %w", name, shown, err))
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *showVersion {
		return nil, errShowVersion
	}
	// The retired pprof switches: one that asked for profiles stops the
	// start-up, so that nobody finds them gone when they need them; a
	// "false" or "0" asked for nothing and is ignored.
	for _, name := range []string{"ADMIN_PPROF", "ADMIN_MEM_PROFILE_RATE"} {
		if v := strings.ToLower(getenv(name)); v != "" && v != "false" && v != "0" {
			errs = append(errs, fmt.Errorf("%s is no longer read: profiles are served on their own listener, %s=127.0.0.1:6060 (and %s)",
				name, envName("debug-listen"), envName("debug-mem-profile-rate")))
		}
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %q", fs.Args()))
	}
	for _, s := range settings {
		switch sign, number := sign(s.field(c)); {
		case !number:
		case sign == 0:
			copyField(s.field(c), s.field(def))
		case sign < 0 && s.off == "":
			errs = append(errs, fmt.Errorf("--%s cannot be negative: 0 means the default, %s", s.name, show(s.field(def))))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if !c.serve.dev { // the key first: it is what a new user misses first
		key, err := readKey(c.client.APIKey, c.serve.keyFile)
		if err != nil {
			return nil, err
		}
		c.client.APIKey = key
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	if c.serve.logFormat == "" {
		c.serve.logFormat = "json"
		if c.serve.dev {
			c.serve.logFormat = "console"
		}
	}
	if c.fleet.passwordFile != "" {
		b, err := os.ReadFile(c.fleet.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("read --redis-password-file: %w", err)
		}
		if c.fleet.redis.Password = strings.TrimSpace(string(b)); c.fleet.redis.Password == "" {
			return nil, fmt.Errorf("--redis-password-file %s is empty", c.fleet.passwordFile)
		}
	}
	return c, nil
}

// lookupEnv is the value of setting s in the environment, from its name
// or, for one release, its old one, and a warning when the old one is set.
func lookupEnv(getenv func(string) string, s setting) (v, name, warning string) {
	name = envName(s.name)
	v = getenv(name)
	if s.old == "" || getenv(s.old) == "" {
		return v, name, ""
	}
	if v != "" {
		return v, name, fmt.Sprintf("%s is ignored: %s is set, and %s is read no more after this release", s.old, name, s.old)
	}
	return getenv(s.old), s.old, fmt.Sprintf("%s is read for this release only: rename it %s", s.old, name)
}

// check refuses settings that cannot work together or are out of range.
func (c *config) check() error {
	s := &c.serve
	// HTTP/2 windows are at most 2^31-1; grpc-go ignores one under 64
	// KiB, and setting one alone leaves the other at 64 KiB.
	validWindow := func(n int) bool { return n >= 64<<10 && n <= math.MaxInt32 }
	if (s.streamWindow < 0) != (s.connWindow < 0) || (s.streamWindow > 0 && (!validWindow(s.streamWindow) || !validWindow(s.connWindow))) {
		return errors.New("--http2-stream-window and --http2-conn-window must both be negative, or both from 65536 to 2147483647")
	}
	if s.maxHeaderListSize < 4<<10 || s.maxHeaderListSize > 16<<20 {
		return errors.New("--max-header-list-size must be from 4096 to 16777216")
	}
	if s.memProfileRate != defaultServing().memProfileRate && s.debugListen == "" {
		return errors.New("--debug-mem-profile-rate needs --debug-listen")
	}
	if err := c.checkRegion(); err != nil {
		return err
	}
	if c.fleet.opts.LeaseTTL < 300*time.Millisecond {
		return errors.New("--fleet-lease-ttl must be at least 300ms")
	}
	if err := c.fleet.redis.CheckMode(); err != nil {
		return fmt.Errorf("--redis-mode: %w", err)
	}
	return checkTLS(c)
}

// checkRegion checks the region, from --slng-region or its deprecated
// name --slng-world-part, which refuses the world parts it once meant.
// Outside --dev, a region or a base URL is required: there is no default.
func (c *config) checkRegion() error {
	region, legacy := envName("slng-region"), envName("slng-world-part")
	c.client.Region = strings.ToLower(c.client.Region)
	if c.legacyWorldPart = strings.ToLower(c.legacyWorldPart); c.legacyWorldPart != "" {
		if err := slngclient.CheckRegion(c.legacyWorldPart); err != nil {
			return fmt.Errorf("--slng-world-part (%s), a deprecated name of --slng-region (%s): %w", legacy, region, err)
		}
		if c.client.Region != "" && c.client.Region != c.legacyWorldPart {
			return errors.New("--slng-world-part is a deprecated name of --slng-region: set one of them")
		}
		c.client.Region = c.legacyWorldPart
	}
	if c.client.Region != "" {
		if err := slngclient.CheckRegion(c.client.Region); err != nil {
			return fmt.Errorf("--slng-region (%s): %w", region, err)
		}
	}
	if !c.serve.dev && c.client.Region == "" && c.client.BaseURL == "" {
		return fmt.Errorf("no SLNG region: set --slng-region (%s) to one of %s, or --slng-base-url; "+
			"SLNG routes no request between regions, and not every model runs in every region",
			region, strings.Join(slngclient.KnownRegions, ", "))
	}
	return nil
}

// checkTLS refuses TLS settings that cannot work together: a certificate
// without its key, client CAs without a certificate, and the tls caller
// identity without client certificates to read it from.
func checkTLS(c *config) error {
	s := &c.serve
	if (s.tlsCertFile == "") != (s.tlsKeyFile == "") {
		return errors.New("--tls-cert-file and --tls-key-file go together: set both or neither")
	}
	if s.tlsClientCAFile != "" && s.tlsCertFile == "" {
		return errors.New("--tls-client-ca-file needs --tls-cert-file and --tls-key-file")
	}
	for _, src := range strings.Split(c.callers.Identity, ",") {
		if strings.TrimSpace(src) == "tls" && s.tlsClientCAFile == "" {
			return errors.New("--caller-identity tls needs --tls-client-ca-file: without client certificates there is no id to read")
		}
	}
	return nil
}

// readKey is the SLNG key: key, or the content of file (a mounted
// Kubernetes secret). The error never contains the key.
func readKey(key, file string) (string, error) {
	keyVar := envName("slng-api-key")
	switch {
	case key != "" && file != "":
		return "", fmt.Errorf("set %s or --slng-api-key-file, not both", keyVar)
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read --slng-api-key-file: %w", err)
		}
		key = strings.TrimSpace(string(b))
		if key == "" {
			return "", fmt.Errorf("--slng-api-key-file %s is empty", file)
		}
	case key == "":
		return "", fmt.Errorf("no SLNG key: set %s or --slng-api-key-file, or run with --dev to use the embedded simulator", keyVar)
	}
	if strings.ContainsAny(key, " \t\r\n") {
		return "", errors.New("the SLNG key contains whitespace")
	}
	return key, nil
}
