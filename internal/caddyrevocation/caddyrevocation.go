// Package caddyrevocation gives every Caracal module of a process one shared revocation
// pipeline per transport: the revocation set, the delegation epochs, the consumer that
// feeds them and the publisher. The STS publishes through it (via the outbox relay) and
// every caracal_mandate handler reads from it; sharing through a caddy.UsagePool keeps
// one Redis consumer per process across config reloads.
package caddyrevocation

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caracalgw/caracal/internal/caddyfileopts"
	"github.com/caracalgw/caracal/revocation"
)

// Config selects the revocation transport.
type Config struct {
	// Transport is "local" (the in-process bus; default) or a Redis URL
	// (redis:// or rediss://), placeholders allowed.
	Transport string `json:"transport,omitempty"`
	// StreamKey signs published entries and makes consumers drop unsigned or badly
	// signed ones (HMAC-SHA256). Placeholders allowed, e.g. {env.CARACAL_STREAM_KEY}.
	StreamKey string `json:"stream_key,omitempty"`
	// StreamPrefix is prepended to the Redis stream names (to separate deployments
	// sharing a server); signatures cover the unprefixed names.
	StreamPrefix string `json:"stream_prefix,omitempty"`
	// Retention is how long entries are kept (default 24h1m); it must be at least the
	// longest mandate lifetime, sessions included.
	Retention caddy.Duration `json:"retention,omitempty"`
}

// Pipeline is one process-wide revocation pipeline.
type Pipeline struct {
	Revocations *revocation.RevokedSet
	Epochs      *revocation.Epochs
	Source      revocation.Source
	Publisher   revocation.Publisher
	// Keys hands the caracal.keys entries (zone key rotations) to the verifiers that
	// fetch zone keys remotely.
	Keys *revocation.KeyWatchers
	// Key is the stream key (nil when entries are unsigned).
	Key []byte
	// Transport is "local" or "redis".
	Transport string

	prefix    string
	client    *redis.Client // the consumer's
	pubClient *redis.Client // the publisher's
}

// Destruct stops the consumer and closes the Redis client.
func (p *Pipeline) Destruct() error {
	live.remove(p)
	err := p.Source.Close()
	for _, c := range []*redis.Client{p.client, p.pubClient} {
		if c != nil {
			err = errors.Join(err, c.Close())
		}
	}
	return err
}

// Handle is a reference to a shared Pipeline.
type Handle struct {
	*Pipeline
	key string
}

// Release drops the reference; the pipeline stops when no reference remains.
func (h *Handle) Release() error {
	if h == nil || h.key == "" {
		return nil
	}
	_, err := pool.Delete(h.key)
	h.key = ""
	return err
}

var pool = caddy.NewUsagePool()

// local is the in-process bus: one per process, so that an STS and a gateway of the
// same process (and of successive configs) see the same entries.
var local = revocation.NewBus(revocation.DefaultRetention, nil)

// Open returns the shared pipeline for cfg, starting it on first use. It never waits
// for Redis: the consumer rebuilds in the background, and until it has done so and
// read a publisher's heartbeat its Source has no watermark, so verifiers answer 503
// instead of serving from an empty revocation set. ctx is not used beyond the call.
func Open(_ context.Context, cfg Config, logger *zap.Logger) (*Handle, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	repl := caddy.NewReplacer()
	transport := strings.TrimSpace(repl.ReplaceKnown(cfg.Transport, ""))
	if transport == "" {
		transport = "local"
	}
	keyText := repl.ReplaceKnown(cfg.StreamKey, "")
	var key []byte
	if keyText != "" {
		if len(keyText) < 16 {
			return nil, errors.New("revocation: stream_key must be at least 16 characters")
		}
		key = []byte(keyText)
	}
	retention := time.Duration(cfg.Retention)
	if retention <= 0 {
		retention = revocation.DefaultRetention
	}
	digest := sha256.Sum256([]byte(transport + "\x00" + cfg.StreamPrefix + "\x00" + keyText + "\x00" + retention.String()))
	poolKey := hex.EncodeToString(digest[:])

	val, _, err := pool.LoadOrNew(poolKey, func() (caddy.Destructor, error) {
		p := &Pipeline{Revocations: revocation.NewRevokedSet(nil), Epochs: new(revocation.Epochs), Key: key, Keys: revocation.NewKeyWatchers(nil)}
		if transport == "local" {
			if cfg.StreamPrefix != "" {
				return nil, errors.New("revocation: stream_prefix applies to Redis only")
			}
			p.Transport = "local"
			p.Publisher = local
			p.Source = local.AttachWithKeys(p.Revocations, p.Epochs, key, logger, p.Keys)
			p.started(logger, "")
			return p, nil
		}
		opts, err := redis.ParseURL(transport)
		if err != nil {
			return nil, fmt.Errorf("revocation: transport must be local or a redis:// URL: %w", err)
		}
		tuneRedis(opts)
		p.Transport = "redis"
		p.prefix = cfg.StreamPrefix
		p.client = redis.NewClient(opts)
		ro := revocation.RedisOptions{Client: p.client, Key: key, Retention: retention, StreamPrefix: cfg.StreamPrefix, Logger: logger, Keys: p.Keys}
		// The publisher gets a client of its own, tuned so that a returning Redis is used
		// at once (go-redis's dial breaker would otherwise hold failures for a while).
		pubOpts := *opts
		revocation.TunePublisherOptions(&pubOpts)
		p.pubClient = redis.NewClient(&pubOpts)
		po := ro
		po.Client = p.pubClient
		p.Publisher = revocation.NewRedisPublisher(po)
		// The consumer lives as long as the pipeline, not as long as this config.
		consumer, err := revocation.NewRedisRevocationConsumer(context.Background(), p.Revocations, p.Epochs, ro)
		if err != nil {
			_ = p.client.Close()
			_ = p.pubClient.Close()
			return nil, fmt.Errorf("revocation: starting the Redis consumer: %w", err)
		}
		p.Source = consumer
		p.started(logger, opts.Addr)
		return p, nil
	})
	if err != nil {
		return nil, err
	}
	return &Handle{Pipeline: val.(*Pipeline), key: poolKey}, nil
}

