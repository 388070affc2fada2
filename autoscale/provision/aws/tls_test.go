package aws

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"tide/autoscale/provision"
)

// testTLS is TLS material with bytes a shell could mangle: quotes, a
// line that is the here-document delimiter, no final newline, NULs.
func testTLS(t *testing.T) *provision.TLS {
	t.Helper()
	key := make([]byte, 300)
	rand.Read(key)
	return &provision.TLS{
		CA:   []byte("-----BEGIN CERTIFICATE-----\nit's \"$HOME\" `x`\nTIDE_B64\n-----END CERTIFICATE-----\n"),
		Cert: []byte("cert\x00with NUL and no final newline"),
		Key:  key,
	}
}

// checkTLSFiles checks that dir holds tls's files, byte for byte, the key
// readable by its owner only.
func checkTLSFiles(t *testing.T, dir string, tls *provision.TLS) {
	t.Helper()
	for name, want := range tls.Files() {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %q (%v), want %q", name, got, err, want)
		}
	}
	st, err := os.Stat(filepath.Join(dir, provision.TLSKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	if tmp, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(tmp) > 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
}

// TestRoleUserDataTLS runs a role's user data with TLS (system paths in a
// temporary directory, curl and systemctl faked): it writes the three
// files byte for byte, and the start script runs the role with the
// --tls-* flags naming them after its own arguments.
func TestRoleUserDataTLS(t *testing.T) {
	f := newFakeEnv(t)
	tls := testTLS(t)
	tlsDir := filepath.Join(f.dir, "etc", "tide tls")
	args := []string{"log", "serve", "--role", "10.0.0.5:5057"}
	ud, err := RoleUserData(RoleUserDataOptions{BinaryURL: "https://example.com/tide", BinaryPath: f.bin, Args: args, TLS: tls, TLSDir: tlsDir})
	if err != nil {
		t.Fatal(err)
	}
	bashSyntax(t, "role user data", ud)
	if strings.Contains(ud, string(tls.CA)) {
		t.Error("the CA is in the user data as it is, not in base64")
	}
	ud = strings.ReplaceAll(ud, "/etc/systemd/system/", f.dir+"/")
	if out, err := run(t, f.env, f.dir, ud); err != nil {
		t.Fatalf("user data: %v\n%s", err, out)
	}
	checkTLSFiles(t, tlsDir, tls)
	start := filepath.Join(filepath.Dir(f.bin), "tide-log-start")
	if out, err := run(t, f.env, f.dir, "exec "+start+"\n"); err != nil {
		t.Fatalf("start script: %v\n%s", err, out)
	}
	want := append(slices.Clone(args), "--tls-ca", tlsDir+"/ca.crt", "--tls-cert", tlsDir+"/role.crt", "--tls-key", tlsDir+"/role.key")
	if calls := f.calls(t); len(calls) != 1 || !slices.Equal(calls[0], want) {
		t.Errorf("tide ran with %q, want %q", calls, want)
	}

	// By default the files go to /etc/tide/tls.
	ud, err = RoleUserData(RoleUserDataOptions{Args: args, TLS: tls})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ud, "'/etc/tide/tls/role.key'") || !strings.Contains(ud, "'--tls-key' '/etc/tide/tls/role.key'") {
		t.Errorf("default TLS dir: user data does not write and name /etc/tide/tls/role.key:\n%s", ud)
	}
}

