package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// callerHeader is the metadata key the gateway's "metadata" identity
// source reads by default (callers.DefaultCallerHeader).
const callerHeader = "x-caller-id"

// connFlags are how every command reaches the gateway: its address, TLS,
// a deadline and the caller id to claim.
type connFlags struct {
	addr       string
	tls        bool
	ca         string
	cert, key  string
	serverName string
	timeout    time.Duration
	callerID   string
}

// flags returns a flag set with the connection flags every command
// shares; timeout is the command's default --timeout (0: none).
func flags(name string, stderr io.Writer, timeout time.Duration) (*flag.FlagSet, *connFlags) {
	fs := flag.NewFlagSet("speechctl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &connFlags{}
	fs.StringVar(&c.addr, "addr", "localhost:50051", "the gateway's gRPC address")
	fs.BoolVar(&c.tls, "tls", false, "connect with TLS, trusting the system's CAs unless --ca names others; --ca, --cert and --key imply it")
	fs.StringVar(&c.ca, "ca", "", "PEM file of the CAs to trust for the gateway's certificate, instead of the system's")
	fs.StringVar(&c.cert, "cert", "", "PEM client certificate for a gateway that requires one (mutual TLS); with --key")
	fs.StringVar(&c.key, "key", "", "PEM private key of --cert")
	fs.StringVar(&c.serverName, "server-name", "", "the name to verify the gateway's certificate against, when --addr is not in it (e.g. through a port-forward)")
	fs.DurationVar(&c.timeout, "timeout", timeout, "give up on the call after this long; 0 waits as long as it takes")
	fs.StringVar(&c.callerID, "caller-id", "", "send this caller id as "+callerHeader+" metadata, for a gateway that takes the caller's word for it")
	return fs, c
}

// errTLSFlags is a client certificate without its key, or the reverse.
var errTLSFlags = errors.New("--cert and --key go together")

// dialOptions are the transport credentials the flags ask for.
func (c *connFlags) dialOptions() ([]grpc.DialOption, error) {
	if (c.cert == "") != (c.key == "") {
		return nil, errTLSFlags
	}
	if !c.tls && c.ca == "" && c.cert == "" && c.serverName == "" {
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.serverName}
	if c.ca != "" {
		b, err := os.ReadFile(c.ca)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--ca %s: no PEM certificate in it", c.ca)
		}
	}
	if c.cert != "" {
		pair, err := tls.LoadX509KeyPair(c.cert, c.key)
		if err != nil {
			return nil, fmt.Errorf("--cert and --key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}, nil
}

// dial connects to the gateway; the caller must Close the connection.
func (c *connFlags) dial() (*grpc.ClientConn, error) {
	opts, err := c.dialOptions()
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(c.addr, opts...)
}

// connect dials the gateway and gives the context of one call (see
// callContext); done closes both.
func (c *connFlags) connect(ctx context.Context) (*grpc.ClientConn, context.Context, func(), error) {
	conn, err := c.dial()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := c.callContext(ctx)
	return conn, ctx, func() { cancel(); conn.Close() }, nil
}

// callContext is ctx with --timeout and --caller-id applied; the caller
// must call cancel.
func (c *connFlags) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.callerID != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, callerHeader, c.callerID)
	}
	if c.timeout > 0 {
		return context.WithTimeout(ctx, c.timeout)
	}
	return context.WithCancel(ctx)
}

// asCaller is " as caller ID" for a started message's caller id, or ""
// when the gateway does not identify callers.
func asCaller(id string) string {
	if id == "" {
		return ""
	}
	return " as caller " + id
}
