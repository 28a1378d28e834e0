// Package pgtest runs a private PostgreSQL server for a test: a fresh
// cluster in a temporary directory, on a free loopback port, that can be
// stopped and started again to simulate an outage.
package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/streamgate/gateway/internal/serverwait"
)

// Server is a postgres process owned by one test.
type Server struct {
	t    *testing.T
	bin  string // the directory of initdb and postgres
	dir  string
	port string
	// DSN connects to the server's postgres database as its superuser.
	DSN  string
	cmd  *exec.Cmd
	done chan struct{}
	// as is the user the server runs as when the test runs as root,
	// which PostgreSQL refuses to run as.
	as *user.User
}

// Start runs a PostgreSQL server for t, stopped and removed when t ends.
// Without the binaries (Debian's postgresql package) the test is skipped,
// unless GATEWAY_TEST_REQUIRE names postgres (as the README's test command
// sets), when it fails.
func Start(t *testing.T) *Server {
	t.Helper()
	bin := binDir()
	if bin == "" {
		if strings.Contains(os.Getenv("GATEWAY_TEST_REQUIRE"), "postgres") {
			t.Fatal("PostgreSQL is required (GATEWAY_TEST_REQUIRE=postgres) but initdb and postgres are not installed")
		}
		t.Skip("PostgreSQL is not installed; `make test` installs it and runs this test")
	}
	s := &Server{t: t, bin: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, PostgreSQL needs another user to run as: %v", err)
		}
		s.as = u
	}
	// Not t.TempDir: its parents are private to this user, and the
	// server may run as another.
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	s.dir = dir
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	s.own(dir)
	data := filepath.Join(dir, "data")
	if out, err := s.command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, s.port, _ = net.SplitHostPort(ln.Addr().String())
	ln.Close()
	s.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%s/postgres?sslmode=disable", s.port)
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// binDir finds the server's binaries: on PATH, or where Debian puts them.
func binDir() string {
	if p, err := exec.LookPath("postgres"); err == nil {
		if _, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p)
		}
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(found) == 0 {
		return ""
	}
	return filepath.Dir(found[len(found)-1]) // the newest version
}

// own gives path to the user the server runs as.
func (s *Server) own(path string) {
	if s.as == nil {
		return
	}
	uid, _ := strconv.Atoi(s.as.Uid)
	gid, _ := strconv.Atoi(s.as.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		s.t.Fatal(err)
	}
}

// command runs name as the server's user.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	if s.as != nil {
		uid, _ := strconv.Atoi(s.as.Uid)
		gid, _ := strconv.Atoi(s.as.Gid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		cmd.Env = append(os.Environ(), "HOME="+s.dir)
	}
	return cmd
}

// Restart starts the server again on the same port and data.
func (s *Server) Restart() {
	s.t.Helper()
	s.cmd = s.command(filepath.Join(s.bin, "postgres"), "-D", filepath.Join(s.dir, "data"), "-p", s.port, "-h", "127.0.0.1",
		"-k", s.dir, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start postgres: %v", err)
	}
	s.done = make(chan struct{})
	cmd, done := s.cmd, s.done
	go func() { _ = cmd.Wait(); close(done) }()
	err := serverwait.Up("postgres", done, 30*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, s.DSN)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		return conn.Ping(ctx)
	})
	if err != nil {
		s.t.Fatal(err)
	}
}

// Stop shuts the server down (fast: open connections are cut) and waits
// for it to exit.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}
