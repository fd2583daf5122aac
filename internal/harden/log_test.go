package harden

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestLogAppWarnsAboutItsOwnConfiguration(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	LogApp(zap.New(core), "caracal_sts", map[string]any{
		"storage":    map[string]any{"driver": "memory"},
		"revocation": map[string]any{"transport": "redis://10.0.0.5:6379"},
	})
	got := map[string]string{}
	for _, e := range logs.All() {
		if e.Level != zapcore.WarnLevel {
			t.Errorf("logged at %s: %s", e.Level, e.Message)
		}
		f := e.ContextMap()
		got[f["check"].(string)] = f["result"].(string)
	}
	want := map[string]string{"storage": "FAIL", "stream-key": "FAIL", "transport-tls": "FAIL"}
	if len(got) != len(want) {
		t.Fatalf("logged %v, want %v", got, want)
	}
	for c, r := range want {
		if got[c] != r {
			t.Errorf("%s: logged %q, want %q", c, got[c], r)
		}
	}

	core, logs = observer.New(zapcore.DebugLevel)
	LogApp(zap.New(core), "caracal_sts", map[string]any{
		"storage":    map[string]any{"driver": "postgres", "dsn": "postgres://caracal@127.0.0.1/caracal"},
		"revocation": map[string]any{"transport": "rediss://r.internal:6379", "stream_key": "{env.K}"},
	})
	for _, e := range logs.All() {
		t.Errorf("a hardened configuration logged %q %v", e.Message, e.ContextMap())
	}
}

func TestLogAppReportsAnUnreadableConfiguration(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	LogApp(zap.New(core), "caracal_sts", map[string]any{"bad": make(chan int)})
	if all := logs.All(); len(all) != 1 || all[0].Message != "hardening: cannot check the configuration" {
		t.Fatalf("logged %v", all)
	}
}
