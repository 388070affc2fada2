package postnotify

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"tide/antipode"
	"tide/antipode/logshim"
	"tide/antipode/natsshim"
	"tide/antipode/pgshim"
	"tide/antipode/redisshim"
	"tide/antipode/regions"
	"tide/antipode/tideshim"
	"tide/paxos/node"
)

// PostStore is where the writer (region A) stores posts and the reader
// (region B) reads them.
type PostStore interface {
	// Write stores a post on the primary and, with lineage, returns the
	// write's id. Without lineage it is the store's plain write, as an
	// application that does not use antipode makes it: what a shim adds
	// to learn the id (Redis's INFO, PostgreSQL's pg_current_wal_lsn())
	// counts as antipode's cost.
	Write(ctx context.Context, key string, body []byte, lineage bool) (antipode.WriteID, error)
	// Read looks the post up in region B's replica.
	Read(ctx context.Context, key string) (bool, error)
	// Waiter is the shim's waiter on region B's replica.
	Waiter() antipode.Waiter
	Close()
}

// Settler is a PostStore that can tell when its replicas hold
// everything written so far. A run waits for it before it reads the CPU
// time spent, so that each run's figures count the replication of its
// own writes, and none of the run before (a run without antipode ends
// as soon as its reads miss, long before its writes reach region B).
type Settler interface {
	Settle(ctx context.Context) error
}

// Channel carries notifications from the writer to the reader.
type Channel interface {
	// Publish sends data with ctx's lineage and returns the bytes the
	// message takes on the channel (data, attributes, framing of its own)
	// and those of the lineage's encoding in it.
	Publish(ctx context.Context, data []byte) (size, lineage int, err error)
	// Subscribe calls handle for each notification, with a context carrying
	// its lineage, until ctx ends. It closes ready once every notification
	// published from then on will reach handle.
	Subscribe(ctx context.Context, ready chan<- struct{}, handle func(ctx context.Context, data []byte, err error)) error
	Close()
}

// PostStores and Channels name what --post-store and --notify accept.
var (
	PostStores = []string{"redis", "postgres", "tide"}
	Channels   = []string{"nats", "tide-log"}
)

// Connect maps what --connect names to addresses: redis-primary and
// redis-replica (host:port or unix:/path), pg-primary and pg-standby
// (connection strings), tide-a and tide-b (the HTTP address of a tide
// store node in region A, and of one in region B), nats (a URL),
// tide-log (a deployment file).
type Connect map[string]string

func (c Connect) need(keys ...string) error {
	var missing []string
	for _, k := range keys {
		if c[k] == "" {
			missing = append(missing, k)
		}
	}
	if missing != nil {
		return fmt.Errorf("--connect needs %s=...", strings.Join(missing, "=..., "))
	}
	return nil
}

// Env is a post store and a channel, started or connected to.
type Env struct {
	Post    PostStore
	Channel Channel
	// Lag is the injected replication lag (0 when connected: unknown).
	Lag     time.Duration
	closers []func()
}

// Close stops what Setup started.
func (e *Env) Close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
}

// SetupConfig says which stores to start or connect to.
type SetupConfig struct {
	PostStore, Notify string
	Lag               time.Duration
	// Dir holds the servers' data and logs.
	Dir string
	// Connect, if not nil, names running stores instead of starting any.
	Connect Connect
	// TideBinary runs the tide log's roles as child processes; "" runs
	// them in this process.
	TideBinary string
	// Prefix tells this run's keys and topics from others'.
	Prefix string
}

func init() {
	// go-redis logs dial failures to stderr on its own; the benchmark
	// reports errors itself.
	redis.SetLogger(quietLogger{})
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// Setup starts (or connects to) the post store and channel.
func Setup(ctx context.Context, cfg SetupConfig) (*Env, error) {
	e := &Env{Lag: cfg.Lag}
	if cfg.Connect != nil {
		e.Lag = 0
	}
	ok := false
	defer func() {
		if !ok {
			e.Close()
		}
	}()
	var err error
	switch cfg.PostStore {
	case "redis":
		e.Post, err = setupRedis(ctx, e, cfg)
	case "postgres":
		e.Post, err = setupPostgres(ctx, e, cfg)
	case "tide":
		e.Post, err = setupTide(ctx, e, cfg)
	default:
		return nil, fmt.Errorf("--post-store %q: want one of %s", cfg.PostStore, strings.Join(PostStores, ", "))
	}
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, e.Post.Close)
	switch cfg.Notify {
	case "nats":
		e.Channel, err = setupNATS(ctx, e, cfg)
	case "tide-log":
		e.Channel, err = setupLog(ctx, e, cfg)
	default:
		return nil, fmt.Errorf("--notify %q: want one of %s", cfg.Notify, strings.Join(Channels, ", "))
	}
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, e.Channel.Close)
	ok = true
	return e, nil
}