// TestUserDataTLS: a storage node's user data with TLS writes the files
// before the node starts, and the node runs with the --tls-* flags.
func TestUserDataTLS(t *testing.T) {
	f := newFakeEnv(t)
	tls := testTLS(t)
	tlsDir := filepath.Join(f.dir, "tls")
	o := UserDataOptions{Group: "g", Region: "eu-west-3", BinaryURL: "https://example.invalid/tide", BinaryPath: f.bin,
		DataDir: filepath.Join(f.dir, "data"), NodeFlags: []string{"--capacity", "8GiB"}, PeerWait: time.Second, TLS: tls, TLSDir: tlsDir}
	ud := mustUserData(t, o)
	bashSyntax(t, "user data", ud)
	if strings.Index(ud, "base64 -d") > strings.Index(ud, "systemctl enable") {
		t.Error("the TLS files are written after the node's unit starts")
	}
	unitPath := filepath.Join(f.dir, "tide.service")
	if out, err := run(t, f.env, f.dir, strings.ReplaceAll(ud, "/etc/systemd/system/tide.service", unitPath)); err != nil {
		t.Fatalf("user data: %v\n%s", err, out)
	}
	checkTLSFiles(t, tlsDir, tls)
	// The oldest instance, no live peer: it starts a ring with the flags.
	env := append(slices.Clone(f.env), "FAKE_IP=10.0.0.7", "FAKE_LIVE=", "FAKE_ALL=10.0.0.7:5057\n")
	start := filepath.Join(filepath.Dir(f.bin), "tide-start")
	if out, err := run(t, env, f.dir, "exec "+start+"\n"); err != nil {
		t.Fatalf("start script: %v\n%s", err, out)
	}
	calls := f.calls(t)
	node := calls[len(calls)-1]
	tail := []string{"--capacity", "8GiB", "--tls-ca", tlsDir + "/ca.crt", "--tls-cert", tlsDir + "/role.crt", "--tls-key", tlsDir + "/role.key"}
	if node[0] != "node" || !slices.Equal(node[len(node)-len(tail):], tail) {
		t.Errorf("node ran with %q, want it to end with %q", node, tail)
	}

	// Without TLS, nothing of it.
	o.TLS = nil
	if ud := mustUserData(t, o); strings.Contains(ud, "--tls") || strings.Contains(ud, "base64") {
		t.Errorf("user data without TLS mentions it:\n%s", ud)
	}
}

// TestUserDataTLSLimits: TLS material that takes the user data over EC2's
// 16 KiB, or lacks a file, is refused with a reason.
func TestUserDataTLSLimits(t *testing.T) {
	big := &provision.TLS{CA: bytes.Repeat([]byte("c"), 9000), Cert: bytes.Repeat([]byte("x"), 4000), Key: []byte("k")}
	if _, err := RoleUserData(RoleUserDataOptions{Args: []string{"log", "serve"}, TLS: big}); err == nil || !strings.Contains(err.Error(), "over EC2's 16384") {
		t.Errorf("role user data with %d bytes of TLS: %v", len(big.CA)+len(big.Cert), err)
	}
	if _, err := UserData(UserDataOptions{Group: "g", Region: "r", TLS: big}); err == nil || !strings.Contains(err.Error(), "over EC2's 16384") {
		t.Errorf("node user data with %d bytes of TLS: %v", len(big.CA)+len(big.Cert), err)
	}
	// The same files in plain text would fit: base64 is what takes them over.
	small := &provision.TLS{CA: bytes.Repeat([]byte("c"), 2000), Cert: bytes.Repeat([]byte("x"), 2000), Key: []byte("k")}
	if _, err := RoleUserData(RoleUserDataOptions{Args: []string{"log", "serve"}, TLS: small}); err != nil {
		t.Errorf("role user data with 4 KB of TLS: %v", err)
	}
	noKey := &provision.TLS{CA: []byte("a"), Cert: []byte("b")}
	if _, err := RoleUserData(RoleUserDataOptions{TLS: noKey}); err == nil {
		t.Error("role user data with no key accepted")
	}
	issueOnly := &provision.TLS{CA: []byte("a"), Issue: func(string) ([]byte, []byte, error) { return []byte("c"), []byte("k"), nil }}
	if _, err := UserData(UserDataOptions{Group: "g", Region: "r", TLS: issueOnly}); err == nil {
		t.Error("node user data with an Issue func and no certificate accepted")
	}
	if _, err := NewRoles(context.Background(), RolesConfig{EC2: failingRun{}, Subnet: "s", Image: "i", TLS: noKey}); err == nil {
		t.Error("NewRoles with no key accepted")
	}
}

