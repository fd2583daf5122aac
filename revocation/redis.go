package revocation

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Defaults of RedisOptions.
const (
	DefaultBlock      = 5 * time.Second
	DefaultMaxBackoff = time.Second
	minBackoff        = 50 * time.Millisecond
	// pageSize bounds one XREAD or XRANGE reply, so a consumer catching up applies
	// entries in steps instead of holding a huge reply in memory.
	pageSize = 512
)

// RedisOptions configures a RedisPublisher or a RedisRevocationConsumer.
//
// Streams are read with a single XREAD over all keys, so on Redis Cluster the keys must
// share a hash slot: give StreamPrefix a hash tag, e.g. "{caracal}:".
type RedisOptions struct {
	// Client is the Redis connection pool. Required; the caller owns and closes it.
	Client redis.UniversalClient
	// Key is the HMAC stream key. When set, a consumer drops (and counts) unsigned and
	// badly signed entries. A publisher does not use it: fields arrive signed.
	Key []byte
	// Retention is the trimming horizon and the point a consumer rebuilds from. It must
	// be at least the maximum mandate lifetime; DefaultRetention when zero.
	Retention time.Duration
	// Block is the XREAD BLOCK duration (DefaultBlock when zero). Heartbeats end a
	// blocking read as they arrive, so it does not bound freshness.
	Block time.Duration
	// Streams are the logical stream names to consume; both streams of docs/protocol.md section 6 when empty.
	Streams []string
	// StreamPrefix is prepended to every stream name to form the Redis key, to
	// separate deployments (or tests) sharing a server. Signatures cover the logical
	// name, so the prefix never affects them.
	StreamPrefix string
	// Keys, when set, receives the caracal.keys entries; the consumer then reads that
	// stream as well.
	Keys *KeyWatchers
	// MaxBackoff caps the delay between reconnection attempts (DefaultMaxBackoff when
	// zero). The delay starts at 50 ms and doubles per failure.
	MaxBackoff time.Duration
	// Logger receives connection state changes; zap.NewNop when nil.
	Logger *zap.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

func (o RedisOptions) withDefaults() RedisOptions {
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.Block <= 0 {
		o.Block = DefaultBlock
	}
	if len(o.Streams) == 0 {
		o.Streams = []string{StreamSessionsRevoke, StreamDelegationInvalidate}
	}
	if o.Keys != nil && !slices.Contains(o.Streams, StreamKeys) {
		o.Streams = append(slices.Clip(o.Streams), StreamKeys)
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// RedisRevocationConsumer keeps a RevokedSet and Epochs up to date from the Redis streams.
// Every consumer reads every entry: it uses plain XREAD BLOCK from its own position,
// no consumer group, and never sleeps between reads.
//
// It rebuilds by reading the streams from the retention horizon (XRANGE in pages) when
// it starts and whenever its position is lost: the stream was reset (deleted, or
// rolled back by a failover, so its last id is below the position) or entries after
// the position were trimmed or deleted before they were read. After a reconnection it
// first checks its position and, when it still holds, catches up from it with the same
// paged XRANGE; otherwise it rebuilds. Applying an entry twice changes nothing, so
// these reads may overlap what was already applied.
//
// Connection failures are retried with exponential backoff up to MaxBackoff. The
// Watermark comes from the publishers' heartbeats and counts only once the first
// rebuild completed; it stops advancing while Redis does not answer, and verifiers use
// it to fail closed.
type RedisRevocationConsumer struct {
	o       RedisOptions
	app     applier
	streams []*streamPos
	byKey   map[string]*streamPos
	cancel  context.CancelFunc

	ready     chan struct{}
	readyOnce sync.Once

	synced   atomic.Bool  // the first rebuild completed
	lag      atomic.Int64 // ns
	reads    atomic.Uint64
	rebuilds atomic.Uint64
	gaps     atomic.Uint64
	errs     atomic.Uint64
}

// streamPos is the consumer's position in one stream. Only the run goroutine uses it.
type streamPos struct {
	key, name string
	known     bool     // false until the first read: rebuild from the horizon
	id        streamID // last id read (or the horizon, before any entry was read)
	// fromStream is true when id is (or is bounded by) an id the stream really held,
	// so a stream whose last id is below it was reset. A horizon id proves nothing.
	fromStream bool
}

// errLostPosition makes the run loop rebuild at once, without backoff.
var errLostPosition = errors.New("stream position lost")

// NewRedisRevocationConsumer starts a consumer that applies entries to st and, when ep
// is not nil, to ep. It returns at once; Ready tells when the first rebuild completed.
// It runs until ctx is cancelled or Close is called. An unreachable Redis is not an
// error here: the consumer keeps trying, and its zero Watermark keeps verifiers closed.
func NewRedisRevocationConsumer(ctx context.Context, st *RevokedSet, ep *Epochs, o RedisOptions) (*RedisRevocationConsumer, error) {
	if o.Client == nil {
		return nil, errors.New("revocation consumer: no Redis client configured")
	}
	if st == nil {
		return nil, errors.New("revocation consumer: no revoked set")
	}
	o = o.withDefaults()
	c := &RedisRevocationConsumer{
		o:     o,
		app:   applier{st: st, ep: ep, key: o.Key, log: o.Logger, now: o.Now, keys: o.Keys},
		byKey: make(map[string]*streamPos),
		ready: make(chan struct{}),
	}
	for _, name := range o.Streams {
		if name != StreamSessionsRevoke && name != StreamDelegationInvalidate && name != StreamKeys {
			return nil, fmt.Errorf("revocation consumer: unknown stream %q", name)
		}
		key := o.StreamPrefix + name
		if _, dup := c.byKey[key]; dup {
			return nil, fmt.Errorf("revocation consumer: stream %q listed twice", name)
		}
		sp := &streamPos{key: key, name: name}
		c.streams = append(c.streams, sp)
		c.byKey[key] = sp
	}
	ctx, c.cancel = context.WithCancel(ctx)
	go c.run(ctx)
	return c, nil
}

// Ready is closed once the first rebuild has completed: from then on the RevokedSet holds
// every retained revocation.
func (c *RedisRevocationConsumer) Ready() <-chan struct{} { return c.ready }

// Watermark is the newest valid heartbeat watermark read, the zero time until the
// first rebuild completed or while no valid heartbeat arrived: a heartbeat met during
// the rebuild counts only once the rest of the retained history is applied too.
func (c *RedisRevocationConsumer) Watermark() time.Time {
	if !c.synced.Load() {
		return time.Time{}
	}
	return c.app.currentWatermark()
}

// Lag is the age of the newest applied entry while the consumer is behind the stream
// (its last read filled a whole page), and 0 once it has read everything there was.
func (c *RedisRevocationConsumer) Lag() time.Duration { return time.Duration(c.lag.Load()) }

// Stats returns the consumer's counters.
func (c *RedisRevocationConsumer) Stats() Stats {
	s := c.app.stats()
	s.Reads = c.reads.Load()
	s.Rebuilds = c.rebuilds.Load()
	s.Gaps = c.gaps.Load()
	s.Errors = c.errs.Load()
	s.Synced = c.synced.Load()
	return s
}

// Close stops the consumer and returns at once. A blocking read in flight is
// abandoned: it ends by itself within Block, and its result is discarded.
func (c *RedisRevocationConsumer) Close() error {
	c.cancel()
	return nil
}

func (c *RedisRevocationConsumer) run(ctx context.Context) {
	var (
		synced  bool
		backoff time.Duration
	)
	for ctx.Err() == nil {
		var err error
		if synced {
			err = c.read(ctx)
		} else {
			err = c.sync(ctx)
			if err == nil {
				synced = true
				c.synced.Store(true)
				c.readyOnce.Do(func() { close(c.ready) })
			}
		}
		switch {
		case err == nil:
			if backoff > 0 {
				c.o.Logger.Info("revocation streams reachable again")
				backoff = 0
			}
		case ctx.Err() != nil:
			return
		case errors.Is(err, errLostPosition):
			synced = false
		default:
			synced = false
			c.errs.Add(1)
			if backoff == 0 {
				c.o.Logger.Warn("revocation streams unreachable; retrying", zap.Error(err))
				backoff = minBackoff
			} else {
				backoff = min(2*backoff, c.o.MaxBackoff)
			}
			if !wait(ctx, jitter(backoff)) {
				return
			}
		}
	}
}

// read waits for new entries with XREAD BLOCK and applies them. An empty reply (the
// BLOCK timed out, or entries were deleted before they could be delivered) is the
// moment to sweep the RevokedSet and to check that the positions still hold.
func (c *RedisRevocationConsumer) read(ctx context.Context) error {
	args := &redis.XReadArgs{
		Streams: make([]string, 0, 2*len(c.streams)),
		Count:   pageSize,
		Block:   c.o.Block,
	}
	for _, sp := range c.streams {
		args.Streams = append(args.Streams, sp.key)
	}
	for _, sp := range c.streams {
		args.Streams = append(args.Streams, sp.id.String())
	}
	res, err := c.o.Client.XRead(ctx, args).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("reading revocation streams: %w", err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	c.reads.Add(1)
	var (
		n      int
		behind bool
		newest streamID
	)
	for _, xs := range res {
		sp, ok := c.byKey[xs.Stream]
		if !ok {
			continue
		}
		for _, m := range xs.Messages {
			if err := c.applyMessage(sp, m); err != nil {
				return err
			}
		}
		n += len(xs.Messages)
		if len(xs.Messages) >= pageSize {
			behind = true
			newest = sp.id
		}
	}
	if behind {
		c.lag.Store(int64(max(c.o.Now().Sub(newest.time()), 0)))
	} else {
		c.lag.Store(0)
	}
	if n > 0 {
		return nil
	}
	c.app.st.Sweep()
	return c.checkPositions(ctx)
}

// sync brings every stream up to date: from the retention horizon when its position
// is unknown or lost, else from its position.
func (c *RedisRevocationConsumer) sync(ctx context.Context) error {
	infos, err := c.info(ctx)
	if err != nil {
		return err
	}
	horizon := idAt(c.o.Now().Add(-c.o.Retention))
	rebuilt := false
	for i, sp := range c.streams {
		start := "(" + sp.id.String()
		if !sp.known || c.lost(sp, infos[i]) {
			if sp.known {
				c.gaps.Add(1)
				c.o.Logger.Warn("revocation stream position lost; rebuilding from the retention horizon",
					zap.String("stream", sp.key), zap.Stringer("position", sp.id))
			}
			rebuilt = true
			sp.known, sp.id, sp.fromStream = true, horizon, false
			start = horizon.String()
		}
		if err := c.readRange(ctx, sp, start); err != nil {
			return err
		}
		// Every entry up to the last id generated before the range read has now been
		// read or is gone (or lies before the horizon, on purpose), so the position
		// moves there. Otherwise the removals that caused a rebuild would keep
		// looking like fresh gaps.
		if si := infos[i]; si.exists && si.lastID.compare(sp.id) > 0 {
			sp.id, sp.fromStream = si.lastID, true
		}
	}
	if rebuilt {
		c.rebuilds.Add(1)
	}
	c.lag.Store(0)
	return nil
}

// readRange applies the entries of one stream from start on, a page at a time.
func (c *RedisRevocationConsumer) readRange(ctx context.Context, sp *streamPos, start string) error {
	for {
		msgs, err := c.o.Client.XRangeN(ctx, sp.key, start, "+", pageSize).Result()
		if err != nil {
			return fmt.Errorf("rebuilding from %s: %w", sp.key, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for _, m := range msgs {
			if err := c.applyMessage(sp, m); err != nil {
				return err
			}
		}
		if len(msgs) < pageSize {
			return nil
		}
		c.lag.Store(int64(max(c.o.Now().Sub(sp.id.time()), 0)))
		start = "(" + sp.id.String()
	}
}

// streamInfo is the part of XINFO STREAM that decides whether a position still holds.
type streamInfo struct {
	exists      bool
	lastID      streamID  // last generated id, even if that entry is gone
	first, last *streamID // first and last entries held; nil when the stream is empty
	maxDeleted  *streamID // nil when the server does not report it (Redis < 7)
}

// info runs XINFO STREAM for every stream in one round trip.
func (c *RedisRevocationConsumer) info(ctx context.Context) ([]streamInfo, error) {
	pipe := c.o.Client.Pipeline()
	cmds := make([]*redis.XInfoStreamCmd, len(c.streams))
	for i, sp := range c.streams {
		cmds[i] = pipe.XInfoStream(ctx, sp.key)
	}
	// Per-command errors are examined below: a missing key is an answer, not a failure.
	_, _ = pipe.Exec(ctx)
	out := make([]streamInfo, len(c.streams))
	for i, cmd := range cmds {
		res, err := cmd.Result()
		if err != nil {
			if strings.Contains(err.Error(), "no such key") {
				continue
			}
			return nil, fmt.Errorf("inspecting %s: %w", c.streams[i].key, err)
		}
		si := streamInfo{exists: true}
		if si.lastID, err = parseStreamID(res.LastGeneratedID); err != nil {
			return nil, fmt.Errorf("inspecting %s: %w", c.streams[i].key, err)
		}
		if res.Length > 0 {
			if id, err := parseStreamID(res.FirstEntry.ID); err == nil {
				si.first = &id
			}
			if id, err := parseStreamID(res.LastEntry.ID); err == nil {
				si.last = &id
			}
		}
		if id, err := parseStreamID(res.MaxDeletedEntryID); err == nil {
			si.maxDeleted = &id
		}
		out[i] = si
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return out, nil
}

// lost reports whether reading on from sp's position could miss entries.
func (c *RedisRevocationConsumer) lost(sp *streamPos, si streamInfo) bool {
	if !si.exists {
		// The stream is gone. If it held what we read, it was reset.
		return sp.fromStream
	}
	switch {
	case sp.fromStream && si.lastID.compare(sp.id) < 0:
		// The stream ends below our position: it was recreated or rolled back, and
		// new entries may get ids we would skip.
		return true
	case si.lastID.compare(sp.id) > 0 && (si.last == nil || si.last.compare(sp.id) <= 0):
		// Entries beyond our position were added and are all gone again: trimmed or
		// deleted before we read them.
		return true
	case si.maxDeleted != nil && si.maxDeleted.compare(sp.id) > 0:
		// Redis 7 reports the highest id removed by XDEL: one we never read.
		return true
	default:
		// Everything up to our position was trimmed and the stream now starts
		// beyond it: the entries in between, if there were any, are gone. This cannot
		// be told from "there were none", and a false alarm only costs a rebuild.
		return si.first != nil && si.first.compare(sp.id) > 0
	}
}

// checkPositions runs after an empty read and asks for a rebuild when a position no
// longer holds.
func (c *RedisRevocationConsumer) checkPositions(ctx context.Context) error {
	infos, err := c.info(ctx)
	if err != nil {
		return err
	}
	for i, sp := range c.streams {
		if c.lost(sp, infos[i]) {
			return errLostPosition
		}
	}
	return nil
}

// applyMessage verifies and applies one entry and advances the position past it.
func (c *RedisRevocationConsumer) applyMessage(sp *streamPos, m redis.XMessage) error {
	id, err := parseStreamID(m.ID)
	if err != nil {
		return fmt.Errorf("reading %s: entry %q: %w", sp.key, m.ID, err)
	}
	fields := make(map[string]string, len(m.Values))
	for k, v := range m.Values {
		s, ok := v.(string)
		if !ok {
			c.app.malformed.Add(1)
			sp.id, sp.fromStream = id, true
			return nil
		}
		fields[k] = s
	}
	c.app.apply(sp.name, fields)
	sp.id, sp.fromStream = id, true
	return nil
}

// wait pauses for d unless ctx ends first; it reports whether ctx is still live.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// jitter spreads reconnections of many consumers over [d/2, d).
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

var (
	_ Publisher = (*RedisPublisher)(nil)
	_ Publisher = (*Bus)(nil)
	_ Source    = (*RedisRevocationConsumer)(nil)
	_ Source    = (*busSource)(nil)
)
