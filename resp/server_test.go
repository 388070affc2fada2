package resp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"tide/kv"
)

// memBackend is an in-memory Backend: a map, with batches applied in order.
type memBackend struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (b *memBackend) Get(_ context.Context, key []byte) (kv.Record, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.m[string(key)]
	return kv.Record{Key: key, Value: v}, ok, nil
}

func (b *memBackend) Put(_ context.Context, key, value []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.m[string(key)] = append([]byte(nil), value...)
	return nil
}

func (b *memBackend) Delete(_ context.Context, key []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, string(key))
	return nil
}

func (b *memBackend) Write(ctx context.Context, rec kv.Record) error {
	return b.Put(ctx, rec.Key, rec.Value)
}

// Cas, IsOpError and Scan: the real ones are tested against a cluster
// (store's TestGoRedis).
func (b *memBackend) Cas(context.Context, []byte, kv.Op) (kv.Message, error) {
	return kv.Message{}, errors.New("not in the in-memory backend")
}
func (b *memBackend) IsOpError(error) bool { return false }
func (b *memBackend) Scan(context.Context, uint64, int) ([]kv.Record, uint64, error) {
	return nil, 0, errors.New("not in the in-memory backend")
}

func (b *memBackend) NewBatcher() Batcher { return memBatcher{b} }
func (b *memBackend) Status() Status      { return Status{Members: 1} }
func (b *memBackend) Members() []Member {
	return []Member{{PeerAddr: "127.0.0.1:7000", RESPAddr: "127.0.0.1:6379", Self: true}}
}

type memBatcher struct{ b *memBackend }

func (mb memBatcher) Do(ctx context.Context, ms []kv.Message) ([]kv.Message, []error) {
	out := make([]kv.Message, len(ms))
	for i, m := range ms {
		if m.Kind == kv.KindClientPut {
			mb.b.Put(ctx, m.Rec.Key, m.Rec.Value)
			continue
		}
		r, found, _ := mb.b.Get(ctx, m.Rec.Key)
		out[i] = kv.Message{Rec: r, Found: found}
	}
	return out, make([]error, len(ms))
}

func (memBatcher) Abandoned() bool { return false }

// TestServerPipeline sends one pipeline that mixes batched GETs and SETs
// with other commands on the same keys, and checks every reply, in order.
func TestServerPipeline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		NewServer(Config{MaxValue: 1 << 10, Sync: "periodic", PeerAddr: "127.0.0.1:7000"}, &memBackend{m: map[string][]byte{}}).Serve(ctx, ln)
		close(done)
	}()
	defer func() { cancel(); <-done }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cmds := []string{
		"SET a 1", "GET a", "DEL a", "GET a", "SET a 2", "GET a",
		"MSET b 2 c 3", "MGET b c x", "EXISTS b x", "SET c 4", "GET c",
		"CLUSTER KEYSLOT foo", "CONFIG GET appendfsync", "NOSUCH x", "QUIT",
	}
	if _, err := io.WriteString(c, strings.Join(cmds, "\r\n")+"\r\n"); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(bufio.NewReader(c))
	if err != nil {
		t.Fatal(err)
	}
	want := "+OK\r\n$1\r\n1\r\n:1\r\n$-1\r\n+OK\r\n$1\r\n2\r\n" +
		"+OK\r\n*3\r\n$1\r\n2\r\n$1\r\n3\r\n$-1\r\n:1\r\n+OK\r\n$1\r\n4\r\n" +
		":12182\r\n*2\r\n$11\r\nappendfsync\r\n$8\r\neverysec\r\n" +
		"-ERR unknown command 'NOSUCH', with args beginning with: 'x'\r\n+OK\r\n"
	if string(got) != want {
		t.Errorf("replies:\n%q\nwant\n%q", got, want)
	}
}

// TestServerTooLarge pipelines commands with arguments over the limit
// among others on the same key: each is answered with the error in its
// place, the rest run, and the connection serves on until QUIT.
func TestServerTooLarge(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	const limit = 1 << 10
	go func() {
		NewServer(Config{MaxValue: limit, PeerAddr: "127.0.0.1:7000"}, &memBackend{m: map[string][]byte{}}).Serve(ctx, ln)
		close(done)
	}()
	defer func() { cancel(); <-done }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := strings.Repeat("x", 100*limit)
	pipeline := bulks("SET", "a", "1") + bulks("SET", "a", big) + bulks("GET", "a") +
		bulks("ECHO", big) + bulks("SET", "a", big[:limit]) + bulks("GET", "a") + bulks("QUIT")
	go io.WriteString(c, pipeline)
	got, err := io.ReadAll(bufio.NewReader(c))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("+OK\r\n-ERR value of %d bytes is larger than the limit of %d\r\n$1\r\n1\r\n"+
		"-ERR argument of %d bytes is larger than the limit of %d\r\n+OK\r\n$%d\r\n%s\r\n+OK\r\n",
		len(big), limit, len(big), limit, limit, big[:limit])
	if string(got) != want {
		t.Errorf("replies:\n%.300q\nwant\n%.300q", got, want)
	}
}