// TestRolesTLSOnMoto: an instance Roles launches with TLS gets user data
// that carries the files and starts the role with the flags.
func TestRolesTLSOnMoto(t *testing.T) {
	ctx := rolesCtx(t)
	r, ec := motoRoles(t, "10.78.0.0/24", "tls")
	tls := testTLS(t)
	r.cfg.TLS = tls
	ips, err := r.Reserve(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"log", "serve", "--role", ips[0] + ":5057", "--data-dir", "/data"}
	id, err := r.Run(ctx, "proxy", "proxy", ips[0], 0, args)
	if err != nil {
		t.Fatal(err)
	}
	want, err := RoleUserData(RoleUserDataOptions{Args: args, TLS: tls})
	if err != nil {
		t.Fatal(err)
	}
	if ud := userDataOf(t, ec, id); ud != want {
		t.Errorf("user data is not the role's with TLS:\n%s", ud)
	}
	if !strings.Contains(want, "'--tls-ca' '/etc/tide/tls/ca.crt'") {
		t.Errorf("user data starts the role without --tls-ca:\n%s", want)
	}
	if err := r.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRolesIssueTLSOnMoto: with TLS.Issue each instance's user data
// carries a certificate issued for its own reserved address.
func TestRolesIssueTLSOnMoto(t *testing.T) {
	ctx := rolesCtx(t)
	r, ec := motoRoles(t, "10.79.0.0/24", "issue")
	var issued []string
	r.cfg.TLS = &provision.TLS{CA: []byte("ca"), Issue: func(ip string) ([]byte, []byte, error) {
		issued = append(issued, ip)
		return []byte("cert for " + ip), []byte("key for " + ip), nil
	}}
	ips, err := r.Reserve(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range ips {
		args := []string{"log", "serve", "--role", ip + ":5057"}
		id, err := r.Run(ctx, "r", "acceptor", ip, 0, args)
		if err != nil {
			t.Fatal(err)
		}
		want, err := RoleUserData(RoleUserDataOptions{Args: args, TLS: &provision.TLS{CA: []byte("ca"), Cert: []byte("cert for " + ip), Key: []byte("key for " + ip)}})
		if err != nil {
			t.Fatal(err)
		}
		if ud := userDataOf(t, ec, id); ud != want {
			t.Errorf("instance at %s: user data does not carry the certificate issued for it:\n%s", ip, ud)
		}
	}
	if !slices.Equal(issued, ips) {
		t.Errorf("certificates issued for %v, want %v", issued, ips)
	}
	if err := r.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestMotoCheckTLS: CheckTLS finds the TLS flags in the user data of the
// launch template version a group launches (here $Latest), and reports
// ErrNoTLS for a group whose user data starts tide without them; a new
// version with TLS makes the first group pass.
func TestMotoCheckTLS(t *testing.T) {
	url := startMoto(t)
	as, ec := motoClients(t, url)
	ctx := rolesCtx(t)
	plain := UserDataOptions{Group: "tls-plain", Region: "us-east-1"}
	ensureMotoGroup(t, as, ec, "tls-plain", 0, 0, 2, mustUserData(t, plain))
	withTLS := UserDataOptions{Group: "tls-on", Region: "us-east-1", TLS: testTLS(t)}
	ensureMotoGroup(t, as, ec, "tls-on", 0, 0, 2, mustUserData(t, withTLS))

	if err := newMotoProvisioner(t, as, ec, "tls-on", nil).CheckTLS(ctx); err != nil {
		t.Errorf("group with TLS user data: %v", err)
	}
	p := newMotoProvisioner(t, as, ec, "tls-plain", nil)
	err := p.CheckTLS(ctx)
	if !errors.Is(err, ErrNoTLS) || !strings.Contains(err.Error(), "tls-plain-tide") {
		t.Errorf("group without TLS: %v, want ErrNoTLS naming its launch template", err)
	}
	plain.TLS = testTLS(t)
	ensureMotoGroup(t, as, ec, "tls-plain", 0, 0, 2, mustUserData(t, plain)) // a new version
	if err := p.CheckTLS(ctx); err != nil {
		t.Errorf("group whose latest launch template version has TLS: %v", err)
	}
}
