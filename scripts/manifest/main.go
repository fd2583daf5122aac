// Command manifest reads xcaddy.json, the build manifest, and prints what the Makefile
// needs from it:
//
//	manifest output         the binary path
//	manifest build-flags    the go build flags
//	manifest xcaddy-args    the arguments of `xcaddy build` for the same build
//	manifest ldflags        the -ldflags value naming Caracal's version and git commit
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

type manifest struct {
	// Version is Caracal's release version, printed by `caracal version`.
	Version      string `json:"version"`
	CaddyVersion string `json:"caddy_version"`
	Plugins      []struct {
		ModulePath string `json:"module_path"`
		Version    string `json:"version"`
	} `json:"plugins"`
	Replacements []struct {
		Old string `json:"old"`
		New string `json:"new"`
	} `json:"replacements"`
	Output     string   `json:"output"`
	BuildFlags []string `json:"build_flags"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "manifest:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: manifest output|build-flags|xcaddy-args|ldflags")
	}
	raw, err := os.ReadFile("xcaddy.json")
	if err != nil {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	var m manifest
	if err := dec.Decode(&m); err != nil {
		return fmt.Errorf("xcaddy.json: %w", err)
	}
	if m.Version == "" || m.CaddyVersion == "" || m.Output == "" {
		return errors.New("xcaddy.json: version, caddy_version and output are required")
	}
	switch args[0] {
	case "output":
		fmt.Println(m.Output)
	case "build-flags":
		fmt.Println(strings.Join(m.BuildFlags, " "))
	case "xcaddy-args":
		fmt.Println(strings.Join(xcaddyArgs(m), " "))
	case "ldflags":
		fmt.Printf("-X main.version=%s -X main.commit=%s\n", m.Version, gitCommit())
	default:
		return fmt.Errorf("unknown field %q", args[0])
	}
	return nil
}

// xcaddyArgs turns the manifest into `xcaddy build` arguments. A plugin with a
// replacement is passed as module[@version]=path, which xcaddy turns into a go.mod
// replace; the version (a placeholder pseudo-version for a module that is not
// published) keeps `go get` from asking the module proxy for one.
func xcaddyArgs(m manifest) []string {
	args := []string{m.CaddyVersion, "--output", m.Output + "-xcaddy"}
	replaced := map[string]string{}
	for _, r := range m.Replacements {
		replaced[r.Old] = r.New
	}
	for _, p := range m.Plugins {
		switch {
		case replaced[p.ModulePath] != "":
			mod := p.ModulePath
			if p.Version != "" {
				mod += "@" + p.Version
			}
			args = append(args, "--with", mod+"="+replaced[p.ModulePath])
			delete(replaced, p.ModulePath)
		case p.Version != "":
			args = append(args, "--with", p.ModulePath+"@"+p.Version)
		default:
			args = append(args, "--with", p.ModulePath)
		}
	}
	for old, repl := range replaced {
		args = append(args, "--replace", old+"="+repl)
	}
	return args
}

// gitCommit is the checkout's short commit, with "+modified" when tracked files differ
// from it, or "unknown" outside a git checkout.
func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	commit := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		commit += "+modified"
	}
	return commit
}
