// Package redistest runs a private redis-server for a test, on a free
// loopback port, and can stop and restart it to simulate an outage.
package redistest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamgate/gateway/internal/serverwait"
)

// Server is a redis-server process owned by one test.
type Server struct {
	t    *testing.T
	bin  string
	Addr string
	cmd  *exec.Cmd
	done chan struct{}
	// CAFile is the PEM certificate a TLS server presents (and clients
	// must trust); empty for a plain server.
	CAFile  string
	keyFile string
}

// Start runs a redis-server for t, stopped when t ends. Without the binary
// the test is skipped, unless GATEWAY_TEST_REQUIRE names redis (as the
// README's test command sets), when it fails.
func Start(t *testing.T) *Server { return start(t, false) }

// StartTLS runs a redis-server that speaks only TLS, with a self-signed
// certificate for 127.0.0.1 in CAFile.
func StartTLS(t *testing.T) *Server { return start(t, true) }

func start(t *testing.T, useTLS bool) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if strings.Contains(os.Getenv("GATEWAY_TEST_REQUIRE"), "redis") {
			t.Fatalf("redis-server is required (GATEWAY_TEST_REQUIRE=redis) but not installed: %v", err)
		}
		t.Skip("redis-server is not installed; `make test` installs it and runs this test")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &Server{t: t, bin: bin, Addr: addr}
	if useTLS {
		s.CAFile, s.keyFile = selfSigned(t)
	}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Restart starts the server again on the same address.
func (s *Server) Restart() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	args := []string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"}
	opts := &redis.Options{Addr: s.Addr, MaxRetries: -1}
	if s.CAFile != "" {
		args = append(args, "--port", "0", "--tls-port", port, "--tls-cert-file", s.CAFile, "--tls-key-file", s.keyFile,
			"--tls-ca-cert-file", s.CAFile, "--tls-auth-clients", "no")
		pool := x509.NewCertPool()
		pem, _ := os.ReadFile(s.CAFile)
		pool.AppendCertsFromPEM(pem)
		opts.TLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	s.cmd = exec.Command(s.bin, args...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	s.done = make(chan struct{})
	cmd, done := s.cmd, s.done
	go func() { _ = cmd.Wait(); close(done) }()

	c := redis.NewClient(opts)
	defer c.Close()
	if err := serverwait.Up("redis-server", done, 10*time.Second, 20*time.Millisecond, func(ctx context.Context) error { return c.Ping(ctx).Err() }); err != nil {
		s.t.Fatal(err)
	}
}

// Stop kills the server and waits for it to exit.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Port is the server's port, for configs.
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.Addr)
	n, _ := strconv.Atoi(p)
	return n
}

// selfSigned writes a certificate and key for 127.0.0.1 and returns their
// paths.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
