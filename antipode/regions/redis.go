package regions

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"tide/antipode/redisshim"
	"tide/netdelay"
)

// Redis is a primary (region A) and a replica (region B) that replicates
// from it through a netdelay proxy: every byte of the replication stream
// arrives Lag late. Both servers listen on Unix sockets only, so no TCP
// port is chosen before it is bound; the proxy binds 127.0.0.1:0.
type Redis struct {
	Primary string // the primary's Unix socket
	Replica string // the replica's Unix socket
	Link    string // the proxy's address, which the replica replicates from
	Lag     time.Duration

	proxy          *netdelay.Proxy
	primary, repli *proc
}

// StartRedis starts the pair under dir and waits until the replica's link
// to the primary is up.
func StartRedis(ctx context.Context, dir string, lag time.Duration) (*Redis, error) {
	bin, err := lookBinary("redis-server")
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r := &Redis{Primary: filepath.Join(dir, "primary.sock"), Replica: filepath.Join(dir, "replica.sock"), Lag: lag}
	common := []string{"--port", "0", "--save", "", "--appendonly", "no", "--dir", dir, "--unixsocketperm", "700"}
	r.primary, err = start("redis primary", filepath.Join(dir, "primary.log"), nil, syscall.SIGTERM, bin,
		append([]string{"--unixsocket", r.Primary, "--dbfilename", "primary.rdb"}, common...)...)
	if err != nil {
		return nil, err
	}
	if err := waitFor(r.primary, 30*time.Second, "answering", func() error { return ping(ctx, r.Primary) }); err != nil {
		r.Close()
		return nil, err
	}
	// Replication bytes (primary to replica) carry the lag; the replica's
	// acknowledgements go back at once, so the handshake costs one lag per
	// round trip rather than two.
	r.proxy = &netdelay.Proxy{Target: "unix:" + r.Primary, Delay: lag}
	addr, err := r.proxy.Listen("127.0.0.1:0")
	if err != nil {
		r.Close()
		return nil, err
	}
	r.Link = addr.String()
	host, port, _ := strings.Cut(r.Link, ":")
	r.repli, err = start("redis replica", filepath.Join(dir, "replica.log"), nil, syscall.SIGTERM, bin,
		append([]string{"--unixsocket", r.Replica, "--dbfilename", "replica.rdb", "--replicaof", host, port}, common...)...)
	if err != nil {
		r.Close()
		return nil, err
	}
	err = waitFor(r.repli, 60*time.Second+20*lag, "replicating", func() error {
		info, err := redisInfo(ctx, r.Replica)
		if err != nil {
			return err
		}
		if info["master_link_status"] != "up" {
			return fmt.Errorf("master_link_status %q", info["master_link_status"])
		}
		return nil
	})
	if err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Close stops both servers and the proxy.
func (r *Redis) Close() {
	r.repli.stop()
	if r.proxy != nil {
		r.proxy.Close()
	}
	r.primary.stop()
}

// Client returns a client of the Unix socket sock.
func (r *Redis) Client(sock string) *redis.Client {
	return redis.NewClient(&redis.Options{Network: "unix", Addr: sock, PoolSize: 64})
}

func ping(ctx context.Context, sock string) error {
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: sock, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}

func redisInfo(ctx context.Context, sock string) (map[string]string, error) {
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: sock, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	s, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return nil, err
	}
	return redisshim.ParseInfo(s), nil
}
