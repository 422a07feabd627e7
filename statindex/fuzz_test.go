package statindex

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"reflect"
	"testing"

	"github.com/spf13/afero"
)

// FuzzParse feeds indexes whose end line holds the right checksum, so the fuzzer's bytes reach
// the installed line and the entries: whatever they hold, parse answers without a panic, and an
// index it accepts is saved and read back as the same entries.
func FuzzParse(f *testing.F) {
	f.Add([]byte("installed m\n1 2 3 4 5 " + sumA + " bin/my agent\n0 0 0 0 0 " + sumA + " a\n"))
	f.Add([]byte("installed \n"))
	f.Add([]byte("installed m\n18446744073709551615 1 1 1 1 " + sumA + " big\n"))
	f.Add([]byte("installed m\n1 2 3 4 " + sumA + " short\n01 -2 3 4 5 " + sumA + " x\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		data := append([]byte(header), body...)
		sum := sha256.Sum256(data)
		data = append(data, "end "+hex.EncodeToString(sum[:])+"\n"...)
		x, err := parse(data)
		if err != nil {
			return
		}
		fsys := afero.NewMemMapFs()
		if err := x.Save(fsys, "/index"); err != nil {
			t.Fatal(err)
		}
		back, err := Load(fsys, "/index")
		if err != nil {
			t.Fatalf("an index written from an accepted one is refused: %v", err)
		}
		if back.Installed != x.Installed || !reflect.DeepEqual(back.entries, x.entries) {
			t.Fatalf("saved and read back: %q %v, not %q %v", back.Installed, back.entries, x.Installed, x.entries)
		}
		saved, _ := afero.ReadFile(fsys, "/index")
		if err := back.Save(fsys, "/index"); err != nil {
			t.Fatal(err)
		}
		if again, _ := afero.ReadFile(fsys, "/index"); !bytes.Equal(again, saved) {
			t.Fatalf("saving is not stable:\n%s\n%s", saved, again)
		}
	})
}
