// A connection: pipelined commands are read together, run in waves, and
// answered in order; the commands themselves (exec).

package resp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"tide/kv"
	"time"
)

// Serve answers the connections ln accepts until ctx is done, then closes
// ln and every connection, and returns once their goroutines have ended.
func (srv *Server) Serve(ctx context.Context, ln net.Listener) {
	var conns sync.WaitGroup
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		if max := srv.cfg.MaxConns; max > 0 && srv.conns.Load() >= int64(max) {
			// Redis's words, so clients report it as they do Redis's.
			c.SetWriteDeadline(time.Now().Add(time.Second))
			c.Write([]byte("-ERR max number of clients reached\r\n"))
			c.Close()
			continue
		}
		srv.conns.Add(1)
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer srv.conns.Add(-1)
			srv.serveConn(ctx, c)
		}()
	}
	conns.Wait()
}

func (srv *Server) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	go func() { <-ctx.Done(); c.Close() }()
	br := bufio.NewReaderSize(c, 64<<10)
	bw := bufio.NewWriterSize(c, 64<<10)
	w := writer{bw}
	// No argument is longer than a value can be: a longer one is read,
	// dropped and answered with an error (TooLargeError).
	maxBulk := srv.cfg.MaxValue
	cs := &connState{batcher: srv.kv.NewBatcher()}
	for {
		if srv.cfg.IdleTimeout > 0 {
			// A client that sends no whole command for this long (idle,
			// or trickling bytes) is let go.
			c.SetReadDeadline(time.Now().Add(srv.cfg.IdleTimeout))
		}
		cmds := cs.cmds[:0]
		refused := cs.refused[:0]
		var perr error
		for len(cmds) < 1024 {
			args, err := cs.arena.readCommand(br, maxBulk)
			if tl := (*TooLargeError)(nil); errors.As(err, &tl) {
				refused = append(refused, refusal{at: len(cmds), msg: "ERR " + tl.Error()})
			} else if err != nil {
				perr = err
				break
			}
			if args != nil {
				cmds = append(cmds, args)
			}
			if br.Buffered() == 0 {
				break
			}
		}
		cs.cmds, cs.refused = cmds, refused
		replies := slices.Grow(cs.replies[:0], len(cmds))[:len(cmds)]
		clear(replies)
		cs.replies = replies
		for _, r := range refused {
			replies[r.at] = func(w writer) { w.err(r.msg) }
		}
		quit := false
		for i, args := range cmds {
			if replies[i] == nil && strings.EqualFold(string(args[0]), "QUIT") {
				replies[i] = func(w writer) { w.simple("OK") }
				quit = true
				cmds = cmds[:i+1]
				replies = replies[:i+1]
				break
			}
			if replies[i] == nil && srv.acl.Load() != nil {
				replies[i] = srv.authorize(cs, args)
			}
		}
		// Commands run concurrently in waves; a command that touches a key
		// an earlier command of the wave touches starts the next wave, so
		// a pipeline takes effect in order. Plain GETs and SETs are the
		// exception among themselves: they reach the coordinator as one
		// ordered batch, which applies them in order (a GET after a SET of
		// its key reads the coordinator's new copy).
		all := !quit
		for i, args := range cmds {
			all = all && replies[i] == nil && srv.batchable(args)
		}
		if all {
			// Only plain GETs and SETs (the common case): one wave, unless
			// a SET follows a GET of its key (see writeAfterRead).
			for start := 0; start < len(cmds); {
				end := start + 1
				read := map[string]bool{}
				for i := start; i < len(cmds); i++ {
					if writeAfterRead(cmds[i], read) && i > start {
						break
					}
					end = i + 1
				}
				srv.execWave(ctx, cmds[start:end], replies[start:end], cs)
				start = end
			}
		}
		for start := 0; start < len(cmds) && !all; {
			touched := map[string]bool{} // key -> touched by a command outside the batch
			read := map[string]bool{}    // keys a batched GET of the wave reads
			end := start
			for end < len(cmds) && replies[end] == nil {
				batched := srv.batchable(cmds[end])
				ks := keysOf(cmds[end])
				clash := batched && writeAfterRead(cmds[end], read)
				for _, k := range ks {
					if other, ok := touched[k]; ok && (other || !batched) {
						clash = true
					}
				}
				if clash && end > start {
					break
				}
				for _, k := range ks {
					touched[k] = touched[k] || !batched
				}
				end++
			}
			srv.execWave(ctx, cmds[start:end], replies[start:end], cs)
			if end == start { // a QUIT, or a command refused as too large
				end++
			}
			start = end
		}
		for i, r := range replies {
			r(w)
			replies[i] = nil
		}
		clear(cmds)
		cs.arena.reset()
		if perr != nil {
			if errors.Is(perr, errProtocol) {
				w.err("ERR " + perr.Error())
			}
			bw.Flush()
			return
		}
		if err := bw.Flush(); err != nil || quit {
			return
		}
	}
}

