package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// File names inside a certificate directory.
const (
	CAFile    = "ca.crt"
	CAKeyFile = "ca.key"
)

// CertFile and KeyFile are where IssueNode writes name's certificate and
// key in dir.
func CertFile(dir, name string) string { return filepath.Join(dir, name+".crt") }
func KeyFile(dir, name string) string  { return filepath.Join(dir, name+".key") }

// NodeFiles are the Files of name's certificate in dir.
func NodeFiles(dir, name string) Files {
	return Files{CA: filepath.Join(dir, CAFile), Cert: CertFile(dir, name), Key: KeyFile(dir, name)}
}

// ErrExists is returned instead of overwriting a CA or a key.
var ErrExists = errors.New("already exists")

// InitCA creates a CA (ECDSA P-256) in dir: ca.crt, which every process is
// given as --tls-ca, and ca.key, which stays with whoever issues
// certificates. It refuses to overwrite an existing CA.
func InitCA(dir, name string, validity time.Duration) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []string{CAFile, CAKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return fmt.Errorf("%s: %w (remove it to start a new CA; every certificate it signed stops working)", filepath.Join(dir, f), ErrExists)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"tide"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, CAKeyFile), pemBlock("PRIVATE KEY", kder), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, CAFile), pemBlock("CERTIFICATE", der), 0o644)
}

// NodeCert says what certificate IssueNode makes.
type NodeCert struct {
	// Name is the certificate's common name and its files' names.
	Name string
	// IPs and DNS are the addresses the certificate is valid for: the
	// ones peers dial this process at.
	IPs []net.IP
	DNS []string
	// NotBefore and NotAfter bound its validity; zero NotBefore is an hour
	// ago (clocks differ), zero NotAfter a year on.
	NotBefore, NotAfter time.Time
}

// IssueNode signs a certificate for a tide process (or a client: it is
// valid for both ends of mutual TLS) with the CA in dir, and writes
// NAME.crt and NAME.key there, replacing earlier ones (rotation).
func IssueNode(dir string, nc NodeCert) (*x509.Certificate, error) {
	if nc.Name == "" || filepath.Base(nc.Name) != nc.Name || nc.Name == "ca" {
		return nil, fmt.Errorf("certificate name %q: want a plain file name other than ca", nc.Name)
	}
	ca, err := tls.LoadX509KeyPair(filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load the CA in %s (tide cert init makes one): %w", dir, err)
	}
	certPEM, keyPEM, err := Issue(ca, nc)
	if err != nil {
		return nil, err
	}
	// Key first, then certificate, each renamed into place, so that a
	// process watching the files never loads a certificate with the old
	// key for long: it retries on the next change.
	if err := writeAtomic(KeyFile(dir, nc.Name), keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeAtomic(CertFile(dir, nc.Name), certPEM, 0o644); err != nil {
		return nil, err
	}
	b, _ := pem.Decode(certPEM)
	return x509.ParseCertificate(b.Bytes)
}

// Issue signs a certificate for nc with the CA ca (its certificate and
// key, as tls.LoadX509KeyPair reads ca.crt and ca.key) and returns it and
// its new key (ECDSA P-256), PEM-encoded, writing nothing: for a process
// that hands each process it starts a certificate of its own.
func Issue(ca tls.Certificate, nc NodeCert) (certPEM, keyPEM []byte, err error) {
	if len(ca.Certificate) == 0 {
		return nil, nil, errors.New("issue a certificate: no CA certificate")
	}
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		return nil, nil, err
	}
	if !caCert.IsCA {
		return nil, nil, fmt.Errorf("issue a certificate: %q is not a CA certificate", caCert.Subject.CommonName)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	if nc.NotBefore.IsZero() {
		nc.NotBefore = now.Add(-time.Hour)
	}
	if nc.NotAfter.IsZero() {
		nc.NotAfter = now.Add(365 * 24 * time.Hour)
	}
	if !nc.NotAfter.After(nc.NotBefore) {
		return nil, nil, fmt.Errorf("certificate %s: validity ends (%s) before it starts (%s)", nc.Name, nc.NotAfter, nc.NotBefore)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: nc.Name, Organization: []string{"tide"}},
		NotBefore:    nc.NotBefore,
		NotAfter:     nc.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  nc.IPs,
		DNSNames:     nc.DNS,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, ca.PrivateKey)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", kder), nil
}

func writeAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}
