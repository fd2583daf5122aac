package docs

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/caracalgw/caracal/internal/harden"
)

// citation is one test named by a "Tests:" line.
type citation struct {
	name, dir string
	line      int
}

var (
	testsLine = regexp.MustCompile(`^Tests:\s*(.+?)\s*\(([^()]+)\)\s*$`)
	testName  = regexp.MustCompile(`^(Test|Fuzz)[A-Za-z0-9_]*$`)
	testFunc  = regexp.MustCompile(`(?m)^func ((?:Test|Fuzz)[A-Za-z0-9_]*)\(`)
	statuses  = []string{"mitigated", "partial", "open"}
)

// parseThreatModel returns the tests the page cites and what is wrong with its form:
// a malformed Tests line, a threat without a valid Status, or a threat that is not
// open but cites no test.
func parseThreatModel(md string) ([]citation, []string) {
	var cites []citation
	var problems []string
	type threat struct {
		title, status string
		line, tests   int
	}
	var threats []*threat
	var cur *threat
	inThreats := false
	for i, l := range strings.Split(md, "\n") {
		n := i + 1
		switch {
		case strings.HasPrefix(l, "## "):
			inThreats = strings.TrimSpace(l) == "## Threats"
			cur = nil
		case strings.HasPrefix(l, "### ") && inThreats:
			cur = &threat{title: strings.TrimPrefix(l, "### "), line: n}
			threats = append(threats, cur)
		case strings.HasPrefix(l, "Status:") && cur != nil:
			cur.status = strings.TrimSpace(strings.TrimPrefix(l, "Status:"))
		case strings.HasPrefix(l, "Tests:"):
			m := testsLine.FindStringSubmatch(l)
			if m == nil {
				problems = append(problems, fmt.Sprintf("line %d: want `Tests: TestA, TestB (dir)`, got %q", n, l))
				continue
			}
			if cur != nil {
				cur.tests++
			}
			for _, name := range strings.Split(m[1], ",") {
				name = strings.TrimSpace(name)
				if !testName.MatchString(name) {
					problems = append(problems, fmt.Sprintf("line %d: %q is not a test name", n, name))
					continue
				}
				cites = append(cites, citation{name: name, dir: path.Clean(strings.TrimSpace(m[2])), line: n})
			}
		}
	}
	if len(threats) == 0 {
		problems = append(problems, "no threat (### heading) under ## Threats")
	}
	for _, t := range threats {
		switch {
		case !slices.Contains(statuses, t.status):
			problems = append(problems, fmt.Sprintf("line %d: threat %q has status %q, want one of %v", t.line, t.title, t.status, statuses))
		case t.status != "open" && t.tests == 0:
			problems = append(problems, fmt.Sprintf("line %d: threat %q is %s but cites no test", t.line, t.title, t.status))
		}
	}
	return cites, problems
}

// definedTests maps each directory of fsys to the Test and Fuzz functions its _test.go
// files declare.
func definedTests(fsys fs.FS) (map[string]map[string]bool, error) {
	out := map[string]map[string]bool{}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "vendor") {
				return fs.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, "_test.go") {
			return nil
		}
		src, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		dir := path.Dir(p)
		for _, m := range testFunc.FindAllStringSubmatch(string(src), -1) {
			if out[dir] == nil {
				out[dir] = map[string]bool{}
			}
			out[dir][m[1]] = true
		}
		return nil
	})
	return out, err
}

// checkThreatModel returns every problem of the page against the tree fsys.
func checkThreatModel(md string, fsys fs.FS) ([]string, int, error) {
	cites, problems := parseThreatModel(md)
	defined, err := definedTests(fsys)
	if err != nil {
		return nil, 0, err
	}
	for _, c := range cites {
		if !defined[c.dir][c.name] {
			problems = append(problems, fmt.Sprintf("line %d: %s is not a test of %s", c.line, c.name, c.dir))
		}
	}
	return problems, len(cites), nil
}