// execWave runs a wave of commands. Plain GETs and SETs, the bulk of any
// load, go to the coordinator as one batch that it applies in order, so
// they may share keys; the rest, which touch keys nothing else in the
// wave touches, run on goroutines of their own.
func (srv *Server) execWave(ctx context.Context, cmds [][][]byte, replies []reply, cs *connState) {
	batch := cs.batch[:0]
	at := cs.at[:0]
	defer func() {
		if cs.batcher.Abandoned() {
			// The coordinator may still read the requests: leave them
			// to it, and start a new buffer.
			batch = nil
		}
		clear(batch)
		cs.batch, cs.at = batch[:0], at[:0]
	}()
	var wg sync.WaitGroup
	for i, args := range cmds {
		if !srv.batchable(args) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				replies[i] = srv.exec(ctx, args)
			}()
			continue
		}
		if len(args) == 2 {
			batch = append(batch, kv.Message{Kind: kv.KindClientGet, Rec: kv.Record{Key: args[1]}})
		} else {
			batch = append(batch, kv.Message{Kind: kv.KindClientPut, Rec: kv.Record{Key: args[1], Value: args[2]}})
		}
		at = append(at, i)
	}
	if len(batch) > 0 {
		bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, errs := cs.batcher.Do(bctx, batch)
		cancel()
		for j, i := range at {
			r, err := out[j], errs[j]
			switch {
			case err != nil:
				msg := "ERR " + err.Error()
				replies[i] = func(w writer) { w.err(msg) }
			case batch[j].Kind == kv.KindClientPut:
				replies[i] = replyOK
			case !r.Found || r.Rec.Tomb:
				replies[i] = replyNil
			default:
				v := r.Rec.Value
				replies[i] = func(w writer) { w.bulk(v) }
			}
		}
	}
	wg.Wait()
}

// connState is what one RESP connection reuses from one pipeline to the
// next.
type connState struct {
	cmds    [][][]byte
	replies []reply
	batch   []kv.Message
	at      []int
	batcher Batcher
	arena   arena
	refused []refusal
	// user is who logged in (AUTH, HELLO ... AUTH): nil before, on a
	// server with an ACL; acl is the ACL it logged in under.
	user *User
	acl  *ACL
}

// refusal is the answer to a command of a pipeline that is refused
// before it runs.
type refusal struct {
	at  int // the command's index in the pipeline
	msg string
}

var (
	replyOK  reply = func(w writer) { w.simple("OK") }
	replyNil reply = func(w writer) { w.nilBulk() }
)

// writeAfterRead reports whether args, a batchable command, is a SET of a
// key a GET before it in the wave reads, and otherwise notes the key a GET
// reads. Such a SET starts the next wave: the coordinator applies a batch
// in order, but a read that must ask again (a replica that lacks the key,
// a retry) reads what is there by then, which must not be a write the
// client sent after it.
func writeAfterRead(args [][]byte, read map[string]bool) bool {
	k := string(args[1])
	if len(args) == 2 {
		read[k] = true
		return false
	}
	return read[k]
}

