// Package policies ships Caracal's Rego bundles: the default bundle, which grants
// scopes from the zone's data document, and examples to start a custom policy
// from. A bundle is a directory of Rego modules (package caracal.authz, Rego v1)
// plus an optional data.json that the engine mounts at data.caracal.zone; files
// ending in _test.rego are OPA unit tests and are never part of a bundle.
package policies

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// bundles holds every shipped bundle, tests included, so the package's own tests
// run exactly what is shipped.
//
//go:embed default examples
var bundles embed.FS

// defaultDir is the default bundle's directory inside bundles.
const defaultDir = "default"

// Default returns the default bundle's modules (keyed by file name) and data
// document; zones that declare `policy default` are bootstrapped with it.
func Default() (modules map[string]string, data json.RawMessage) {
	modules, data, err := Load(bundles, defaultDir)
	if err != nil {
		// The bundle is compiled into the binary and tested; failing here means the
		// build itself is broken.
		panic(fmt.Sprintf("policies: embedded default bundle: %v", err))
	}
	return modules, data
}

// Load reads the bundle in dir of fsys: every .rego file below dir except
// *_test.rego, keyed by its slash-separated path relative to dir, and dir/data.json
// if present (nil otherwise). Names starting with a dot are skipped and symbolic
// links to files are followed, so a Kubernetes ConfigMap volume (symlinks into a
// hidden ..data directory) reads as one copy of each file. It checks that data.json
// is well-formed JSON; whether the bundle compiles is for the policy engine to say.
func Load(fsys fs.FS, dir string) (map[string]string, json.RawMessage, error) {
	modules := make(map[string]string)
	var data json.RawMessage
	err := fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			info, err := fs.Stat(fsys, p)
			if err != nil {
				return err
			}
			if !info.Mode().IsRegular() {
				return nil
			}
		}
		rel := strings.TrimPrefix(p, dir+"/")
		name := path.Base(p)
		switch {
		case name == "data.json" && rel == name:
			raw, err := fs.ReadFile(fsys, p)
			if err != nil {
				return err
			}
			if !json.Valid(raw) {
				return fmt.Errorf("%s: not valid JSON", p)
			}
			data = raw
		case name == "data.json":
			// OPA bundles would mount this below the root; Caracal bundles have one
			// data document, and ignoring the file would silently drop data.
			return fmt.Errorf("%s: only the bundle's top-level data.json is read", p)
		case strings.HasSuffix(name, ".rego") && !strings.HasSuffix(name, "_test.rego"):
			src, err := fs.ReadFile(fsys, p)
			if err != nil {
				return err
			}
			modules[rel] = string(src)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("loading policy bundle %q: %w", dir, err)
	}
	if len(modules) == 0 {
		return nil, nil, fmt.Errorf("loading policy bundle %q: no .rego modules", dir)
	}
	return modules, data, nil
}
