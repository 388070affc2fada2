package regions

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a primary (region A) and a streaming standby (region B)
// that applies each commit Lag after the primary made it
// (recovery_min_apply_delay). Both listen on Unix sockets only.
type Postgres struct {
	PrimaryDSN, StandbyDSN string
	Lag                    time.Duration

	dir              string
	removeDir        bool
	primary, standby *proc
}

var pgDirs = []string{"/usr/lib/postgresql/*/bin"}

// StartPostgres initializes and starts the pair under dir. As root, the
// servers run as the "postgres" user (PostgreSQL refuses root), in a
// directory of their own under the system's temporary directory that
// Close removes.
func StartPostgres(ctx context.Context, dir string, lag time.Duration) (*Postgres, error) {
	var bins [3]string
	for i, name := range []string{"initdb", "postgres", "pg_basebackup"} {
		b, err := lookBinary(name, pgDirs...)
		if err != nil {
			return nil, err
		}
		bins[i] = b
	}
	initdb, server, basebackup := bins[0], bins[1], bins[2]
	var cred *syscall.Credential
	p := &Postgres{Lag: lag}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("postgres as root needs a 'postgres' user (the postgresql package creates it): %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if dir, err = os.MkdirTemp("", "tide-pg-"); err != nil {
			return nil, err
		}
		p.removeDir = true
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			return nil, err
		}
	} else {
		var err error
		if dir, err = filepath.Abs(dir); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
	p.dir = dir
	run := func(bin string, args ...string) error {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w\n%s", filepath.Base(bin), err, out)
		}
		return nil
	}
	pdata, sdata := filepath.Join(dir, "primary"), filepath.Join(dir, "standby")
	// Sockets live outside the data directories: pg_basebackup would copy a
	// socket's lock file to the standby.
	psock, ssock := filepath.Join(dir, "primary-sock"), filepath.Join(dir, "standby-sock")
	for _, d := range []string{psock, ssock} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, err
		}
		if cred != nil {
			if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, err
			}
		}
	}
	if err := run(initdb, "-D", pdata, "-A", "trust", "-U", "postgres", "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C"); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`
listen_addresses = ''
unix_socket_directories = '%s'
wal_level = replica
max_wal_senders = 4
fsync = off
shared_buffers = 32MB
max_connections = 60
`, psock)
	if err := appendFile(filepath.Join(pdata, "postgresql.conf"), conf); err != nil {
		return nil, err
	}
	var err error
	p.primary, err = start("postgres primary", filepath.Join(dir, "primary.log"), cred, syscall.SIGINT, server, "-D", pdata)
	if err != nil {
		return nil, err
	}
	p.PrimaryDSN = fmt.Sprintf("host=%s user=postgres dbname=postgres", psock)
	if err := waitFor(p.primary, 60*time.Second, "accepting connections", func() error { return pgPing(ctx, p.PrimaryDSN, false) }); err != nil {
		p.Close()
		return nil, err
	}
	if err := run(basebackup, "-h", psock, "-U", "postgres", "-D", sdata, "-R", "-X", "stream", "-c", "fast", "--no-sync"); err != nil {
		p.Close()
		return nil, err
	}
	conf = fmt.Sprintf(`
unix_socket_directories = '%s'
recovery_min_apply_delay = '%dms'
hot_standby = on
`, ssock, lag.Milliseconds())
	if err := appendFile(filepath.Join(sdata, "postgresql.conf"), conf); err != nil {
		p.Close()
		return nil, err
	}
	p.standby, err = start("postgres standby", filepath.Join(dir, "standby.log"), cred, syscall.SIGINT, server, "-D", sdata)
	if err != nil {
		p.Close()
		return nil, err
	}
	p.StandbyDSN = fmt.Sprintf("host=%s user=postgres dbname=postgres", ssock)
	if err := waitFor(p.standby, 60*time.Second+10*lag, "accepting connections in recovery", func() error { return pgPing(ctx, p.StandbyDSN, true) }); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Close stops both servers (fast shutdown) and removes a directory of
// their own.
func (p *Postgres) Close() {
	p.standby.stop()
	p.primary.stop()
	if p.removeDir {
		os.RemoveAll(p.dir)
	}
}

func appendFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func pgPing(ctx context.Context, dsn string, standby bool) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	var rec bool
	if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
		return err
	}
	if rec != standby {
		return errors.New("pg_is_in_recovery() = " + strconv.FormatBool(rec))
	}
	return nil
}