// started registers a new pipeline for the metrics and logs its one INFO line.
func (p *Pipeline) started(logger *zap.Logger, addr string) {
	live.add(p)
	fields := []zap.Field{zap.String("transport", p.Transport), zap.String("stream_prefix", p.prefix), zap.Bool("signed", len(p.Key) > 0)}
	if addr != "" {
		fields = append(fields, zap.String("addr", addr))
	}
	logger.Info("revocation pipeline started", fields...)
}

// Redis client settings. The consumer and the outbox relay retry on their own, so a
// dial is tried once and briefly: a command must fail fast while Redis is away and the
// next one must reach it as soon as it is back. go-redis's dial breaker (open after
// PoolSize failed dials) probes once a second, which bounds the delay after a return.
const (
	redisDialTimeout   = time.Second
	redisDialerRetries = 1
)

var redisLogger sync.Once

// tuneRedis applies the settings above where the URL did not choose, and routes
// go-redis's own log lines (dial failures) into zap at debug level once per process.
func tuneRedis(opts *redis.Options) {
	if opts.DialTimeout == 0 {
		opts.DialTimeout = redisDialTimeout
	}
	if opts.DialerRetries == 0 {
		opts.DialerRetries = redisDialerRetries
	}
	// The process's logger, not the caller's: the setting is global and outlives it.
	redisLogger.Do(func() { redis.SetLogger(zapRedisLogger{}) })
}

// zapRedisLogger writes go-redis's own lines (dial failures, pool notices) to Caddy's
// default logger at debug level, so that nothing is printed outside Caddy's log format.
// It looks the logger up on every line: a config load may replace Caddy's default
// logger after the first pipeline started.
type zapRedisLogger struct{}

func (zapRedisLogger) Printf(_ context.Context, format string, v ...any) {
	if c := caddy.Log().Named("redis").Check(zapcore.DebugLevel, ""); c != nil {
		c.Message = fmt.Sprintf(format, v...)
		c.Write()
	}
}

// UnmarshalCaddyfile parses a revocation setting; the dispenser is positioned on the
// option's name. The settings after the transport are given either on the same line, as
// key/value pairs, or in a block (or both, each setting once):
//
//	revocation local | <redis url> [stream_key <secret>] [stream_prefix <prefix>] [retention <duration>]
//	revocation local | <redis url> {
//		stream_key    <secret>
//		stream_prefix <prefix>
//		retention     <duration>
//	}
//
// A block cannot close on the line it opens on: the Caddyfile parser refuses any token
// after "{" on its line, hence the one-line form.
func (c *Config) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	name := d.Val()
	if !d.NextArg() {
		return caddyfileopts.Empty(d, name)
	}
	c.Transport = d.Val()
	seen := caddyfileopts.NewSeen(name)
	for d.NextArg() {
		if err := c.setting(d, seen); err != nil {
			return err
		}
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if err := c.setting(d, seen); err != nil {
			return err
		}
		if d.NextArg() {
			return d.Errf("%s takes one value, got another: %q", name, d.Val())
		}
	}
	return nil
}

// setting reads one of the settings after the transport, on the line or in the block.
func (c *Config) setting(d *caddyfile.Dispenser, seen *caddyfileopts.Seen) error {
	if err := seen.Add(d); err != nil {
		return err
	}
	switch d.Val() {
	case "stream_key":
		return nextValue(d, &c.StreamKey)
	case "stream_prefix":
		return nextValue(d, &c.StreamPrefix)
	case "retention":
		name := d.Val()
		var s string
		if err := nextValue(d, &s); err != nil {
			return err
		}
		v, err := caddy.ParseDuration(s)
		if err != nil {
			return d.Errf("%s: %v", name, err)
		}
		c.Retention = caddy.Duration(v)
		return nil
	default:
		return seen.Unknown(d)
	}
}

// nextValue reads the value after a setting's name: the next token on the line. On the
// one-line form the settings follow each other, so only a missing value is an error
// here; in a block the caller refuses a second value.
func nextValue(d *caddyfile.Dispenser, dst *string) error {
	name := d.Val()
	if !d.NextArg() {
		return caddyfileopts.Empty(d, name)
	}
	*dst = d.Val()
	return nil
}

// WithDefaults returns c with every setting it leaves unset taken from defaults (the
// caracal global option). The stream prefix is not taken for the local bus, where it
// has no meaning.
func (c Config) WithDefaults(defaults Config) Config {
	if c.Transport == "" {
		c.Transport = defaults.Transport
	}
	if c.StreamKey == "" {
		c.StreamKey = defaults.StreamKey
	}
	if c.StreamPrefix == "" && c.Transport != "" && c.Transport != "local" {
		c.StreamPrefix = defaults.StreamPrefix
	}
	if c.Retention == 0 {
		c.Retention = defaults.Retention
	}
	return c
}
