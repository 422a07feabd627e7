package updater

import (
	"context"
	"testing"

	"github.com/spf13/afero"
)

// A name that is a file in one version and a directory in the next (and back) installs, and a
// rollback restores the shape it had.
func TestFileAndDirectorySwapBetweenVersions(t *testing.T) {
	s := newSite(t)
	fsys := afero.NewMemMapFs()
	e := newEngine(fsys, testConfig(s), nil)
	fileV := map[string]agentFile{"agent.py": {data: "1\n"}, "x": {data: "a file\n"}}
	dirV := map[string]agentFile{"agent.py": {data: "2\n"}, "x/y": {data: "in a directory\n"}, "x/z/w": {data: "deeper\n"}}
	for i, step := range []struct {
		version string
		files   map[string]agentFile
	}{{"1.0.0", fileV}, {"1.1.0", dirV}, {"1.2.0", fileV}} {
		s.publish(t, step.version, step.files)
		if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
			t.Fatalf("update to %s: %v", step.version, err)
		}
		equalTrees(t, tree(t, fsys, installDir), want(step.files, nil))
		if i == 0 {
			continue
		}
		prev := []map[string]agentFile{fileV, dirV}[i-1]
		if _, err := e.Rollback(context.Background(), ""); err != nil {
			t.Fatalf("rollback from %s: %v", step.version, err)
		}
		equalTrees(t, tree(t, fsys, installDir), want(prev, nil))
		if _, err := e.Update(context.Background(), UpdateOptions{}); err != nil {
			t.Fatalf("update to %s again: %v", step.version, err)
		}
	}
}
