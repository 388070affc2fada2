package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// TestIssue: Issue signs in memory a certificate of the CA for the
// addresses given, writing nothing, and refuses a signer that is not a
// CA.
func TestIssue(t *testing.T) {
	dir := newCA(t)
	ca, err := tls.LoadX509KeyPair(filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := Issue(ca, NodeCert{Name: "r", IPs: []net.IP{net.ParseIP("10.96.0.7")}})
	if err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("Issue wrote files: %v", ents)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	caCert, _ := x509.ParseCertificate(ca.Certificate[0])
	roots.AddCert(caCert)
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "10.96.0.7", Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("issued certificate, usage %v: %v", usage, err)
		}
	}
	if err := leaf.VerifyHostname("10.96.0.8"); err == nil {
		t.Error("issued certificate names an address it was not issued for")
	}
	if _, _, err := Issue(pair, NodeCert{Name: "x"}); err == nil {
		t.Error("a node certificate signed another")
	}
}
