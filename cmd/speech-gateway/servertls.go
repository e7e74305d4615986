package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	prom "github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/speech-gateway/speech-gateway/internal/filewatch"
)

// serverTLS is the gRPC port's TLS: the certificate and key files, and
// for mutual TLS the bundle of CAs that client certificates must chain
// to. It re-reads the files when started, as it does the SLNG key, so
// that a renewed certificate (cert-manager rewriting a mounted Secret)
// serves new connections without a restart; connections already open keep
// the certificate they were made with. Files that do not make a valid
// configuration (a certificate that does not match its key, during a swap
// of one file before the other, say) leave the one in force.
type serverTLS struct {
	paths   []string // cert, key and, for mutual TLS, client CA
	current atomic.Pointer[tls.Config]
	log     *zap.Logger
	reloads *prom.CounterVec
	expiry  prom.Gauge
	file    *filewatch.Watcher
}

// newServerTLS reads the files (caFile "" for TLS without client
// certificates) and fails when they do not make a valid configuration, so
// that a gateway never starts serving cleartext or a broken certificate.
// Call file.Start to follow changes.
func newServerTLS(certFile, keyFile, caFile string, log *zap.Logger, reg prom.Registerer) (*serverTLS, error) {
	s := &serverTLS{paths: []string{certFile, keyFile}, log: log,
		reloads: prom.NewCounterVec(prom.CounterOpts{
			Name: "speech_gateway_tls_reloads_total",
			Help: "Reads of the TLS certificate, key and client CA files that found a change and used it (changed) or could not use them (error).",
		}, []string{"result"}),
		expiry: prom.NewGauge(prom.GaugeOpts{
			Name: "speech_gateway_tls_certificate_expiry_timestamp_seconds",
			Help: "When the serving certificate in use expires (its NotAfter), in seconds since the epoch.",
		}),
	}
	if caFile != "" {
		s.paths = append(s.paths, caFile)
	}
	contents := make([][]byte, len(s.paths))
	for i, p := range s.paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		contents[i] = b
	}
	c, err := s.build(contents)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	s.use(c)
	s.reloads.WithLabelValues("changed")
	s.reloads.WithLabelValues("error")
	reg.MustRegister(s.reloads, s.expiry)
	s.file = filewatch.NewSet(s.paths, contents, s.apply, s.report)
	return s, nil
}

// mutual says whether client certificates are required.
func (s *serverTLS) mutual() bool { return len(s.paths) == 3 }

// config is the configuration to serve with: each handshake takes the
// configuration in force when it starts.
func (s *serverTLS) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.current.Load(), nil
		},
	}
}

// build makes a configuration from the files' contents, in s.paths order.
func (s *serverTLS) build(contents [][]byte) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(contents[0], contents[1])
	if err != nil {
		return nil, fmt.Errorf("certificate %s and key %s: %w", s.paths[0], s.paths[1], err)
	}
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2"},
		Certificates: []tls.Certificate{cert},
	}
	if s.mutual() {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(contents[2]) {
			return nil, fmt.Errorf("client CA file %s: %w", s.paths[2], errNoCertificates)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// errNoCertificates is a CA file with no PEM certificate in it.
var errNoCertificates = errors.New("no PEM certificate in it")

// use puts c in force for new handshakes.
func (s *serverTLS) use(c *tls.Config) {
	s.current.Store(c)
	if leaf := c.Certificates[0].Leaf; leaf != nil {
		s.expiry.Set(float64(leaf.NotAfter.Unix()))
	}
}

// apply takes changed files, if they make a valid configuration.
func (s *serverTLS) apply(contents [][]byte) error {
	c, err := s.build(contents)
	if err != nil {
		return err
	}
	s.use(c)
	s.reloads.WithLabelValues("changed").Inc()
	fields := []zap.Field{zap.String("cert_file", s.paths[0])}
	if leaf := c.Certificates[0].Leaf; leaf != nil {
		fields = append(fields, zap.Time("not_after", leaf.NotAfter))
	}
	s.log.Info("TLS files changed: new connections use them; open connections keep theirs", fields...)
	return nil
}

// report counts and logs files that cannot be used.
func (s *serverTLS) report(err error) {
	s.reloads.WithLabelValues("error").Inc()
	s.log.Warn("cannot use the TLS files; keeping the certificate in use", zap.Error(err))
}
