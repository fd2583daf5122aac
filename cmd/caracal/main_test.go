package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
)

func TestCaracalVersionText(t *testing.T) {
	stamped := &debug.BuildInfo{Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "5505539c0ffee0123456789abcdef0123456789a"},
		{Key: "vcs.modified", Value: "true"},
	}}
	clean := &debug.BuildInfo{Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "5505539c0ffee0123456789abcdef0123456789a"}}}
	for _, c := range []struct {
		name, version, commit string
		bi                    *debug.BuildInfo
		want                  string
	}{
		{"set by ldflags", "v0.1.0", "0eae49df0b7a", stamped, "Caracal v0.1.0 (commit 0eae49df0b7a) on Caddy"},
		{"commit from the VCS stamp of a dirty tree", "", "", stamped, "Caracal devel (commit 5505539c0ffe+modified) on Caddy"},
		{"commit from the VCS stamp of a clean tree", "v0.1.0", "", clean, "Caracal v0.1.0 (commit 5505539c0ffe) on Caddy"},
		{"no build information", "", "", nil, "Caracal devel (commit unknown) on Caddy"},
		{"no VCS stamp", "", "", &debug.BuildInfo{}, "Caracal devel (commit unknown) on Caddy"},
	} {
		if got := caracalVersion(c.version, c.commit, c.bi); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

// TestVersionCommandShowsCaracalBuild builds the binary with the -ldflags that `make
// build` takes from scripts/manifest and runs `caracal version`: one line naming
// Caracal's version from xcaddy.json and the commit, then Caddy's version.
func TestVersionCommandShowsCaracalBuild(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("building the binary needs the go command: %v", err)
	}
	manifest := exec.Command(gobin, "run", "./scripts/manifest", "ldflags")
	manifest.Dir = filepath.Join("..", "..")
	raw, err := manifest.Output()
	if err != nil {
		t.Fatalf("scripts/manifest ldflags: %v", err)
	}
	ldflags := strings.TrimSpace(string(raw))
	m := regexp.MustCompile(`^-X main\.version=(\S+) -X main\.commit=(\S+)$`).FindStringSubmatch(ldflags)
	if m == nil {
		t.Fatalf("scripts/manifest ldflags printed %q", ldflags)
	}
	// Without -trimpath, unlike `make build`, so that the compiled packages the e2e
	// tests' build left in the cache serve here too: only the link runs.
	bin := filepath.Join(t.TempDir(), "caracal")
	build := exec.Command(gobin, "build", "-ldflags", ldflags, "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "version")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("caracal version: %v", err)
	}
	got := strings.TrimSpace(string(out))
	prefix := "Caracal " + m[1] + " (commit " + m[2] + ") on Caddy v2."
	if !strings.HasPrefix(got, prefix) || strings.Contains(got, "\n") {
		t.Fatalf("caracal version printed %q, want one line starting with %q", got, prefix)
	}
}
