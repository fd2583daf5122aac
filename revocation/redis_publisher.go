package revocation

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrHistoryLost means the streams may no longer hold every entry published before:
// the generation marker is gone or changed, or a stream ends below an id this
// publisher appended. The relay must republish from storage and set a new marker.
var ErrHistoryLost = errors.New("revocation stream history lost")

// GenerationKey is the name, after StreamPrefix, of the generation marker: a random
// value set once the streams hold every live revocation. Whatever wipes the streams
// (a restart without persistence, FLUSHALL, a failover to an empty replica) wipes it
// too. On Redis Cluster the prefix's hash tag puts it in the streams' slot.
const GenerationKey = "caracal.generation"

// RedisPublisher appends entries to Redis streams with XADD and keeps the generation
// marker that tells whether their history is complete.
type RedisPublisher struct {
	o RedisOptions

	mu       sync.Mutex
	appended map[string]streamID // highest id appended per Redis key in this history
}

// NewRedisPublisher returns a publisher over o.Client.
func NewRedisPublisher(o RedisOptions) *RedisPublisher {
	return &RedisPublisher{o: o.withDefaults(), appended: make(map[string]streamID)}
}

// Publish appends fields to the stream and trims, in the same command, the entries
// older than the retention horizon. The trim is exact (MINID =), so nothing younger
// than Retention (by the publisher's clock) is ever removed.
func (p *RedisPublisher) Publish(ctx context.Context, stream string, fields map[string]string) error {
	if p.o.Client == nil {
		return errors.New("publishing revocation entry: no Redis client configured")
	}
	if stream == "" {
		return errors.New("publishing revocation entry: empty stream name")
	}
	args := &redis.XAddArgs{
		Stream: p.o.StreamPrefix + stream,
		MinID:  p.minID(),
		Values: fields,
	}
	id, err := p.o.Client.XAdd(ctx, args).Result()
	if err != nil {
		return fmt.Errorf("publishing to %s: %w", args.Stream, err)
	}
	p.appendedID(args.Stream, id)
	return nil
}

func (p *RedisPublisher) minID() string {
	return idAt(p.o.Now().Add(-p.o.Retention)).String()
}

// appendedID records id as appended to key when it is the highest so far.
func (p *RedisPublisher) appendedID(key, id string) {
	sid, err := parseStreamID(id)
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.appended[key]; !ok || sid.compare(cur) > 0 {
		p.appended[key] = sid
	}
}

func (p *RedisPublisher) generationKey() string { return p.o.StreamPrefix + GenerationKey }

// Generation returns the marker in force, "" when there is none.
func (p *RedisPublisher) Generation(ctx context.Context) (string, error) {
	if p.o.Client == nil {
		return "", errors.New("reading the generation marker: no Redis client configured")
	}
	g, err := p.o.Client.Get(ctx, p.generationKey()).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the generation marker: %w", err)
	}
	return g, nil
}

// CheckGeneration returns nil when the marker still equals generation and every
// stream this publisher appended to still reaches the highest id it appended there.
// Otherwise it returns an error wrapping ErrHistoryLost and forgets the appended ids,
// so that the next history is judged on its own. Other errors mean Redis did not
// answer and prove nothing.
func (p *RedisPublisher) CheckGeneration(ctx context.Context, generation string) error {
	if generation == "" {
		return errors.New("checking the generation marker: empty generation")
	}
	g, err := p.Generation(ctx)
	if err != nil {
		return err
	}
	if g != generation {
		p.forget()
		if g == "" {
			return fmt.Errorf("generation marker %s is gone: %w", p.generationKey(), ErrHistoryLost)
		}
		return fmt.Errorf("generation marker %s changed from %q to %q: %w", p.generationKey(), generation, g, ErrHistoryLost)
	}
	p.mu.Lock()
	keys := make([]string, 0, len(p.appended))
	want := make([]streamID, 0, len(p.appended))
	for k, id := range p.appended {
		keys = append(keys, k)
		want = append(want, id)
	}
	p.mu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	pipe := p.o.Client.Pipeline()
	cmds := make([]*redis.XInfoStreamCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.XInfoStream(ctx, k)
	}
	// Per-command errors are examined below: a missing key is an answer.
	_, _ = pipe.Exec(ctx)
	for i, cmd := range cmds {
		res, err := cmd.Result()
		var last streamID
		switch {
		case err != nil && strings.Contains(err.Error(), "no such key"):
		case err != nil:
			return fmt.Errorf("inspecting %s: %w", keys[i], err)
		default:
			if last, err = parseStreamID(res.LastGeneratedID); err != nil {
				return fmt.Errorf("inspecting %s: %w", keys[i], err)
			}
		}
		if last.compare(want[i]) < 0 {
			p.forget()
			return fmt.Errorf("%s ends at %s, below %s appended earlier: %w", keys[i], last, want[i], ErrHistoryLost)
		}
	}
	return nil
}