// batchable reports whether a command is a plain GET or SET, which
// execWave hands to the coordinator in one batch.
func (srv *Server) batchable(args [][]byte) bool {
	name := args[0]
	if len(name) != 3 {
		return false
	}
	switch {
	case len(args) == 2:
		return strings.EqualFold(string(name), "GET")
	case len(args) == 3:
		return strings.EqualFold(string(name), "SET") && len(args[2]) <= srv.cfg.MaxValue
	}
	return false
}

// exec runs one command.
func (srv *Server) exec(ctx context.Context, args [][]byte) reply {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	name := strings.ToUpper(string(args[0]))
	argc := len(args) - 1
	wrongArgs := func() reply {
		return func(w writer) {
			w.err(fmt.Sprintf("ERR wrong number of arguments for '%s' command", strings.ToLower(name)))
		}
	}
	fail := func(err error) reply {
		return func(w writer) { w.err("ERR " + err.Error()) }
	}
	switch name {
	case "PING":
		switch argc {
		case 0:
			return func(w writer) { w.simple("PONG") }
		case 1:
			return func(w writer) { w.bulk(args[1]) }
		}
		return wrongArgs()
	case "ECHO":
		if argc != 1 {
			return wrongArgs()
		}
		return func(w writer) { w.bulk(args[1]) }
	case "GET":
		if argc != 1 {
			return wrongArgs()
		}
		r, found, err := srv.kv.Get(ctx, args[1])
		if err != nil {
			return fail(err)
		}
		if !found {
			return func(w writer) { w.nilBulk() }
		}
		return func(w writer) { w.bulk(r.Value) }
	case "SET":
		if argc < 2 {
			return wrongArgs()
		}
		if argc > 2 {
			return srv.execSet(ctx, args)
		}
		if err := srv.kv.Put(ctx, args[1], args[2]); err != nil {
			return fail(err)
		}
		return func(w writer) { w.simple("OK") }
	case "MSET":
		if argc == 0 || argc%2 != 0 {
			return wrongArgs()
		}
		errs := make([]error, argc/2)
		var wg sync.WaitGroup
		for i := 0; i < argc/2; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = srv.kv.Put(ctx, args[1+2*i], args[2+2*i]) }()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return fail(err)
		}
		return func(w writer) { w.simple("OK") }
	case "MGET", "EXISTS", "DEL", "UNLINK":
		if argc == 0 {
			return wrongArgs()
		}
		vals := make([][]byte, argc)
		found := make([]bool, argc)
		errs := make([]error, argc)
		var wg sync.WaitGroup
		for i := range argc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var r kv.Record
				r, found[i], errs[i] = srv.kv.Get(ctx, args[1+i])
				vals[i] = r.Value
				if (name == "DEL" || name == "UNLINK") && found[i] && errs[i] == nil {
					errs[i] = srv.kv.Delete(ctx, args[1+i])
				}
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return fail(err)
		}
		if name == "MGET" {
			return func(w writer) {
				w.array(argc)
				for i := range argc {
					if found[i] {
						w.bulk(vals[i])
					} else {
						w.nilBulk()
					}
				}
			}
		}
		count := int64(0)
		for _, f := range found {
			if f {
				count++
			}
		}
		return func(w writer) { w.int(count) }
	case "INFO":
		info := srv.info()
		return func(w writer) { w.bulk([]byte(info)) }
	case "COMMAND":
		if argc >= 1 && strings.EqualFold(string(args[1]), "COUNT") {
			return func(w writer) { w.int(int64(len(commands))) }
		}
		return func(w writer) { w.array(0) }
	case "CONFIG":
		if argc >= 2 && strings.EqualFold(string(args[1]), "GET") {
			// What clients ask before a run (redis-benchmark asks save
			// and appendonly), answered as tide behaves: no snapshots,
			// and a log that every write goes through, fsynced as
			// --kv-sync says.
			fsync := "always"
			if srv.cfg.Sync == "periodic" {
				fsync = "everysec"
			}
			params := [][2]string{{"save", ""}, {"appendonly", "yes"}, {"appendfsync", fsync}, {"databases", "1"},
				{"proto-max-bulk-len", strconv.Itoa(srv.cfg.MaxValue)}}
			var out []string
			seen := map[string]bool{}
			for _, pat := range args[2:] {
				for _, p := range params {
					if ok, _ := path.Match(strings.ToLower(string(pat)), p[0]); ok && !seen[p[0]] {
						seen[p[0]] = true
						out = append(out, p[0], p[1])
					}
				}
			}
			return func(w writer) {
				w.array(len(out))
				for _, v := range out {
					w.bulk([]byte(v))
				}
			}
		}
		return func(w writer) { w.err("ERR CONFIG supports only GET in tide") }
	case "SELECT":
		if argc == 1 && string(args[1]) == "0" {
			return func(w writer) { w.simple("OK") }
		}
		return func(w writer) { w.err("ERR tide has a single database (0)") }
	case "CLIENT":
		return func(w writer) { w.simple("OK") }
	case "CLUSTER":
		return srv.execCluster(args)
	}
	if r, ok := srv.execData(ctx, name, args); ok {
		return r
	}
	preview := make([]string, 0, 3)
	for _, a := range args[1:min(len(args), 4)] {
		preview = append(preview, "'"+string(a)+"'")
	}
	return func(w writer) {
		w.err(fmt.Sprintf("ERR unknown command '%s', with args beginning with: %s", string(args[0]), strings.Join(preview, " ")))
	}
}

