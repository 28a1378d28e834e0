package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestSIGHUPReloads: a gateway process rereads its file on SIGHUP, keeps
// serving when the new file is broken, and exits cleanly on SIGTERM.
func TestSIGHUPReloads(t *testing.T) {
	addr := freeAddr(t)
	conf := func(models string) string {
		return "server:\n  listen: " + addr + "\nauth: {enabled: false}\nproviders:\n  m: {type: mock}\nmodels:\n" + models
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(conf("  first: {routes: [{provider: m}]}\n"))
	c := startChild(t, path, "-watch-interval", "0")
	models := func() string {
		resp, err := http.Get("http://" + addr + "/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}

	write(conf("  first: {routes: [{provider: m}]}\n  second: {routes: [{provider: m}]}\n"))
	_ = c.cmd.Process.Signal(syscall.SIGHUP)
	c.waitLog(t, "config reloaded")
	if m := models(); !strings.Contains(m, `"second"`) {
		t.Errorf("after SIGHUP: %s", m)
	}

	write("models: [oops\n")
	_ = c.cmd.Process.Signal(syscall.SIGHUP)
	c.waitLog(t, "the running configuration stays")
	if m := models(); !strings.Contains(m, `"second"`) {
		t.Errorf("after a broken reload: %s", m)
	}

	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	c.waitLog(t, "shut down cleanly")
	<-c.exited
	if code := c.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d", code)
	}
}
