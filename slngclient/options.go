package slngclient

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Routes selects SLNG's URL family.
type Routes int

const (
	// RoutesBridge uses /v1/bridges/unmute/{tts|stt}/{model}, which always
	// speaks the SLNG protocol. The default.
	RoutesBridge Routes = iota
	// RoutesDirect uses /v1/{tts|stt}/{model}. Some direct routes speak a
	// provider's native protocol instead (slng-protocol.md section 7).
	RoutesDirect
)

// routeNames are the Routes' names in text: configuration, flags, logs.
var routeNames = [...]string{RoutesBridge: "bridge", RoutesDirect: "direct"}

// String is the name of r: bridge or direct.
func (r Routes) String() string {
	if int(r) < 0 || int(r) >= len(routeNames) {
		return fmt.Sprintf("Routes(%d)", int(r))
	}
	return routeNames[r]
}

// MarshalText is r's name, as String.
func (r Routes) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText sets r from its name, bridge or direct.
func (r *Routes) UnmarshalText(b []byte) error {
	for i, name := range routeNames {
		if string(b) == name {
			*r = Routes(i)
			return nil
		}
	}
	return fmt.Errorf("routes must be bridge or direct, not %q", b)
}

// Options configure a Client. The zero value of every field is its
// documented default.
type Options struct {
	// BaseURL is SLNG's base URL, e.g. "wss://us-east.api.slng.ai". When
	// empty, Region names the host. ws:// is allowed only for loopback
	// hosts or with AllowInsecure.
	BaseURL       string
	AllowInsecure bool
	// Region selects SLNG's regional host, wss://{Region}.api.slng.ai,
	// when BaseURL is empty: a host prefix such as "us-east" or
	// "eu-north" (KnownRegions). There is no default: SLNG's current
	// clients require a region ("requests are not routed between
	// regions", and the global api.slng.ai is retired for speech), so New
	// refuses options with neither. "na", "eu" and "ap" are world parts,
	// values of the X-World-Part-Override header, not hosts: New refuses
	// them (slng-real-clients.md, "Second reading").
	Region string
	// APIKey is the default SLNG key, sent as "Authorization: Bearer".
	APIKey string
	// TokenInQuery sends the key as ?token= instead of a header.
	TokenInQuery bool
	Routes       Routes
	// RegionOverride and WorldPartOverride, when set, are sent as the
	// X-Region-Override and X-World-Part-Override headers. SLNG's current
	// clients send neither (Authorization is their only header) and say
	// they are retired for speech; they are sent only when asked for.
	// Letters, digits, '.', '_' and '-', at most 64 bytes.
	RegionOverride, WorldPartOverride string
	// ProviderKey, when set, is sent as X-Slng-Provider-Key (BYOK).
	ProviderKey string
	// HandshakeTimeout bounds the WebSocket handshake: the TCP connection,
	// TLS and the HTTP upgrade. An upstream that accepts the connection
	// and never answers fails the dial with KindTimeout, which says SLNG
	// is unwell, instead of holding the dial to its caller's deadline.
	// Default 10 s.
	HandshakeTimeout time.Duration
	// ReadyTimeout bounds the wait for `ready` after `init`. Default 5 s,
	// as SLNG's own clients use.
	ReadyTimeout time.Duration
	// TTSKeepalive and STTKeepalive: after this long without sending, a
	// session sends {"type":"keepalive"}, because WebSocket pings do not
	// reset SLNG's idle timer. Defaults 20 s and 5 s; negative disables.
	TTSKeepalive, STTKeepalive time.Duration
	// PingInterval and PingTimeout: WebSocket pings find dead peers. A pong
	// later than PingTimeout ends the session with KindTimeout. Defaults
	// 15 s and 10 s; a negative PingInterval disables pings.
	PingInterval, PingTimeout time.Duration
	// ReadLimit bounds one incoming message. Default 4 MiB.
	ReadLimit int64
	// HTTPClient performs the handshake. Default http.DefaultClient.
	HTTPClient *http.Client
	// Logger receives debug logs; nil discards them. The key is never
	// logged.
	Logger *zap.Logger
}

