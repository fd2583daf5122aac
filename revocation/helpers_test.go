package revocation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caracalgw/caracal/internal/testenv"
)

// waitClosed waits for ch to be closed, failing the test after 10 s.
func waitClosed(tb testing.TB, what string, ch <-chan struct{}) {
	tb.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		tb.Fatalf("gave up waiting: %s", what)
	}
}

func randomHex(tb testing.TB, n int) string {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// redisOptions returns connection options for the test Redis (failing the test when
// it does not answer; `make services` starts it).
func redisOptions(tb testing.TB) *redis.Options {
	tb.Helper()
	opts, err := redis.ParseURL(testenv.RequireRedis(tb))
	if err != nil {
		tb.Fatal(err)
	}
	return opts
}

func newClient(tb testing.TB, opts *redis.Options) *redis.Client {
	tb.Helper()
	c := redis.NewClient(opts)
	tb.Cleanup(func() { c.Close() })
	return c
}

// streamPrefix returns a key prefix of the test's own and deletes its streams when the
// test ends, so tests and packages sharing the server never see each other's entries.
func streamPrefix(tb testing.TB, admin *redis.Client) string {
	tb.Helper()
	prefix := "caracal-test:" + randomHex(tb, 8) + ":"
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		admin.Del(ctx, prefix+StreamSessionsRevoke, prefix+StreamDelegationInvalidate)
	})
	return prefix
}

// startConsumer starts a consumer and stops it when the test ends.
func startConsumer(tb testing.TB, st *RevokedSet, ep *Epochs, o RedisOptions) *RedisRevocationConsumer {
	tb.Helper()
	c, err := NewRedisRevocationConsumer(context.Background(), st, ep, o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func signed(key []byte, stream string, fields map[string]string) map[string]string {
	fields["sig"] = Sign(key, stream, fields)
	return fields
}

// sessionEvent is a session revocation that stays relevant for an hour.
func sessionEvent(zone, sid string) Event {
	now := time.Now()
	return Event{ZoneID: zone, SessionID: sid, Reason: "test", RevokedAt: now, ExpiresAt: now.Add(time.Hour)}
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// killClients closes, on the server side, every connection named name.
func killClients(tb testing.TB, admin *redis.Client, name string) int {
	tb.Helper()
	ctx := context.Background()
	list, err := admin.ClientList(ctx).Result()
	if err != nil {
		tb.Fatal(err)
	}
	killed := 0
	for line := range strings.SplitSeq(list, "\n") {
		var id string
		named := false
		for f := range strings.FieldsSeq(line) {
			k, v, _ := strings.Cut(f, "=")
			switch {
			case k == "id":
				id = v
			case k == "name" && v == name:
				named = true
			}
		}
		if !named || id == "" {
			continue
		}
		err := admin.Do(ctx, "CLIENT", "KILL", "ID", id).Err()
		if err != nil && !errors.Is(err, redis.Nil) && !strings.Contains(err.Error(), "No such client") {
			tb.Fatal(err)
		}
		killed++
	}
	return killed
}
