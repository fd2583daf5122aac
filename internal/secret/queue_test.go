package secret

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// waitQueued blocks until n checks wait in v's queue (10 s at most).
func waitQueued(t *testing.T, v *Verifier, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v.queue.mu.Lock()
		got := v.queue.queued
		v.queue.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d checks queued, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestQueueServesKeysRoundRobin floods one key and one zone, then adds one check from another key
// and one from another zone: each newcomer gets one of the next slots, not a place behind the flood.
func TestQueueServesKeysRoundRobin(t *testing.T) {
	v, c, _ := newTestVerifier(VerifierOptions{MaxConcurrent: 1, MaxPerKey: 100, MaxWait: time.Minute})
	c.hold, c.entered = make(chan struct{}), make(chan struct{}, 64)
	order := make(chan string, 64)
	phc := cheapPHC("pw", 64, 1, 1)
	var wg sync.WaitGroup
	verify := func(zone, key, client string) {
		wg.Go(func() {
			if ok, err := v.Verify(context.Background(), Request{ZoneID: zone, ClientID: client, QueueKey: key, PHC: phc, Secret: "pw"}); err != nil || !ok {
				t.Error(ok, err)
			}
			order <- client
		})
	}
	verify("a", "flood", "f0")
	<-c.entered // f0 holds the only slot
	for i := 1; i <= 10; i++ {
		verify("a", "flood", "f"+string(rune('0'+i)))
	}
	waitQueued(t, v, 10)
	verify("a", "legit", "legit")
	verify("b", "other", "other-zone")
	waitQueued(t, v, 12)

	// Run the checks one at a time and record the order in which they finish.
	var finished []string
	for range 13 {
		c.hold <- struct{}{}
		finished = append(finished, <-order)
		if len(finished) < 13 {
			<-c.entered
		}
	}
	wg.Wait()
	pos := map[string]int{}
	for i, name := range finished {
		pos[name] = i
	}
	// Zone b is served right after the running check; inside zone a, legit gets the next turn.
	if pos["other-zone"] > 2 || pos["legit"] > 3 {
		t.Fatalf("order %v: a newcomer waited behind the flood", finished)
	}
	if n := c.runs.Load(); n != 13 {
		t.Fatalf("%d runs, want 13", n)
	}
}

// TestQueueServesTheKeyHoldingFewestSlots: with both slots held by a flood, the next free slot goes
// to a newcomer, not to the flood's own next waiter that queued earlier.
func TestQueueServesTheKeyHoldingFewestSlots(t *testing.T) {
	v, c, _ := newTestVerifier(VerifierOptions{MaxConcurrent: 2, MaxPerKey: 100, MaxWait: time.Minute})
	c.hold, c.started = make(chan struct{}), make(chan string, 16)
	phc := cheapPHC("pw", 64, 1, 1)
	var wg sync.WaitGroup
	check := func(key, secret string) {
		wg.Go(func() {
			if _, err := v.Verify(context.Background(), Request{ZoneID: "z", ClientID: secret, QueueKey: key, PHC: phc, Secret: secret}); err != nil {
				t.Error(err)
			}
		})
	}
	check("flood", "f0")
	check("flood", "f1")
	<-c.started
	<-c.started // the flood holds both slots
	check("flood", "f2")
	check("flood", "f3")
	waitQueued(t, v, 2)
	check("legit", "legit")
	waitQueued(t, v, 3)
	c.hold <- struct{}{} // one flood check ends
	if next := <-c.started; next != "legit" {
		t.Fatalf("the freed slot went to %s, want the newcomer", next)
	}
	close(c.hold)
	for range 2 {
		<-c.started
	}
	wg.Wait()
}

func TestQueueRefusesBeyondItsBounds(t *testing.T) {
	phc := cheapPHC("pw", 64, 1, 1)
	t.Run("per key", func(t *testing.T) {
		v, c, _ := newTestVerifier(VerifierOptions{MaxConcurrent: 1, MaxPerKey: 2, MaxWait: time.Minute})
		c.hold, c.entered = make(chan struct{}), make(chan struct{}, 4)
		errs := make(chan error, 2)
		for _, client := range []string{"x1", "x2"} {
			go func() {
				_, err := v.Verify(context.Background(), Request{ZoneID: "z", ClientID: client, QueueKey: "k", PHC: phc, Secret: "pw"})
				errs <- err
			}()
		}
		<-c.entered
		waitQueued(t, v, 1)
		if _, err := v.Verify(context.Background(), Request{ZoneID: "z", ClientID: "x3", QueueKey: "k", PHC: phc, Secret: "pw"}); !errors.Is(err, ErrKeyBusy) {
			t.Fatalf("third check under a key capped at 2: %v", err)
		}
		if err := v.DummyCheck(context.Background(), "z", "k", "pw"); !errors.Is(err, ErrKeyBusy) {
			t.Fatalf("dummy check under a full key: %v", err)
		}
		// Another key is still admitted (it waits for the slot).
		other := make(chan error, 1)
		go func() { other <- v.DummyCheck(context.Background(), "z", "k2", "pw") }()
		waitQueued(t, v, 2)
		close(c.hold)
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if err := <-other; err != nil {
			t.Fatal(err)
		}
		if n := c.runs.Load(); n != 3 {
			t.Fatalf("%d runs, want 3", n)
		}
	})
	t.Run("total and wait", func(t *testing.T) {
		v, c, _ := newTestVerifier(VerifierOptions{MaxConcurrent: 1, MaxQueued: 1, MaxWait: time.Millisecond})
		c.hold, c.entered = make(chan struct{}), make(chan struct{}, 4)
		held := make(chan error, 1)
		go func() {
			_, err := v.Verify(context.Background(), Request{ZoneID: "z", ClientID: "first", QueueKey: "a", PHC: phc, Secret: "pw"})
			held <- err
		}()
		<-c.entered
		// The slot stays held, so the wait bound is what ends this check.
		if _, err := v.Verify(context.Background(), Request{ZoneID: "z", ClientID: "second", QueueKey: "b", PHC: phc, Secret: "pw"}); !errors.Is(err, ErrBusy) {
			t.Fatalf("check past the wait bound: %v", err)
		}
		v.queue.mu.Lock()
		q, zones := v.queue.queued, len(v.queue.zones["z"].keys)
		v.queue.mu.Unlock()
		if q != 0 || zones != 1 {
			t.Fatalf("after giving up: %d queued, %d keys tracked; want 0 and 1", q, zones)
		}
		close(c.hold)
		if err := <-held; err != nil {
			t.Fatal(err)
		}
		v.queue.mu.Lock()
		left := len(v.queue.zones)
		free := v.queue.free
		v.queue.mu.Unlock()
		if left != 0 || free != 1 {
			t.Fatalf("idle queue keeps %d zones and %d free slots; want 0 and 1", left, free)
		}
		if n := c.runs.Load(); n != 1 {
			t.Fatalf("%d runs, want 1", n)
		}
	})
	t.Run("queue full", func(t *testing.T) {
		v, c, _ := newTestVerifier(VerifierOptions{MaxConcurrent: 1, MaxQueued: 1, MaxWait: time.Minute})
		c.hold, c.entered = make(chan struct{}), make(chan struct{}, 4)
		done := make(chan error, 2)
		for _, client := range []string{"first", "second"} {
			go func() {
				_, err := v.Verify(context.Background(), Request{ZoneID: "z", ClientID: client, QueueKey: client, PHC: phc, Secret: "pw"})
				done <- err
			}()
			if client == "first" {
				<-c.entered
			}
		}
		waitQueued(t, v, 1)
		if err := v.DummyCheck(context.Background(), "y", "k", "pw"); !errors.Is(err, ErrBusy) {
			t.Fatalf("check beyond a full queue: %v", err)
		}
		close(c.hold)
		for range 2 {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestIdenticalChecksShareOneRun: concurrent identical checks run Argon2 once and call Admit once.
func TestIdenticalChecksShareOneRun(t *testing.T) {
	v, c, _ := newTestVerifier(VerifierOptions{MaxConcurrent: 1})
	c.hold, c.entered = make(chan struct{}), make(chan struct{}, 16)
	phc := cheapPHC("pw", 64, 1, 1)
	var admitted sync.WaitGroup
	admits := 0
	var mu sync.Mutex
	admit := func() error {
		mu.Lock()
		admits++
		mu.Unlock()
		return nil
	}
	results := make(chan bool, 8)
	admitted.Go(func() {
		ok, err := v.Verify(context.Background(), Request{ZoneID: "z", ClientID: "app", PHC: phc, Secret: "wrong", Admit: admit})
		if err != nil {
			t.Error(err)
		}
		results <- ok
	})
	<-c.entered
	for range 7 {
		admitted.Go(func() {
			ok, err := v.Verify(context.Background(), Request{ZoneID: "z", ClientID: "app", PHC: phc, Secret: "wrong", Admit: admit})
			if err != nil {
				t.Error(err)
			}
			results <- ok
		})
	}
	// The followers cannot be observed joining the flight, so release only after they had time to;
	// any that arrive late run again, which the count below would show as a failure only if it
	// exceeded the callers.
	time.Sleep(50 * time.Millisecond)
	close(c.hold)
	admitted.Wait()
	close(results)
	for ok := range results {
		if ok {
			t.Fatal("wrong secret accepted")
		}
	}
	if n := c.runs.Load(); n != int32(admits) || n >= 8 {
		t.Fatalf("8 identical checks: %d runs, %d admits; want equal and fewer than 8", n, admits)
	}

	// An Admit error is returned and nothing runs.
	refused := errors.New("refused")
	before := c.runs.Load()
	_, err := v.Verify(context.Background(), Request{ZoneID: "z", ClientID: "app", PHC: phc, Secret: "other", Admit: func() error { return refused }})
	if !errors.Is(err, refused) || c.runs.Load() != before {
		t.Fatalf("refused admit: err %v, runs %d -> %d", err, before, c.runs.Load())
	}
}

func TestDummyHashOption(t *testing.T) {
	v, _, _ := newTestVerifier(VerifierOptions{DummyHash: cheapPHC("x", 128, 2, 1)})
	p, _, _, err := parse(v.dummyPHC)
	if err != nil || p.memory != 128 || p.time != 2 || p.threads != 1 {
		t.Fatalf("dummy hash %s (%v) does not take the given cost", v.dummyPHC, err)
	}
	if _, err := NewVerifier(VerifierOptions{DummyHash: "$argon2id$nope"}); err == nil {
		t.Fatal("a malformed dummy hash was accepted")
	}
}
