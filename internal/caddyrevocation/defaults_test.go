package caddyrevocation

import (
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func TestWithDefaultsFillsWhatIsUnset(t *testing.T) {
	global := Config{Transport: "redis://10.0.0.1:6379/0", StreamKey: "global-key-0123456", StreamPrefix: "g:", Retention: caddy.Duration(time.Hour)}
	cases := map[string]struct{ own, want Config }{
		"nothing of its own": {Config{}, global},
		"its own key": {Config{StreamKey: "own-key-0123456789"},
			Config{Transport: global.Transport, StreamKey: "own-key-0123456789", StreamPrefix: "g:", Retention: global.Retention}},
		"its own transport": {Config{Transport: "redis://10.0.0.2:6379/0"},
			Config{Transport: "redis://10.0.0.2:6379/0", StreamKey: global.StreamKey, StreamPrefix: "g:", Retention: global.Retention}},
		"the local bus takes no prefix": {Config{Transport: "local"},
			Config{Transport: "local", StreamKey: global.StreamKey, Retention: global.Retention}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if got := c.own.WithDefaults(global); got != c.want {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
	if got := (Config{StreamKey: "k"}).WithDefaults(Config{}); got != (Config{StreamKey: "k"}) {
		t.Fatalf("no defaults changed the config: %+v", got)
	}
}
