package redisshim_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"tide/antipode"
	"tide/antipode/internal/shimtest"
	"tide/antipode/redisshim"
	"tide/antipode/regions"
)

func TestBarrierRedisReplica(t *testing.T) {
	const lag = time.Second // large against queueing on a loaded machine (300ms was not, once)
	r, err := regions.StartRedis(context.Background(), t.TempDir(), lag)
	if errors.Is(err, regions.ErrNotInstalled) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	primary, replica := r.Client(r.Primary), r.Client(r.Replica)
	defer primary.Close()
	defer replica.Close()
	w := &redisshim.Writer{Client: primary, Store: "posts"}
	shimtest.Run(t, shimtest.Store{
		Name: "posts",
		Write: func(ctx context.Context, key string) (antipode.WriteID, error) {
			return w.Set(ctx, key, []byte("body of "+key), 0)
		},
		Read: func(ctx context.Context, key string) (bool, error) {
			n, err := replica.Exists(ctx, key).Result()
			return n == 1, err
		},
		Replica: redisshim.NewWaiter(replica, antipode.Backoff{}),
		Lag:     lag,
	}, 40)

	// The primary is a valid local replica too (a reader in region A).
	ctx := context.Background()
	id, err := w.Set(ctx, "local", []byte("x"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := redisshim.NewWaiter(primary, antipode.Backoff{}).Wait(ctx, id); err != nil {
		t.Fatal(err)
	}
}

func TestBarrierRedisUnreachable(t *testing.T) {
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: filepath.Join(t.TempDir(), "nothing.sock"), MaxRetries: -1, DialerRetries: 1})
	defer c.Close()
	shimtest.Unreachable(t, "posts", redisshim.NewWaiter(c, antipode.Backoff{}))
}

func TestParseInfo(t *testing.T) {
	m := redisshim.ParseInfo("# Replication\r\nrole:slave\r\nslave_repl_offset:12345\r\nbad\r\n")
	if v, err := redisshim.InfoUint(m, "slave_repl_offset"); err != nil || v != 12345 || m["role"] != "slave" {
		t.Fatalf("parsed %v: %d %v", m, v, err)
	}
	if _, err := redisshim.InfoUint(m, "master_repl_offset"); err == nil {
		t.Fatal("missing field read without error")
	}
}

func TestRoleOffset(t *testing.T) {
	for _, c := range []struct {
		v    any
		want uint64
	}{
		{[]any{"master", int64(3129659), []any{}}, 3129659},
		{[]any{"slave", "127.0.0.1", int64(6380), "connected", int64(42)}, 42},
		{[]any{"slave", "127.0.0.1", int64(6380), "connect", int64(-1)}, 0},
	} {
		if got, err := redisshim.RoleOffset(c.v); err != nil || got != c.want {
			t.Errorf("RoleOffset(%v) = %d, %v; want %d", c.v, got, err, c.want)
		}
	}
	for _, bad := range []any{nil, "master", []any{}, []any{"sentinel", []any{}}, []any{"master"}, []any{"master", "12"}, []any{"slave", "h", int64(1), "connected"}} {
		if _, err := redisshim.RoleOffset(bad); err == nil {
			t.Errorf("RoleOffset(%v) accepted", bad)
		}
	}
}