// Client dials SLNG sessions. It holds no connections itself and may be
// used concurrently.
type Client struct {
	opts Options
	base *url.URL
	log  *zap.Logger
	// key is the default key: Options.APIKey until SetAPIKey replaces it.
	key atomic.Pointer[string]
	// styles is how each model's route ends TTS turns, as its sessions
	// learnt it.
	styles endStyles
}

// SetAPIKey replaces the default key for sessions dialled from now on;
// sessions already open keep theirs. It is safe to call concurrently with
// dials, e.g. when the mounted Secret holding the key changes.
func (c *Client) SetAPIKey(key string) {
	c.key.Store(&key)
}

// apiKey is the default key in force.
func (c *Client) apiKey() string {
	if k := c.key.Load(); k != nil {
		return *k
	}
	return ""
}

// KnownRegions are the host prefixes of SLNG's speech regions its region
// page lists: {prefix}.api.slng.ai. Regions are added from time to time,
// so a Region outside the list is taken as it is.
var KnownRegions = []string{"us-east", "us-west", "eu-north", "eu-west", "au", "br", "gb", "id", "il", "in", "jp", "sg", "za"}

// worldParts are the values of X-World-Part-Override, which earlier
// clients took for hosts.
var worldParts = map[string]bool{"na": true, "eu": true, "ap": true}

// IsKnownRegion reports whether region is one of KnownRegions.
func IsKnownRegion(region string) bool { return slices.Contains(KnownRegions, region) }

// CheckRegion reports a region that cannot name a host: not a DNS label,
// or a world part.
func CheckRegion(region string) error {
	switch {
	case worldParts[region]:
		return fmt.Errorf("%q is a world part, a value of the X-World-Part-Override header, not a region: "+
			"SLNG's hosts are {region}.api.slng.ai, with regions such as %s", region, strings.Join(KnownRegions, ", "))
	case !regionPattern.MatchString(region):
		return fmt.Errorf("region %q is not a host prefix such as us-east", region)
	}
	return nil
}

// regionPattern is a DNS label: the region becomes a host name.
var regionPattern = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$`)

// regionalHost reads the region of a host of the form
// {region}.api.slng.ai.
var regionalHost = regexp.MustCompile(`^([a-z0-9-]+)\.api\.slng\.ai$`)

// overridePattern bounds override header values to what region names use.
var overridePattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// New validates opts and returns a Client. It returns an error for
// neither a BaseURL nor a Region, a BaseURL that is not ws:// or wss:// as
// described there, a Region that CheckRegion refuses, or an override that
// is not a plain name.
func New(opts Options) (*Client, error) {
	opts.Region = strings.ToLower(opts.Region)
	switch {
	case opts.BaseURL == "" && opts.Region == "":
		return nil, fmt.Errorf("slngclient: no Region (a host prefix such as %s) and no BaseURL", strings.Join(KnownRegions, ", "))
	case opts.Region != "":
		if err := CheckRegion(opts.Region); err != nil {
			return nil, fmt.Errorf("slngclient: %w", err)
		}
	}
	for _, o := range [...]struct{ name, v string }{{"RegionOverride", opts.RegionOverride}, {"WorldPartOverride", opts.WorldPartOverride}} {
		if o.v != "" && !overridePattern.MatchString(o.v) {
			return nil, fmt.Errorf("slngclient: %s %q must be letters, digits, '.', '_' or '-'", o.name, o.v)
		}
	}
	if opts.BaseURL == "" {
		opts.BaseURL = "wss://" + opts.Region + ".api.slng.ai"
	}
	u, err := url.Parse(opts.BaseURL)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, errors.New("slngclient: BaseURL must be ws:// or wss:// host[:port] without query, fragment or credentials")
	}
	switch u.Scheme {
	case "wss":
	case "ws":
		if !opts.AllowInsecure && !isLoopback(u.Hostname()) {
			return nil, errors.New("slngclient: ws:// is allowed only for loopback hosts (or with AllowInsecure)")
		}
	default:
		return nil, fmt.Errorf("slngclient: BaseURL scheme %q is not ws or wss", u.Scheme)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	opts = opts.withDefaults()
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	c := &Client{opts: opts, base: u, log: log.Named("slngclient")}
	c.SetAPIKey(opts.APIKey)
	return c, nil
}

// DefaultOptions are the options New uses for a zero Options: every knob
// at its documented default. BaseURL and Region stay empty: there is no
// default region, and New refuses options with neither.
func DefaultOptions() Options { return Options{}.withDefaults() }

func (o Options) withDefaults() Options {
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 5 * time.Second
	}
	if o.TTSKeepalive == 0 {
		o.TTSKeepalive = 20 * time.Second
	}
	if o.STTKeepalive == 0 {
		o.STTKeepalive = 5 * time.Second
	}
	if o.PingInterval == 0 {
		o.PingInterval = 15 * time.Second
	}
	if o.PingTimeout <= 0 {
		o.PingTimeout = 10 * time.Second
	}
	if o.ReadLimit <= 0 {
		o.ReadLimit = 4 << 20
	}
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	return o
}

// Host is the base URL the Client dials, e.g. "wss://us-east.api.slng.ai":
// the configured BaseURL or Region's host. It holds no secret (New refuses
// credentials and queries in BaseURL) and may be logged.
func (c *Client) Host() string { return c.base.String() }

// Region is the SLNG region the Client dials: Options.Region, or the
// region of a BaseURL of the form wss://{region}.api.slng.ai; "" for
// another host (a simulator, a proxy).
func (c *Client) Region() string {
	if c.opts.Region != "" {
		return c.opts.Region
	}
	if m := regionalHost.FindStringSubmatch(c.base.Hostname()); m != nil {
		return m[1]
	}
	return ""
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Endpoint selects the model of one session and, optionally, overrides the
// Client's credentials and override headers for it. It never changes the
// host: that is the Client's (Options.BaseURL, Options.Region).
type Endpoint struct {
	Model string
	// APIKey and ProviderKey replace Options.APIKey and
	// Options.ProviderKey for this session when set.
	APIKey, ProviderKey string
	// Region and WorldPart replace Options.RegionOverride and
	// Options.WorldPartOverride for this session when set: they are sent
	// as the X-Region-Override and X-World-Part-Override headers, which
	// SLNG's current clients say are retired for speech.
	Region, WorldPart string
}

// modelPattern is the model variant syntax SLNG's clients validate with
// (slng-protocol.md section 1): provider/model[/...][:variant].
var modelPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)+(?::[A-Za-z0-9][A-Za-z0-9._-]*)?$`)

