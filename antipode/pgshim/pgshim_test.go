package pgshim_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"tide/antipode"
	"tide/antipode/internal/shimtest"
	"tide/antipode/pgshim"
	"tide/antipode/regions"
)

func TestBarrierPostgresStandby(t *testing.T) {
	const lag = time.Second // large against queueing on a loaded machine (300ms was not, once)
	ctx := context.Background()
	pg, err := regions.StartPostgres(ctx, t.TempDir(), lag)
	if errors.Is(err, regions.ErrNotInstalled) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	primary, err := pgxpool.New(ctx, pg.PrimaryDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer primary.Close()
	standby, err := pgxpool.New(ctx, pg.StandbyDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer standby.Close()
	if _, err := primary.Exec(ctx, "CREATE TABLE posts (id text PRIMARY KEY, body text)"); err != nil {
		t.Fatal(err)
	}
	// The standby has the table once the barrier says so.
	w := &pgshim.Writer{DB: primary, Store: "posts"}
	ddl, err := w.Committed(ctx, "ddl")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := pgshim.NewWaiter(standby, antipode.Backoff{}).Wait(wctx, ddl); err != nil {
		t.Fatal(err)
	}
	shimtest.Run(t, shimtest.Store{
		Name: "posts",
		Write: func(ctx context.Context, key string) (antipode.WriteID, error) {
			return w.Exec(ctx, key, "INSERT INTO posts (id, body) VALUES ($1, $2)", key, "body of "+key)
		},
		Read: func(ctx context.Context, key string) (bool, error) {
			var n int
			err := standby.QueryRow(ctx, "SELECT count(*) FROM posts WHERE id = $1", key).Scan(&n)
			return n == 1, err
		},
		Replica: pgshim.NewWaiter(standby, antipode.Backoff{}),
		Lag:     lag,
	}, 30)
}

func TestBarrierPostgresUnreachable(t *testing.T) {
	cfg, err := pgxpool.ParseConfig("host=" + filepath.Join(t.TempDir(), "none") + " user=postgres connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	shimtest.Unreachable(t, "posts", pgshim.NewWaiter(pool, antipode.Backoff{}))
}

func TestLSN(t *testing.T) {
	for _, s := range []string{"0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF"} {
		v, err := pgshim.ParseLSN(s)
		if err != nil || pgshim.FormatLSN(v) != s {
			t.Fatalf("%s: %x %v -> %s", s, v, err, pgshim.FormatLSN(v))
		}
	}
	if v, _ := pgshim.ParseLSN("1/0"); v != 1<<32 {
		t.Fatalf("1/0 = %x", v)
	}
	for _, s := range []string{"", "16", "x/1", "1/100000000"} {
		if _, err := pgshim.ParseLSN(s); err == nil {
			t.Fatalf("%q parsed", s)
		}
	}
}

var _ pgshim.Querier = (*pgx.Conn)(nil)