// --- Redis ---

type redisPosts struct {
	w       *redisshim.Writer
	replica *redis.Client
	waiter  *redisshim.Waiter
	clients []*redis.Client
}

func redisClient(addr string) *redis.Client {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return redis.NewClient(&redis.Options{Network: "unix", Addr: p, PoolSize: 64})
	}
	return redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
}

func setupRedis(ctx context.Context, e *Env, cfg SetupConfig) (PostStore, error) {
	primary, replica := cfg.Connect["redis-primary"], cfg.Connect["redis-replica"]
	if cfg.Connect != nil {
		if err := cfg.Connect.need("redis-primary", "redis-replica"); err != nil {
			return nil, err
		}
	} else {
		r, err := regions.StartRedis(ctx, filepath.Join(cfg.Dir, "redis"), cfg.Lag)
		if err != nil {
			return nil, err
		}
		e.closers = append(e.closers, r.Close)
		primary, replica = "unix:"+r.Primary, "unix:"+r.Replica
	}
	p := &redisPosts{}
	pc, rc := redisClient(primary), redisClient(replica)
	p.clients = []*redis.Client{pc, rc}
	p.w = &redisshim.Writer{Client: pc, Store: "posts"}
	p.replica = rc
	p.waiter = redisshim.NewWaiter(rc, antipode.Backoff{})
	for _, c := range p.clients {
		if err := c.Ping(ctx).Err(); err != nil {
			p.Close()
			return nil, fmt.Errorf("redis %s: %w", c.Options().Addr, err)
		}
	}
	return p, nil
}

func (p *redisPosts) Write(ctx context.Context, key string, body []byte, lineage bool) (antipode.WriteID, error) {
	if !lineage {
		return antipode.WriteID{}, p.w.Client.Set(ctx, key, body, time.Hour).Err()
	}
	return p.w.Set(ctx, key, body, time.Hour)
}

func (p *redisPosts) Read(ctx context.Context, key string) (bool, error) {
	n, err := p.replica.Exists(ctx, key).Result()
	return n == 1, err
}

func (p *redisPosts) Waiter() antipode.Waiter { return p.waiter }

func (p *redisPosts) Close() {
	for _, c := range p.clients {
		c.Close()
	}
}

// --- PostgreSQL ---

type pgPosts struct {
	primary, standby *pgxpool.Pool
	w                *pgshim.Writer
	waiter           *pgshim.Waiter
}

func setupPostgres(ctx context.Context, e *Env, cfg SetupConfig) (PostStore, error) {
	primaryDSN, standbyDSN := cfg.Connect["pg-primary"], cfg.Connect["pg-standby"]
	if cfg.Connect != nil {
		if err := cfg.Connect.need("pg-primary", "pg-standby"); err != nil {
			return nil, err
		}
	} else {
		pg, err := regions.StartPostgres(ctx, filepath.Join(cfg.Dir, "postgres"), cfg.Lag)
		if err != nil {
			return nil, err
		}
		e.closers = append(e.closers, pg.Close)
		primaryDSN, standbyDSN = pg.PrimaryDSN, pg.StandbyDSN
	}
	p := &pgPosts{}
	pool := func(dsn string) (*pgxpool.Pool, error) {
		c, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			return nil, fmt.Errorf("postgres %q: %w", dsn, err)
		}
		c.MaxConns = 40
		return pgxpool.NewWithConfig(ctx, c)
	}
	var err error
	if p.primary, err = pool(primaryDSN); err != nil {
		return nil, err
	}
	if p.standby, err = pool(standbyDSN); err != nil {
		p.primary.Close()
		return nil, err
	}
	p.w = &pgshim.Writer{DB: p.primary, Store: "posts"}
	p.waiter = pgshim.NewWaiter(p.standby, antipode.Backoff{})
	// The table must reach the standby before any read: the barrier says
	// when.
	if _, err := p.primary.Exec(ctx, "CREATE TABLE IF NOT EXISTS posts (id text PRIMARY KEY, body bytea NOT NULL)"); err != nil {
		p.Close()
		return nil, fmt.Errorf("postgres create table: %w", err)
	}
	id, err := p.w.Committed(ctx, "posts table")
	if err == nil {
		wctx, cancel := context.WithTimeout(ctx, time.Minute+2*cfg.Lag)
		err = p.waiter.Wait(wctx, id)
		cancel()
	}
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("postgres: the posts table did not reach the standby: %w", err)
	}
	return p, nil
}