// MaxModelLength bounds a model name.
const MaxModelLength = 128

// ValidateModel reports whether model is an SLNG model variant such as
// "deepgram/aura:2". Because the pattern admits only letters, digits, '.',
// '_', '-', '/' and one ':', a valid name cannot inject a path, query or
// fragment into the URL; "." and ".." segments are refused too.
func ValidateModel(model string) error {
	if len(model) > MaxModelLength || !modelPattern.MatchString(model) {
		return ErrInvalidModel
	}
	for _, seg := range strings.Split(strings.SplitN(model, ":", 2)[0], "/") {
		if strings.Trim(seg, ".") == "" {
			return ErrInvalidModel
		}
	}
	return nil
}

// endpointURL builds the session URL; the returned display form has the
// key redacted and is the only form that may be logged.
func (c *Client) endpointURL(kind string, model, key string) (full, display string) {
	u := *c.base
	if c.opts.Routes == RoutesDirect {
		u.Path += "/v1/" + kind + "/" + model
	} else {
		u.Path += "/v1/bridges/unmute/" + kind + "/" + model
	}
	display = u.String()
	if c.opts.TokenInQuery && key != "" {
		u.RawQuery = url.Values{"token": {key}}.Encode()
		display += "?token=REDACTED"
	}
	return u.String(), display
}

func (c *Client) headers(ep Endpoint, key string) http.Header {
	h := http.Header{}
	if key != "" && !c.opts.TokenInQuery {
		h.Set("Authorization", "Bearer "+key)
	}
	set := func(name, v, def string) {
		if v == "" {
			v = def
		}
		if v != "" {
			h.Set(name, v)
		}
	}
	set("X-Region-Override", ep.Region, c.opts.RegionOverride)
	set("X-World-Part-Override", ep.WorldPart, c.opts.WorldPartOverride)
	set("X-Slng-Provider-Key", ep.ProviderKey, c.opts.ProviderKey)
	return h
}
