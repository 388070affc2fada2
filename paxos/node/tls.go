package node

import (
	"errors"
	"net/http"
	"time"

	"tide/tlsconf"
	"tide/transport"
)

// newTransport is a transport with the given TLS material (nil: plain
// TCP).
func newTransport(c *tlsconf.Config) *transport.Transport {
	t := transport.New()
	t.TLS = c
	return t
}

// HTTPClient is a client of d's role processes' HTTP ports (/status,
// /deployment, /healthz) and of its control endpoint, with d.Certs: with
// TLS they serve mutual TLS and take plain text on loopback only.
func (d Deployment) HTTPClient(timeout time.Duration) *http.Client {
	return d.Certs.HTTPClient(timeout)
}

// ErrNeedTLS is returned by NewClient for a deployment that speaks mutual
// TLS when the caller gave no TLS material (Deployment.Certs).
var ErrNeedTLS = errors.New("this log speaks mutual TLS: give --tls-ca, --tls-cert and --tls-key, a certificate of the log's CA (tide cert node NAME)")