const insertPost = "INSERT INTO posts (id, body) VALUES ($1, $2)"

func (p *pgPosts) Write(ctx context.Context, key string, body []byte, lineage bool) (antipode.WriteID, error) {
	if !lineage {
		_, err := p.primary.Exec(ctx, insertPost, key, body)
		return antipode.WriteID{}, err
	}
	return p.w.Exec(ctx, key, insertPost, key, body)
}

func (p *pgPosts) Read(ctx context.Context, key string) (bool, error) {
	var n int
	err := p.standby.QueryRow(ctx, "SELECT count(*) FROM posts WHERE id = $1", key).Scan(&n)
	return n == 1, err
}

func (p *pgPosts) Waiter() antipode.Waiter { return p.waiter }

func (p *pgPosts) Close() {
	p.primary.Close()
	p.standby.Close()
}

// --- tide store ---

// tidePosts is the tide store as two regions: the writer writes through
// a node of A, the reader reads (at B's quorum) through a node of B.
type tidePosts struct {
	a      string // the node of region A writes go to
	w      *tideshim.Writer
	b      string
	waiter *tideshim.Waiter
}

// TideNodes is how many nodes each tide region runs (N of each).
const TideNodes = 2

func setupTide(ctx context.Context, e *Env, cfg SetupConfig) (PostStore, error) {
	a, b := cfg.Connect["tide-a"], cfg.Connect["tide-b"]
	if cfg.Connect != nil {
		if err := cfg.Connect.need("tide-a", "tide-b"); err != nil {
			return nil, err
		}
	} else {
		t, err := regions.StartTide(ctx, filepath.Join(cfg.Dir, "tide"), cfg.TideBinary, TideNodes, cfg.Lag)
		if err != nil {
			return nil, err
		}
		e.closers = append(e.closers, t.Close)
		a, b = t.A[0], t.B[0]
	}
	p := &tidePosts{a: a, w: &tideshim.Writer{Addr: a, Store: "posts"}, b: b, waiter: tideshim.NewWaiter(b, antipode.Backoff{})}
	for _, addr := range []string{a, b} {
		if _, _, _, err := tideshim.Get(ctx, nil, addr, "postnotify/probe"); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Write is the same PUT with or without lineage: the store answers every
// write with its version.
func (p *tidePosts) Write(ctx context.Context, key string, body []byte, _ bool) (antipode.WriteID, error) {
	return p.w.Put(ctx, key, body)
}

func (p *tidePosts) Read(ctx context.Context, key string) (bool, error) {
	_, found, _, err := tideshim.Get(ctx, nil, p.b, key)
	return found, err
}

func (p *tidePosts) Waiter() antipode.Waiter { return p.waiter }

// Settle waits until region A's node has nothing left in its outbox for
// region B (tide_kv_region_pending is 0), polling its metrics every
// 100 ms.
func (p *tidePosts) Settle(ctx context.Context) error {
	for {
		n, err := tidePending(ctx, p.a)
		if err != nil || n == 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tidePending sums tide_kv_region_pending over the regions of the node
// at addr.
func tidePending(ctx context.Context, addr string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := tideshim.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "tide_kv_region_pending{")
		if !ok {
			continue
		}
		_, v, _ := strings.Cut(line, "} ")
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, fmt.Errorf("tide metrics: %q: %w", sc.Text(), err)
		}
		sum += f
	}
	return sum, sc.Err()
}

func (p *tidePosts) Close() {}

// --- NATS ---

type natsChannel struct {
	pub, sub *nats.Conn
	subject  string
}

func setupNATS(ctx context.Context, e *Env, cfg SetupConfig) (Channel, error) {
	url := cfg.Connect["nats"]
	if cfg.Connect != nil {
		if err := cfg.Connect.need("nats"); err != nil {
			return nil, err
		}
	} else {
		n, err := regions.StartNATS(ctx, filepath.Join(cfg.Dir, "nats"))
		if err != nil {
			return nil, err
		}
		e.closers = append(e.closers, n.Close)
		url = n.URL
	}
	// Region A publishes on one connection, region B subscribes on another.
	c := &natsChannel{subject: "antipode.notifications." + cfg.Prefix}
	var err error
	if c.pub, err = nats.Connect(url); err != nil {
		return nil, fmt.Errorf("nats %s: %w", url, err)
	}
	if c.sub, err = nats.Connect(url); err != nil {
		c.pub.Close()
		return nil, fmt.Errorf("nats %s: %w", url, err)
	}
	return c, nil
}

func (c *natsChannel) Publish(ctx context.Context, data []byte) (int, int, error) {
	m, err := natsshim.Msg(ctx, c.subject, data)
	if err != nil {
		return 0, 0, err
	}
	if err := c.pub.PublishMsg(m); err != nil {
		return 0, 0, err
	}
	return len(data) + headerBytes(m.Header), len(m.Header.Get(antipode.Header)), nil
}

// headerBytes is the size of a NATS header block: "NATS/1.0\r\n", a
// "Key: value\r\n" line per value, and the closing "\r\n".
func headerBytes(h nats.Header) int {
	if len(h) == 0 {
		return 0
	}
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v)
		}
	}
	return n
}

