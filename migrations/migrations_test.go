package migrations

import (
	"io/fs"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestFilesAreNumberedFromOneWithoutGaps guards the naming the runner relies on: a
// gap or a duplicate usually means a rebase renumbered someone's migration.
func TestFilesAreNumberedFromOneWithoutGaps(t *testing.T) {
	names, err := fs.Glob(FS, "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal("no migrations embedded")
	}
	pattern := regexp.MustCompile(`^(\d{4})_[a-z0-9_]+\.sql$`)
	for i, name := range names {
		m := pattern.FindStringSubmatch(name)
		if m == nil {
			t.Fatalf("%s does not match NNNN_description.sql", name)
		}
		version, _ := strconv.Atoi(m[1])
		if version != i+1 {
			t.Fatalf("%s has version %d, want %d", name, version, i+1)
		}
		body, err := fs.ReadFile(FS, name)
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(body)) == "" {
			t.Fatalf("%s is empty", name)
		}
	}
}
