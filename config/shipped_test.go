package config

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// shippedConf is the default configuration the packages install as /etc/sdupdate/sdupdate.conf.
const shippedConf = "../packaging/sdupdate.conf"

// The packaged file shows every key, commented out, with its real default: with the comment
// marks taken away (and a source set) it loads to exactly Default().
func TestShippedConfigShowsEveryKeyWithItsDefault(t *testing.T) {
	data, err := os.ReadFile(shippedConf)
	if err != nil {
		t.Fatal(err)
	}
	// As installed, it is valid and sets nothing: sdupdate then asks for ManifestURL.
	if _, err := load(t, map[string]string{confPath: string(data)}); err == nil || !strings.Contains(err.Error(), "ManifestURL") {
		t.Errorf("the shipped file as it is: %v; want the error that ManifestURL is required", err)
	}

	setting := regexp.MustCompile(`(?m)^#([A-Za-z]+)=(.*)$`)
	shown := map[string]bool{}
	for _, m := range setting.FindAllStringSubmatch(string(data), -1) {
		shown[m[1]] = true
	}
	for section, keys := range schema {
		for key := range keys {
			if !shown[key] {
				t.Errorf("%s does not show [%s] %s=", shippedConf, section, key)
			}
		}
	}

	uncommented := setting.ReplaceAllString(string(data), "$1=$2")
	uncommented = strings.Replace(uncommented, "ManifestURL=https://updates.example.com/sd-agent/manifest.json", "ManifestURL=https://u.example.com/m.json", 1)
	uncommented = strings.Replace(uncommented, "PublicKey=RWQ...", "PublicKey="+key1, 1)
	c, err := load(t, map[string]string{confPath: uncommented})
	if err != nil {
		t.Fatalf("the shipped file with its settings uncommented: %v", err)
	}
	want := Default()
	want.ManifestURL = "https://u.example.com/m.json"
	want.PublicKeys = []string{key1}
	want.Files = []string{confPath}
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("the shipped file's values are not the defaults:\ngot  %+v\nwant %+v", *c, want)
	}
}