func (c *natsChannel) Subscribe(ctx context.Context, ready chan<- struct{}, handle func(context.Context, []byte, error)) error {
	sub, err := c.sub.Subscribe(c.subject, func(m *nats.Msg) {
		mctx, err := natsshim.Context(ctx, m)
		handle(mctx, m.Data, err)
	})
	if err != nil {
		return err
	}
	sub.SetPendingLimits(-1, -1)
	// Once the server has answered the flush's PING it has the
	// subscription: what is published after that reaches it.
	if err := c.sub.Flush(); err != nil {
		return err
	}
	close(ready)
	<-ctx.Done()
	return sub.Unsubscribe()
}

func (c *natsChannel) Close() {
	c.pub.Close()
	c.sub.Close()
}

// --- tide log ---

type logChannel struct {
	pub, sub *logshim.Topic
	clients  []*node.Client
	last     atomic.Uint64 // the last slot published
}

func setupLog(ctx context.Context, e *Env, cfg SetupConfig) (Channel, error) {
	var d node.Deployment
	if cfg.Connect != nil {
		if err := cfg.Connect.need("tide-log"); err != nil {
			return nil, err
		}
		var err error
		if d, err = node.LoadDeployment(cfg.Connect["tide-log"]); err != nil {
			return nil, fmt.Errorf("--connect tide-log: %w", err)
		}
	} else {
		l, err := regions.StartLog(ctx, filepath.Join(cfg.Dir, "tide-log"), cfg.TideBinary)
		if err != nil {
			return nil, err
		}
		e.closers = append(e.closers, l.Close)
		d = l.Deployment
	}
	c := &logChannel{}
	for range 2 {
		cl, err := node.NewClient(d, node.HostOf(d.Log.Leaders[0]), 64)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.clients = append(c.clients, cl)
	}
	topic := "antipode/" + cfg.Prefix
	c.pub = &logshim.Topic{Client: c.clients[0], Name: topic, Store: "notifications"}
	c.sub = &logshim.Topic{Client: c.clients[1], Name: topic, Store: "notifications"}
	return c, nil
}

func (c *logChannel) Publish(ctx context.Context, data []byte) (int, int, error) {
	lin, err := antipode.Encode(ctx)
	if err != nil {
		return 0, 0, err
	}
	id, err := c.pub.Publish(ctx, data)
	if err != nil {
		return 0, 0, err
	}
	for {
		last := c.last.Load()
		if id.Version <= last || c.last.CompareAndSwap(last, id.Version) {
			break
		}
	}
	return logshim.MessageSize(len(lin), len(data)), len(lin), nil
}

func (c *logChannel) Subscribe(ctx context.Context, ready chan<- struct{}, handle func(context.Context, []byte, error)) error {
	// Runs are one after another: a new subscription starts after the
	// last notification of the runs before, and reads every slot from
	// there, published before it started or after.
	s := c.sub.Subscribe(c.last.Load()+1, antipode.Backoff{})
	close(ready)
	for {
		mctx, _, data, err := s.Next(ctx)
		if ctx.Err() != nil {
			return nil
		}
		handle(mctx, data, err)
	}
}

func (c *logChannel) Close() {
	for _, cl := range c.clients {
		cl.Close()
	}
}

// ParseConnect parses --connect name=address values.
func ParseConnect(vals []string) (Connect, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	c := Connect{}
	known := []string{"redis-primary", "redis-replica", "pg-primary", "pg-standby", "tide-a", "tide-b", "nats", "tide-log"}
	sort.Strings(known)
	for _, v := range vals {
		k, a, ok := strings.Cut(v, "=")
		if !ok || a == "" || sort.SearchStrings(known, k) == len(known) || known[sort.SearchStrings(known, k)] != k {
			return nil, fmt.Errorf("--connect %q: want NAME=ADDRESS with NAME one of %s", v, strings.Join(known, ", "))
		}
		c[k] = a
	}
	return c, nil
}