func (p *RedisPublisher) forget() {
	p.mu.Lock()
	clear(p.appended)
	p.mu.Unlock()
}

// ClaimGeneration sets the marker to candidate unless one exists (SET NX), and returns
// the marker in force: candidate, or the one another publisher set meanwhile, which
// then stands for this publisher too. Call it only once the streams hold every live
// revocation.
func (p *RedisPublisher) ClaimGeneration(ctx context.Context, candidate string) (string, error) {
	if candidate == "" {
		return "", errors.New("setting the generation marker: empty generation")
	}
	if p.o.Client == nil {
		return "", errors.New("setting the generation marker: no Redis client configured")
	}
	set, err := p.o.Client.SetNX(ctx, p.generationKey(), candidate, 0).Result()
	if err != nil {
		return "", fmt.Errorf("setting the generation marker: %w", err)
	}
	if set {
		return candidate, nil
	}
	g, err := p.Generation(ctx)
	if err != nil {
		return "", err
	}
	if g == "" {
		// Set by another publisher and wiped again since: this history is lost too.
		return "", fmt.Errorf("generation marker %s vanished while being set: %w", p.generationKey(), ErrHistoryLost)
	}
	return g, nil
}

// heartbeatScript appends a heartbeat only while the marker equals ARGV[1], so that a
// heartbeat can never vouch for a history that was wiped: GET and XADD run atomically.
// KEYS: marker, stream. ARGV: generation, MINID, then field, value pairs.
var heartbeatScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
	return false
end
return redis.call('XADD', KEYS[2], 'MINID', '=', ARGV[2], '*', unpack(ARGV, 3))
`)

// PublishHeartbeat appends a heartbeat (fields already signed) to
// caracal.sessions.revoke if and only if the generation marker equals generation;
// otherwise it appends nothing and returns an error wrapping ErrHistoryLost.
func (p *RedisPublisher) PublishHeartbeat(ctx context.Context, generation string, fields map[string]string) error {
	if p.o.Client == nil {
		return errors.New("publishing a heartbeat: no Redis client configured")
	}
	if generation == "" {
		return errors.New("publishing a heartbeat: empty generation")
	}
	if !IsHeartbeat(fields) {
		return errors.New("publishing a heartbeat: the fields are not a heartbeat")
	}
	key := p.o.StreamPrefix + StreamSessionsRevoke
	args := make([]any, 0, 2+2*len(fields))
	args = append(args, generation, p.minID())
	for k, v := range fields {
		args = append(args, k, v)
	}
	id, err := heartbeatScript.Run(ctx, p.o.Client, []string{p.generationKey(), key}, args...).Text()
	if errors.Is(err, redis.Nil) {
		return fmt.Errorf("heartbeat refused: generation marker %s is no longer %q: %w", p.generationKey(), generation, ErrHistoryLost)
	}
	if err != nil {
		return fmt.Errorf("publishing a heartbeat to %s: %w", key, err)
	}
	p.appendedID(key, id)
	return nil
}

// TunePublisherOptions sets the options of a Redis client that carries a publisher
// (the outbox relay) so that it recovers within about a second of Redis returning.
// go-redis v9 defaults hold a dead-dial state much longer: every dial makes 5 attempts
// 100 ms apart with a 5 s timeout each, a command retries 3 times with up to 1 s of
// backoff, and after PoolSize failed dials the pool's dial breaker fails every call at
// once until a background probe, run once a second, gets through. Here a failed dial
// costs one attempt of at most 1 s, a command retries twice within 100 ms (a pooled
// connection that died with the server is replaced at once), and the breaker only opens
// after 256 failed dials (several minutes of outage at the relay's pace; connections
// are made on demand, so the larger pool costs nothing). Call it before
// redis.NewClient; it keeps a larger PoolSize and leaves addresses and credentials
// alone.
func TunePublisherOptions(o *redis.Options) {
	o.DialTimeout = time.Second
	o.DialerRetries = 1
	o.MaxRetries = 2
	o.MinRetryBackoff = 10 * time.Millisecond
	o.MaxRetryBackoff = 100 * time.Millisecond
	o.ReadTimeout = 2 * time.Second
	o.WriteTimeout = 2 * time.Second
	o.PoolSize = max(o.PoolSize, 256)
}