func TestThreatModelCitesExistingTests(t *testing.T) {
	md, err := os.ReadFile("threat-model.md")
	if err != nil {
		t.Fatal(err)
	}
	problems, n, err := checkThreatModel(string(md), os.DirFS(".."))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("threat-model.md %s", p)
	}
	if n < 50 {
		t.Errorf("threat-model.md cites %d tests; the parser likely missed its Tests lines", n)
	}
}

const fixture = `# T
## Threats
### Forgery
Status: mitigated
Tests: TestA, FuzzB (pkg/a)
Tests: TestRoot (.)
### Replay
Status: open
## Other
Tests: TestC (pkg/c)
`

func fixtureTree(aTests string) fstest.MapFS {
	return fstest.MapFS{
		"root_test.go":        {Data: []byte("package x\n\nfunc TestRoot(t *testing.T) {}\n")},
		"pkg/a/a_test.go":     {Data: []byte("package a\n\n" + aTests)},
		"pkg/c/c_test.go":     {Data: []byte("package c\n\nfunc TestC(t *testing.T) {}\n")},
		"pkg/c/testdata/x.go": {Data: []byte("func TestHidden(t *testing.T) {}\n")},
	}
}

func TestCheckerCatchesMissingTests(t *testing.T) {
	const both = "func TestA(t *testing.T) {}\n\nfunc FuzzB(f *testing.F) {}\n"
	cases := []struct {
		name, md, aTests string
		want             []string
	}{
		{"all present", fixture, both, nil},
		{"a cited test removed", fixture, "func FuzzB(f *testing.F) {}\n", []string{"line 5: TestA is not a test of pkg/a"}},
		{"a cited test renamed", fixture, "func TestARenamed(t *testing.T) {}\n\nfunc FuzzB(f *testing.F) {}\n", []string{"line 5: TestA is not a test of pkg/a"}},
		{"a test in a comment does not count", fixture, "// func TestA(t *testing.T) {}\n\nfunc FuzzB(f *testing.F) {}\n", []string{"line 5: TestA is not a test of pkg/a"}},
		{"a test cited in the wrong directory", strings.Replace(fixture, "TestC (pkg/c)", "TestC (pkg/a)", 1), both, []string{"line 10: TestC is not a test of pkg/a"}},
		{"a test under testdata does not count", strings.Replace(fixture, "TestC (pkg/c)", "TestHidden (pkg/c/testdata)", 1), both, []string{"line 10: TestHidden is not a test of pkg/c/testdata"}},
		{"a malformed Tests line", strings.Replace(fixture, "Tests: TestRoot (.)", "Tests: TestRoot", 1), both, []string{"line 6: want `Tests: TestA, TestB (dir)`, got \"Tests: TestRoot\""}},
		{"a name that is not a test", strings.Replace(fixture, "TestRoot (.)", "Root (.)", 1), both, []string{"line 6: \"Root\" is not a test name"}},
		{"a mitigated threat without tests", strings.Replace(fixture, "Status: open", "Status: mitigated", 1), both, []string{"line 7: threat \"Replay\" is mitigated but cites no test"}},
		{"a threat without a status", strings.Replace(fixture, "Status: open\n", "", 1), both, []string{"line 7: threat \"Replay\" has status \"\", want one of [mitigated partial open]"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := checkThreatModel(tc.md, fixtureTree(tc.aTests))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// checkLine matches a hardening item's "Check:" line.
var checkLine = regexp.MustCompile("^Check: (?:`caracal harden` check `([a-z-]+)`|not checked automatically)")

// TestHardeningNamesEveryCheck keeps docs/hardening.md and `caracal harden` in step: every
// item says which check covers it, every named check exists, and every check is named.
func TestHardeningNamesEveryCheck(t *testing.T) {
	md, err := os.ReadFile("hardening.md")
	if err != nil {
		t.Fatal(err)
	}
	fs, err := harden.Check([]byte(`{}`), harden.Options{})
	if err != nil {
		t.Fatal(err)
	}
	exists := map[string]bool{}
	for _, f := range fs {
		exists[f.Check] = true
	}
	named := map[string]bool{}
	items, lines := 0, 0
	for i, l := range strings.Split(string(md), "\n") {
		if strings.HasPrefix(l, "### ") {
			items++
		}
		if !strings.HasPrefix(l, "Check:") {
			continue
		}
		lines++
		m := checkLine.FindStringSubmatch(l)
		switch {
		case m == nil:
			t.Errorf("hardening.md line %d: malformed %q", i+1, l)
		case m[1] != "" && !exists[m[1]]:
			t.Errorf("hardening.md line %d: no check %q in caracal harden", i+1, m[1])
		case m[1] != "":
			named[m[1]] = true
		}
	}
	if items == 0 || items != lines {
		t.Errorf("hardening.md has %d items and %d Check lines; every item needs one", items, lines)
	}
	for c := range exists {
		if !named[c] {
			t.Errorf("check %q is not named in hardening.md", c)
		}
	}
}

// mdLink matches an inline Markdown link's target: [text](target).
var mdLink = regexp.MustCompile(`\]\(([^()\s]+)\)`)

// brokenLinks returns the relative links of the Markdown file at p (a path in fsys)
// whose target file does not exist in fsys, and every target it links to.
func brokenLinks(fsys fs.FS, p string) (broken []string, targets map[string]bool, err error) {
	src, err := fs.ReadFile(fsys, p)
	if err != nil {
		return nil, nil, err
	}
	targets = map[string]bool{}
	inFence := false
	for i, l := range strings.Split(string(src), "\n") {
		if strings.HasPrefix(l, "```") {
			inFence = !inFence
		}
		if inFence {
			continue
		}
		for _, m := range mdLink.FindAllStringSubmatch(l, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "#") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			target, _, _ = strings.Cut(target, "#")
			resolved := path.Clean(path.Join(path.Dir(p), target))
			targets[resolved] = true
			if _, err := fs.Stat(fsys, resolved); err != nil {
				broken = append(broken, fmt.Sprintf("%s line %d: %s does not exist", p, i+1, m[1]))
			}
		}
	}
	return broken, targets, nil
}

// TestDocumentationLinks: every relative link of the README, SECURITY.md and the pages
// under docs/ reaches a file of the repository, and every page under docs/ is linked
// from the README, so a new page cannot be left where no reader finds it.
func TestDocumentationLinks(t *testing.T) {
	root := os.DirFS("..")
	pages, err := fs.Glob(root, "docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(pages) == 0 {
		t.Fatal("no page under docs/")
	}
	var fromREADME map[string]bool
	for _, p := range append([]string{"README.md", "SECURITY.md"}, pages...) {
		broken, targets, err := brokenLinks(root, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range broken {
			t.Error(b)
		}
		if p == "README.md" {
			fromREADME = targets
		}
	}
	for _, p := range pages {
		if !fromREADME[p] {
			t.Errorf("README.md does not link to %s", p)
		}
	}
}

func TestBrokenLinksFindsMissingTargets(t *testing.T) {
	fsys := fstest.MapFS{
		"README.md":     {Data: []byte("[a](docs/a.md) [b](docs/b.md#x) [web](https://example.com/c.md) [top](#words)\n```sh\n[x](docs/none.md)\n```\n")},
		"docs/a.md":     {Data: []byte("[up](../README.md) [gone](gone.md) [b](b.md)\n")},
		"docs/b.md":     {Data: []byte("b\n")},
		"docs/other.md": {Data: []byte("[sec](../SECURITY.md)\n")},
	}
	for _, c := range []struct {
		page, want string
	}{
		{"README.md", ""},
		{"docs/a.md", "docs/a.md line 1: gone.md does not exist"},
		{"docs/other.md", "docs/other.md line 1: ../SECURITY.md does not exist"},
	} {
		broken, _, err := brokenLinks(fsys, c.page)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(broken, "; "); got != c.want {
			t.Errorf("%s: %q, want %q", c.page, got, c.want)
		}
	}
	_, targets, _ := brokenLinks(fsys, "README.md")
	if !targets["docs/a.md"] || !targets["docs/b.md"] || targets["docs/none.md"] {
		t.Errorf("README targets %v: want docs/a.md and docs/b.md, not the fenced docs/none.md", targets)
	}
}