// keysOf lists the keys a command touches.
func keysOf(args [][]byte) []string {
	if len(args) < 2 {
		return nil
	}
	switch name := strings.ToUpper(string(args[0])); {
	case name == "GET" || name == "SET" || oneKey[name]:
		return []string{string(args[1])}
	case name == "DEL" || name == "EXISTS" || name == "MGET" || name == "UNLINK":
		ks := make([]string, 0, len(args)-1)
		for _, a := range args[1:] {
			ks = append(ks, string(a))
		}
		return ks
	case name == "MSET":
		var ks []string
		for i := 1; i < len(args); i += 2 {
			ks = append(ks, string(args[i]))
		}
		return ks
	}
	return nil
}

var commands = []string{"get", "set", "del", "exists", "mget", "mset", "ping", "echo", "info", "command", "config", "select", "client", "cluster", "quit",
	"setnx", "setex", "psetex", "getset", "getdel", "incr", "decr", "incrby", "decrby", "incrbyfloat", "append", "strlen", "type",
	"expire", "pexpire", "expireat", "pexpireat", "persist", "ttl", "pttl", "expiretime", "pexpiretime", "unlink", "scan", "keys", "dbsize"}

func (srv *Server) info() string {
	st := srv.kv.Status()
	return fmt.Sprintf("# Server\r\nredis_version:7.0.0\r\ntide_version:dev\r\nredis_mode:tide\r\ntcp_port:%s\r\n"+
		"# Replication\r\nrole:master\r\ntide_replicas:%d\r\ntide_write_quorum:%d\r\ntide_read_quorum:%d\r\ntide_ring_members:%d\r\n"+
		"# Stats\r\ntide_writes:%d\r\ntide_reads:%d\r\ntide_write_failures:%d\r\ntide_read_failures:%d\r\ntide_read_repairs:%d\r\ntide_hints_held:%d\r\n"+
		"# Keyspace\r\ndb0:keys=%d,bytes=%d\r\n",
		portOf(srv.cfg.Addr), srv.cfg.N, srv.cfg.W, srv.cfg.R, st.Members,
		st.Stats.Writes, st.Stats.Reads, st.Stats.WriteFailures, st.Stats.ReadFailures, st.Stats.ReadRepairs, st.Stats.HintsHeld, st.Keys, st.Bytes)
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
