package policies

import (
	"encoding/json"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/caracalgw/caracal/internal/policy"
	"github.com/caracalgw/caracal/internal/store"
)

// bundleDirs lists every directory of the embedded tree that holds Rego.
func bundleDirs(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := fs.WalkDir(bundles, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".rego") && !slices.Contains(dirs, path.Dir(p)) {
			dirs = append(dirs, path.Dir(p))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"default", "examples/time_window", "examples/client_labels", "examples/mcp_tools"} {
		if !slices.Contains(dirs, want) {
			t.Fatalf("bundle %q is not embedded (found %v)", want, dirs)
		}
	}
	return dirs
}

// TestRegoUnitTests runs each bundle's *_test.rego files with OPA's test runner, one
// bundle at a time since every bundle defines package caracal.authz.
func TestRegoUnitTests(t *testing.T) {
	for _, dir := range bundleDirs(t) {
		t.Run(dir, func(t *testing.T) {
			entries, err := fs.ReadDir(bundles, dir)
			if err != nil {
				t.Fatal(err)
			}
			modules := make(map[string]*ast.Module)
			testFiles := 0
			for _, e := range entries {
				if !strings.HasSuffix(e.Name(), ".rego") {
					continue
				}
				p := path.Join(dir, e.Name())
				src, err := fs.ReadFile(bundles, p)
				if err != nil {
					t.Fatal(err)
				}
				m, err := ast.ParseModuleWithOpts(p, string(src), ast.ParserOptions{RegoVersion: ast.RegoV1})
				if err != nil {
					t.Fatal(err)
				}
				modules[p] = m
				if strings.HasSuffix(e.Name(), "_test.rego") {
					testFiles++
				}
			}
			if testFiles == 0 {
				t.Fatalf("bundle %s has no *_test.rego file", dir)
			}

			results, err := tester.NewRunner().
				SetDefaultRegoVersion(ast.RegoV1).
				RaiseBuiltinErrors(true).
				SetModules(modules).
				RunTests(t.Context(), nil)
			if err != nil {
				t.Fatalf("compiling %s for tests: %v", dir, err)
			}
			ran := 0
			for r := range results {
				ran++
				switch {
				case r.Error != nil:
					t.Errorf("%s.%s: error: %v", r.Package, r.Name, r.Error)
				case r.Fail:
					t.Errorf("%s.%s: FAIL (%s)", r.Package, r.Name, r.Location)
				case r.Skip:
					t.Errorf("%s.%s: skipped; shipped bundles keep every test running", r.Package, r.Name)
				}
			}
			if ran == 0 {
				t.Fatalf("bundle %s: the runner found no test_ rules", dir)
			}
		})
	}
}

// TestBundlesCompileInTheEngine checks each shipped bundle, as Load reads it, passes
// the engine's own upload check (Rego v1, restricted built-ins, object data).
func TestBundlesCompileInTheEngine(t *testing.T) {
	for _, dir := range bundleDirs(t) {
		t.Run(dir, func(t *testing.T) {
			modules, data, err := Load(bundles, dir)
			if err != nil {
				t.Fatal(err)
			}
			if data == nil {
				t.Fatalf("bundle %s ships no example data.json", dir)
			}
			if err := policy.Validate(t.Context(), modules, data); err != nil {
				t.Fatalf("bundle %s: %v", dir, err)
			}
		})
	}
}

