package snapshot

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// An object of content that left the install can be read back by its sha256, read-only; a name
// that is no sha256, a missing object and, on the OS, a symlink put in an object's place are
// refused.
func TestOpenObject(t *testing.T) {
	forEachFs(t, func(t *testing.T, e *env) {
		e.installV1(t)
		f, err := Describe(e.fs, e.install, "agent.py")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Create(context.Background(), Spec{ID: NewID(time.Now(), "1.0.0"), Version: "1.0.0", Files: []FileMeta{*f}, Leaving: []string{"agent.py"}}); err != nil {
			t.Fatal(err)
		}
		if size, ok := e.store.ObjectSize(f.SHA256); !ok || size != f.Size {
			t.Errorf("ObjectSize(%s) = %d, %v; want %d, true", f.SHA256, size, ok, f.Size)
		}
		obj, fi, err := e.store.OpenObject(f.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(obj)
		if string(data) != "print('v1')\n" || fi.Size() != f.Size {
			t.Errorf("object holds %q", data)
		}
		// (The in-memory filesystem makes a handle read-only only for a bare O_RDONLY.)
		if _, err := obj.Write([]byte("x")); err == nil && e.onOS {
			t.Error("the object was opened for writing")
		}
		obj.Close()

		for _, sum := range []string{strings.Repeat("0", 64), "../../../../etc/passwd", strings.ToUpper(f.SHA256)} {
			if _, ok := e.store.ObjectSize(sum); ok {
				t.Errorf("ObjectSize(%q) found an object", sum)
			}
			if _, _, err := e.store.OpenObject(sum); !errors.Is(err, ErrNotFound) {
				t.Errorf("OpenObject(%q): %v, want ErrNotFound", sum, err)
			}
		}
		if !e.onOS {
			return
		}
		target := e.path("agent.conf")
		other := strings.Repeat("ab", 32)
		if err := os.Symlink(target, e.store.objectPath(other)); err != nil {
			t.Fatal(err)
		}
		if _, ok := e.store.ObjectSize(other); ok {
			t.Error("ObjectSize follows a symlink")
		}
		if _, _, err := e.store.OpenObject(other); err == nil {
			t.Error("OpenObject follows a symlink")
		}
	})
}
