package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// rsyncd is a real `rsync --daemon` on loopback, one read-only module per directory.
type rsyncd struct {
	cmd  *exec.Cmd
	port int
}

func startRsyncd(dir string, modules map[string]string) (*rsyncd, error) {
	if _, err := exec.LookPath("rsync"); err != nil {
		return nil, fmt.Errorf("rsync is needed for the rsync contender (apt-get install rsync): %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, "use chroot = no\naddress = 127.0.0.1\nport = %d\npid file = %s\nlog file = %s\n",
		port, filepath.Join(dir, "rsyncd.pid"), filepath.Join(dir, "rsyncd.log"))
	for name, path := range modules {
		fmt.Fprintf(&conf, "[%s]\npath = %s\nread only = yes\nuid = root\ngid = root\n", name, path)
	}
	confFile := filepath.Join(dir, "rsyncd.conf")
	if err := os.WriteFile(confFile, []byte(conf.String()), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command("rsync", "--daemon", "--no-detach", "--config="+confFile)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start rsync --daemon: %w", err)
	}
	d := &rsyncd{cmd: cmd, port: port}
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return d, nil
		}
		if time.Now().After(deadline) {
			d.Close()
			return nil, fmt.Errorf("rsync --daemon did not listen on port %d: %w", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *rsyncd) URL(module string) string {
	return fmt.Sprintf("rsync://127.0.0.1:%d/%s/", d.port, module)
}

func (d *rsyncd) Close() {
	d.cmd.Process.Kill()
	d.cmd.Wait()
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