func TestDefaultLeavesOutTestsAndCarriesGrants(t *testing.T) {
	modules, data := Default()
	if got := slices.Sorted(maps.Keys(modules)); !slices.Equal(got, []string{"authz.rego"}) {
		t.Fatalf("default modules = %v, want [authz.rego]", got)
	}
	if !strings.Contains(modules["authz.rego"], "package caracal.authz\n") {
		t.Fatal("authz.rego does not declare package caracal.authz")
	}
	var doc struct {
		Grants map[string]map[string][]string `json:"grants"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("default data.json: %v", err)
	}
	if len(doc.Grants) == 0 {
		t.Fatal("default data.json has no grants")
	}
}

func TestLoad(t *testing.T) {
	fsys := fstest.MapFS{
		"b/authz.rego":           {Data: []byte("package caracal.authz\n")},
		"b/authz_test.rego":      {Data: []byte("package caracal.authz_test\n")},
		"b/lib/helpers.rego":     {Data: []byte("package caracal.lib\n")},
		"b/README.md":            {Data: []byte("notes")},
		"b/data.json":            {Data: []byte(`{"grants":{}}`)},
		"nodata/authz.rego":      {Data: []byte("package caracal.authz\n")},
		"nested/authz.rego":      {Data: []byte("package caracal.authz\n")},
		"nested/sub/data.json":   {Data: []byte(`{}`)},
		"badjson/authz.rego":     {Data: []byte("package caracal.authz\n")},
		"badjson/data.json":      {Data: []byte(`{"grants":`)},
		"onlytests/a_test.rego":  {Data: []byte("package caracal.authz_test\n")},
		"onlytests/data.json":    {Data: []byte(`{}`)},
		"root_is_dot/authz.rego": {Data: []byte("package caracal.authz\n")},
		"hidden/authz.rego":      {Data: []byte("package caracal.authz\n")},
		"hidden/.git/x.rego":     {Data: []byte("package junk\n")},
		"hidden/.swap.rego":      {Data: []byte("package junk\n")},
	}

	t.Run("it reads modules below the directory and skips tests and other files", func(t *testing.T) {
		modules, data, err := Load(fsys, "b")
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Sorted(maps.Keys(modules)); !slices.Equal(got, []string{"authz.rego", "lib/helpers.rego"}) {
			t.Fatalf("modules = %v", got)
		}
		if modules["lib/helpers.rego"] != "package caracal.lib\n" {
			t.Fatalf("helpers.rego content = %q", modules["lib/helpers.rego"])
		}
		if string(data) != `{"grants":{}}` {
			t.Fatalf("data = %s", data)
		}
	})
	t.Run("data.json is optional", func(t *testing.T) {
		_, data, err := Load(fsys, "nodata")
		if err != nil || data != nil {
			t.Fatalf("Load = %s, %v; want nil data, nil error", data, err)
		}
	})
	t.Run("a directory given as dot keys modules by their path", func(t *testing.T) {
		sub, err := fs.Sub(fsys, "root_is_dot")
		if err != nil {
			t.Fatal(err)
		}
		modules, _, err := Load(sub, ".")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := modules["authz.rego"]; !ok || len(modules) != 1 {
			t.Fatalf("modules = %v", slices.Sorted(maps.Keys(modules)))
		}
	})
	t.Run("it skips dot files and dot directories", func(t *testing.T) {
		modules, _, err := Load(fsys, "hidden")
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Sorted(maps.Keys(modules)); !slices.Equal(got, []string{"authz.rego"}) {
			t.Fatalf("modules = %v", got)
		}
	})
	for _, tc := range []struct{ dir, want string }{
		{"nested", "only the bundle's top-level data.json"},
		{"badjson", "not valid JSON"},
		{"onlytests", "no .rego modules"},
		{"missing", "file does not exist"},
	} {
		t.Run("it rejects "+tc.dir, func(t *testing.T) {
			_, _, err := Load(fsys, tc.dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load(%q) error = %v, want one containing %q", tc.dir, err, tc.want)
			}
		})
	}
}

// TestLoadAConfigMapVolume reads a directory laid out the way Kubernetes mounts a
// ConfigMap: the visible names are symlinks into a hidden, timestamped directory.
func TestLoadAConfigMapVolume(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "..2026_01_01_00_00_00.000000001")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"authz.rego":      "package caracal.authz\n",
		"authz_test.rego": "package caracal.authz_test\n",
		"data.json":       `{"grants": {}}`,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(target, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(target), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}

	modules, data, err := Load(os.DirFS(dir), ".")
	if err != nil {
		t.Fatal(err)
	}
	if len(modules) != 1 || modules["authz.rego"] != files["authz.rego"] {
		t.Fatalf("modules = %v", modules)
	}
	if string(data) != files["data.json"] {
		t.Fatalf("data = %s", data)
	}
}

// TestMCPToolsBundleGrantsDemoAgentTwoTools evaluates the mcp_tools example with its
// shipped data.json in the embedded engine: demo-agent asking for every tool the MCP
// resource declares gets exactly tool:search and tool:fetch.
func TestMCPToolsBundleGrantsDemoAgentTwoTools(t *testing.T) {
	modules, data, err := Load(bundles, "examples/mcp_tools")
	if err != nil {
		t.Fatal(err)
	}
	engine := policy.NewEmbedded(policy.EmbeddedOptions{})
	if err := engine.Load(t.Context(), "demo", &store.PolicyBundle{ZoneID: "demo", Version: 1, Modules: modules, Data: data}); err != nil {
		t.Fatal(err)
	}
	in := func(client string, scopes ...string) *policy.Input {
		return &policy.Input{
			ZoneID: "demo", Action: policy.ActionTokenExchange,
			Client:          policy.Client{ID: client},
			Session:         policy.Session{SID: "s-1", RootSID: "s-1"},
			Resource:        policy.Resource{Identifier: "https://localhost:8443/mcp", Scopes: []string{"tool:search", "tool:fetch", "tool:delete"}},
			RequestedScopes: scopes,
			Time:            1767225600,
		}
	}
	d := engine.Evaluate(t.Context(), "demo", in("demo-agent", "tool:search", "tool:fetch", "tool:delete"))
	if !d.Allow || !d.HasScopes || !slices.Equal(d.Scopes, []string{"tool:search", "tool:fetch"}) {
		t.Fatalf("demo-agent: %+v", d)
	}
	if d := engine.Evaluate(t.Context(), "demo", in("demo-agent", "tool:delete")); d.Allow {
		t.Fatalf("demo-agent asking for tool:delete alone: %+v", d)
	}
}
