package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// testDeployment lays out the default shape on made-up addresses: nothing
// listens there.
func testDeployment(t testing.TB) Deployment {
	n := DefaultShape.Count()
	roles, https := make([]string, n), make([]string, n)
	for i := range n {
		roles[i], https[i] = fmt.Sprintf("127.0.0.1:%d", 7000+i), fmt.Sprintf("127.0.0.1:%d", 8000+i)
	}
	d, err := LayoutDeployment(DefaultShape, roles, https)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestReadDeployment: a saved deployment reads back whole; empty, cut and
// invalid input is refused with an error that says so.
func TestReadDeployment(t *testing.T) {
	d := testDeployment(t)
	d.Control = "127.0.0.1:9000"
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadDeployment(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got.Control != d.Control || len(got.Roles()) != len(d.Roles()) || got.HTTP[d.Log.Leaders[0]] != d.HTTP[d.Log.Leaders[0]] {
		t.Fatalf("read back %+v, want %+v", got, d)
	}
	for _, c := range []struct{ in, want string }{
		{"", "the input is empty"},
		{string(b[:len(b)/2]), "unexpected EOF"},
		{`{"log": {"leaders": []}}`, "leader"},
		{`[1, 2]`, "cannot unmarshal"},
	} {
		if _, err := ReadDeployment(strings.NewReader(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ReadDeployment(%.40q) = %v, want an error with %q", c.in, err, c.want)
		}
	}
}

// FuzzReadDeployment: any input is read or refused, never a panic, and a
// deployment read is valid and reads back the same after a round trip.
func FuzzReadDeployment(f *testing.F) {
	b, _ := json.Marshal(testDeployment(f))
	f.Add(b)
	f.Add([]byte(`{"unreplicated": "127.0.0.1:1", "http": {"127.0.0.1:1": "127.0.0.1:2"}}`))
	f.Add([]byte(`{"log": {"leaders": ["a"]}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		d, err := ReadDeployment(bytes.NewReader(in))
		if err != nil {
			return
		}
		if err := d.Validate(); err != nil {
			t.Fatalf("read an invalid deployment: %v", err)
		}
		out, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ReadDeployment(bytes.NewReader(out)); err != nil {
			t.Fatalf("a deployment read does not read back: %v\n%s", err, out)
		}
	})
}
