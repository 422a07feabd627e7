package main

import "errors"

// sandboxAvailable reports whether a real systemd can be booted here for the demo.
func sandboxAvailable() error { return errors.New("the systemd sandbox demo is not built yet") }

func (d *demo) runSandbox() error { return d.runLocal() }
