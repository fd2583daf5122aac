package revocation

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// generationPublisher returns a publisher on a private prefix whose marker is deleted
// when the test ends, with an admin client on the same server.
func generationPublisher(t *testing.T) (*RedisPublisher, *redis.Client, string) {
	t.Helper()
	admin := newClient(t, redisOptions(t))
	prefix := streamPrefix(t, admin)
	t.Cleanup(func() { admin.Del(context.Background(), prefix+GenerationKey) })
	return NewRedisPublisher(RedisOptions{Client: admin, StreamPrefix: prefix}), admin, prefix
}

func TestRedisGenerationMarkerIsSetOnceAndAdopted(t *testing.T) {
	p, _, _ := generationPublisher(t)
	ctx := context.Background()
	if g, err := p.Generation(ctx); err != nil || g != "" {
		t.Fatalf("Generation of a new prefix = %q, %v; want none", g, err)
	}
	if err := p.CheckGeneration(ctx, "g1"); !errors.Is(err, ErrHistoryLost) {
		t.Fatalf("CheckGeneration without a marker: %v, want ErrHistoryLost", err)
	}
	if g, err := p.ClaimGeneration(ctx, "g1"); err != nil || g != "g1" {
		t.Fatalf("first ClaimGeneration = %q, %v; want g1", g, err)
	}
	if g, err := p.ClaimGeneration(ctx, "g2"); err != nil || g != "g1" {
		t.Fatalf("second ClaimGeneration = %q, %v; want the marker in force, g1", g, err)
	}
	if err := p.CheckGeneration(ctx, "g1"); err != nil {
		t.Fatalf("CheckGeneration of the marker in force: %v", err)
	}
	if err := p.CheckGeneration(ctx, "g2"); !errors.Is(err, ErrHistoryLost) {
		t.Fatalf("CheckGeneration of another generation: %v, want ErrHistoryLost", err)
	}
	if _, err := p.ClaimGeneration(ctx, ""); err == nil {
		t.Fatal("an empty generation was claimed")
	}
	if err := p.CheckGeneration(ctx, ""); err == nil {
		t.Fatal("an empty generation was checked")
	}
}

func TestRedisCheckGenerationSeesAStreamThatWentBackwards(t *testing.T) {
	p, admin, prefix := generationPublisher(t)
	ctx := context.Background()
	key := prefix + StreamSessionsRevoke
	if _, err := p.ClaimGeneration(ctx, "g1"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := p.Publish(ctx, StreamSessionsRevoke, map[string]string{"n": "1"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.CheckGeneration(ctx, "g1"); err != nil {
		t.Fatalf("CheckGeneration of an intact stream: %v", err)
	}
	// A failover to a replica that lagged: the marker is there, the stream is older.
	if err := admin.Del(ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.XAdd(ctx, &redis.XAddArgs{Stream: key, ID: "1-1", Values: map[string]string{"n": "old"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := p.CheckGeneration(ctx, "g1"); !errors.Is(err, ErrHistoryLost) {
		t.Fatalf("CheckGeneration after the stream went back: %v, want ErrHistoryLost", err)
	}
	if err := p.CheckGeneration(ctx, "g1"); err != nil {
		t.Fatalf("the next history is judged on its own, got %v", err)
	}
	if err := p.Publish(ctx, StreamSessionsRevoke, map[string]string{"n": "2"}); err != nil {
		t.Fatal(err)
	}
	if err := admin.Del(ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	if err := p.CheckGeneration(ctx, "g1"); !errors.Is(err, ErrHistoryLost) {
		t.Fatalf("CheckGeneration after the stream vanished: %v, want ErrHistoryLost", err)
	}
}

func TestRedisHeartbeatIsAppendedOnlyUnderItsGeneration(t *testing.T) {
	p, admin, prefix := generationPublisher(t)
	ctx := context.Background()
	key := prefix + StreamSessionsRevoke
	now := time.Now()
	hb := signed([]byte("k"), StreamSessionsRevoke, Heartbeat{Publisher: "relay-1", Watermark: now, SentAt: now}.Fields())
	if err := p.PublishHeartbeat(ctx, "g1", hb); !errors.Is(err, ErrHistoryLost) {
		t.Fatalf("heartbeat without a marker: %v, want ErrHistoryLost", err)
	}
	if _, err := p.ClaimGeneration(ctx, "g1"); err != nil {
		t.Fatal(err)
	}
	if err := p.PublishHeartbeat(ctx, "g1", hb); err != nil {
		t.Fatalf("heartbeat under its generation: %v", err)
	}
	for _, c := range []struct {
		what   string
		gen    string
		fields map[string]string
	}{
		{"another generation", "g2", hb},
		{"an empty generation", "", hb},
		{"a revocation passed as a heartbeat", "g1", map[string]string{"zone_id": "z"}},
	} {
		if err := p.PublishHeartbeat(ctx, c.gen, c.fields); err == nil {
			t.Errorf("heartbeat with %s was accepted", c.what)
		}
	}
	if err := admin.Del(ctx, prefix+GenerationKey).Err(); err != nil {
		t.Fatal(err)
	}
	if err := p.PublishHeartbeat(ctx, "g1", hb); !errors.Is(err, ErrHistoryLost) {
		t.Fatalf("heartbeat after the marker was wiped: %v, want ErrHistoryLost", err)
	}
	msgs, err := admin.XRange(ctx, key, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 {
		t.Fatalf("%d entries on the stream, want the one accepted heartbeat", len(msgs))
	}
	got := make(map[string]string)
	for k, v := range msgs[0].Values {
		got[k] = v.(string)
	}
	if !maps.Equal(got, hb) {
		t.Fatalf("heartbeat on the stream %v, want %v", got, hb)
	}
}
