package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"tide/kv"
)

// The Redis protocol (RESP2) front end: GET, SET, DEL, EXISTS, MGET, MSET,
// PING, ECHO, INFO, COMMAND, CONFIG GET, SELECT 0, CLIENT and QUIT, enough
// for redis-cli and redis-benchmark. Pipelined commands are read together,
// executed concurrently and answered in order.

// maxBulk bounds one argument; maxArgs bounds one command.
const (
	maxArgs = 1 << 20
)

// errProtocol is a malformed request: answered with -ERR, then the
// connection is closed, as Redis does.
var errProtocol = errors.New("Protocol error")

// readCommand reads one command: a RESP array of bulk strings, or an inline
// command line.
func readCommand(r *bufio.Reader, maxBulk int) ([][]byte, error) {
	var a respArena
	return a.readCommand(r, maxBulk)
}

// respArena is where a connection's commands are parsed into. Arguments
// are cut from shared chunks instead of allocated one by one. A chunk is
// never reused: the records of a write keep pointing into it for as long
// as the write is under way, which can outlast its reply. The argument
// slices of a pipeline's commands are reused once it is answered (reset).
type respArena struct {
	chunk []byte
	slots [][]byte
	used  int
}

// arenaChunk is the size of the chunks arguments are cut from; larger
// arguments are allocated on their own.
const arenaChunk = 16 << 10

func (a *respArena) bytes(n int) []byte {
	if n > arenaChunk/4 {
		return make([]byte, n)
	}
	if cap(a.chunk)-len(a.chunk) < n {
		a.chunk = make([]byte, 0, arenaChunk)
	}
	l := len(a.chunk)
	a.chunk = a.chunk[:l+n]
	return a.chunk[l : l+n : l+n]
}

// args returns room for n arguments.
func (a *respArena) args(n int) [][]byte {
	if len(a.slots)-a.used < n {
		a.slots = make([][]byte, max(n, 1024))
		a.used = 0
	}
	s := a.slots[a.used : a.used : a.used+n]
	a.used += n
	return s
}

// reset makes the argument slices of the commands read so far available
// again; their bytes stay where they are.
func (a *respArena) reset() {
	clear(a.slots[:a.used])
	a.used = 0
}

func (a *respArena) readCommand(r *bufio.Reader, maxBulk int) ([][]byte, error) {
	line, err := readLine(r)
	if err != nil {
		return nil, err
	}
	if len(line) == 0 {
		return nil, nil
	}
	if line[0] != '*' {
		return splitInline(line), nil
	}
	n, err := strconv.Atoi(string(line[1:]))
	if err != nil || n > maxArgs {
		return nil, fmt.Errorf("%w: invalid multibulk length", errProtocol)
	}
	if n <= 0 {
		return nil, nil
	}
	var args [][]byte
	if n <= 64 {
		args = a.args(n)
	} else {
		args = make([][]byte, 0, 64)
	}
	for range n {
		hdr, err := readLine(r)
		if err != nil {
			return nil, err
		}
		if len(hdr) == 0 || hdr[0] != '$' {
			return nil, fmt.Errorf("%w: expected '$', got '%s'", errProtocol, firstByte(hdr))
		}
		l, err := strconv.Atoi(string(hdr[1:]))
		if err != nil || l < 0 || l > maxBulk {
			return nil, fmt.Errorf("%w: invalid bulk length", errProtocol)
		}
		buf := a.bytes(l)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		crlf, err := r.Peek(2)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if crlf[0] != '\r' || crlf[1] != '\n' {
			return nil, fmt.Errorf("%w: bulk string not terminated by CRLF", errProtocol)
		}
		r.Discard(2)
		args = append(args, buf)
	}
	return args, nil
}

func firstByte(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return string(b[:1])
}

// readLine reads a CRLF- (or LF-) terminated line of at most 64 KiB. The
// line may point into r's buffer: it is valid until the next read.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		// Longer than the buffer: gather it.
		line = append([]byte(nil), line...)
		for err == bufio.ErrBufferFull {
			if len(line) > 64<<10 {
				return nil, fmt.Errorf("%w: too big inline request", errProtocol)
			}
			var chunk []byte
			chunk, err = r.ReadSlice('\n')
			line = append(line, chunk...)
		}
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if len(line) > 64<<10 {
		return nil, fmt.Errorf("%w: too big inline request", errProtocol)
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func splitInline(line []byte) [][]byte {
	var out [][]byte
	for _, f := range strings.Fields(string(line)) {
		out = append(out, []byte(f))
	}
	return out
}

// respWriter encodes replies.
type respWriter struct{ w *bufio.Writer }

func (r respWriter) simple(s string) { r.w.WriteString("+" + s + "\r\n") }
func (r respWriter) err(s string)    { r.w.WriteString("-" + s + "\r\n") }
func (r respWriter) int(n int64)     { r.w.WriteString(":" + strconv.FormatInt(n, 10) + "\r\n") }
func (r respWriter) nilBulk()        { r.w.WriteString("$-1\r\n") }
func (r respWriter) bulk(b []byte) {
	r.w.WriteString("$" + strconv.Itoa(len(b)) + "\r\n")
	r.w.Write(b)
	r.w.WriteString("\r\n")
}
func (r respWriter) array(n int) { r.w.WriteString("*" + strconv.Itoa(n) + "\r\n") }

// reply is a command's answer, rendered after concurrent execution.
type reply func(respWriter)

func (n *Node) startRESP(ctx context.Context, ln net.Listener) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		var conns sync.WaitGroup
		go func() { <-ctx.Done(); ln.Close() }()
		for {
			c, err := ln.Accept()
			if err != nil {
				break
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				n.serveRESP(ctx, c)
			}()
		}
		conns.Wait()
	}()
}

func (n *Node) serveRESP(ctx context.Context, c net.Conn) {
	defer c.Close()
	go func() { <-ctx.Done(); c.Close() }()
	br := bufio.NewReaderSize(c, 64<<10)
	bw := bufio.NewWriterSize(c, 64<<10)
	w := respWriter{bw}
	maxBulk := n.cfg.KV.MaxValue + 1<<10
	cs := &connState{}
	for {
		cmds := cs.cmds[:0]
		var perr error
		for len(cmds) < 1024 {
			args, err := cs.arena.readCommand(br, maxBulk)
			if err != nil {
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
		cs.cmds = cmds
		replies := slices.Grow(cs.replies[:0], len(cmds))[:len(cmds)]
		clear(replies)
		cs.replies = replies
		quit := false
		for i, args := range cmds {
			if strings.EqualFold(string(args[0]), "QUIT") {
				replies[i] = func(w respWriter) { w.simple("OK") }
				quit = true
				cmds = cmds[:i+1]
				replies = replies[:i+1]
				break
			}
		}
		// Commands run concurrently in waves; a command that touches a key
		// an earlier command of the wave touches starts the next wave, so
		// a pipeline takes effect in order. Plain GETs and SETs are the
		// exception among themselves: they reach the coordinator as one
		// ordered batch, which applies them in order (a GET after a SET of
		// its key reads the coordinator's new copy).
		all := !quit
		for _, args := range cmds {
			all = all && n.batchable(args)
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
				n.execWave(ctx, cmds[start:end], replies[start:end], cs)
				start = end
			}
		}
		for start := 0; start < len(cmds) && !all; {
			touched := map[string]bool{} // key -> touched by a command outside the batch
			read := map[string]bool{}    // keys a batched GET of the wave reads
			end := start
			for end < len(cmds) && replies[end] == nil {
				batched := n.batchable(cmds[end])
				ks := respKeys(cmds[end])
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
			n.execWave(ctx, cmds[start:end], replies[start:end], cs)
			if end == start { // a QUIT
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
func (n *Node) execWave(ctx context.Context, cmds [][][]byte, replies []reply, cs *connState) {
	batch := cs.batch[:0]
	at := cs.at[:0]
	defer func() {
		if cs.batchState.abandoned {
			// The coordinator may still read the requests: leave them
			// to it, and start a new buffer.
			cs.batchState.abandoned = false
			batch = nil
		}
		clear(batch)
		cs.batch, cs.at = batch[:0], at[:0]
	}()
	var wg sync.WaitGroup
	for i, args := range cmds {
		if !n.batchable(args) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				replies[i] = n.execRESP(ctx, args)
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
		out, errs := n.kv.doBatch(bctx, batch, &cs.batchState)
		cancel()
		for j, i := range at {
			r, err := out[j], errs[j]
			switch {
			case err != nil:
				msg := "ERR " + err.Error()
				replies[i] = func(w respWriter) { w.err(msg) }
			case batch[j].Kind == kv.KindClientPut:
				replies[i] = replyOK
			case !r.Found || r.Rec.Tomb:
				replies[i] = replyNil
			default:
				v := r.Rec.Value
				replies[i] = func(w respWriter) { w.bulk(v) }
			}
		}
	}
	wg.Wait()
}

// connState is what one RESP connection reuses from one pipeline to the
// next.
type connState struct {
	cmds       [][][]byte
	replies    []reply
	batch      []kv.Message
	at         []int
	batchState batchState
	arena      respArena
}

var (
	replyOK  reply = func(w respWriter) { w.simple("OK") }
	replyNil reply = func(w respWriter) { w.nilBulk() }
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
func (n *Node) batchable(args [][]byte) bool {
	name := args[0]
	if len(name) != 3 {
		return false
	}
	switch {
	case len(args) == 2:
		return strings.EqualFold(string(name), "GET")
	case len(args) == 3:
		return strings.EqualFold(string(name), "SET") && len(args[2]) <= n.cfg.KV.MaxValue
	}
	return false
}

// execRESP runs one command.
func (n *Node) execRESP(ctx context.Context, args [][]byte) reply {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	name := strings.ToUpper(string(args[0]))
	argc := len(args) - 1
	wrongArgs := func() reply {
		return func(w respWriter) {
			w.err(fmt.Sprintf("ERR wrong number of arguments for '%s' command", strings.ToLower(name)))
		}
	}
	fail := func(err error) reply {
		return func(w respWriter) { w.err("ERR " + err.Error()) }
	}
	switch name {
	case "PING":
		switch argc {
		case 0:
			return func(w respWriter) { w.simple("PONG") }
		case 1:
			return func(w respWriter) { w.bulk(args[1]) }
		}
		return wrongArgs()
	case "ECHO":
		if argc != 1 {
			return wrongArgs()
		}
		return func(w respWriter) { w.bulk(args[1]) }
	case "GET":
		if argc != 1 {
			return wrongArgs()
		}
		r, found, err := n.KVGet(ctx, args[1], 0)
		if err != nil {
			return fail(err)
		}
		if !found {
			return func(w respWriter) { w.nilBulk() }
		}
		return func(w respWriter) { w.bulk(r.Value) }
	case "SET":
		if argc < 2 {
			return wrongArgs()
		}
		if argc > 2 {
			return func(w respWriter) { w.err("ERR SET options are not supported by tide") }
		}
		if _, err := n.KVPut(ctx, args[1], args[2], 0); err != nil {
			return fail(err)
		}
		return func(w respWriter) { w.simple("OK") }
	case "MSET":
		if argc == 0 || argc%2 != 0 {
			return wrongArgs()
		}
		errs := make([]error, argc/2)
		var wg sync.WaitGroup
		for i := 0; i < argc/2; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); _, errs[i] = n.KVPut(ctx, args[1+2*i], args[2+2*i], 0) }()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return fail(err)
		}
		return func(w respWriter) { w.simple("OK") }
	case "MGET", "EXISTS", "DEL":
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
				r, found[i], errs[i] = n.KVGet(ctx, args[1+i], 0)
				vals[i] = r.Value
				if name == "DEL" && found[i] && errs[i] == nil {
					_, errs[i] = n.KVDelete(ctx, args[1+i], 0)
				}
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return fail(err)
		}
		if name == "MGET" {
			return func(w respWriter) {
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
		return func(w respWriter) { w.int(count) }
	case "INFO":
		info := n.respInfo()
		return func(w respWriter) { w.bulk([]byte(info)) }
	case "COMMAND":
		if argc >= 1 && strings.EqualFold(string(args[1]), "COUNT") {
			return func(w respWriter) { w.int(int64(len(respCommands))) }
		}
		return func(w respWriter) { w.array(0) }
	case "CONFIG":
		if argc >= 2 && strings.EqualFold(string(args[1]), "GET") {
			// What clients ask before a run (redis-benchmark asks save
			// and appendonly), answered as tide behaves: no snapshots,
			// and a log that every write goes through, fsynced as
			// --kv-sync says.
			fsync := "always"
			if n.cfg.KVSync == "periodic" {
				fsync = "everysec"
			}
			params := [][2]string{{"save", ""}, {"appendonly", "yes"}, {"appendfsync", fsync}, {"databases", "1"},
				{"proto-max-bulk-len", strconv.Itoa(n.cfg.KV.MaxValue)}}
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
			return func(w respWriter) {
				w.array(len(out))
				for _, v := range out {
					w.bulk([]byte(v))
				}
			}
		}
		return func(w respWriter) { w.err("ERR CONFIG supports only GET in tide") }
	case "SELECT":
		if argc == 1 && string(args[1]) == "0" {
			return func(w respWriter) { w.simple("OK") }
		}
		return func(w respWriter) { w.err("ERR tide has a single database (0)") }
	case "CLIENT":
		return func(w respWriter) { w.simple("OK") }
	case "CLUSTER":
		return n.execCluster(args)
	}
	preview := make([]string, 0, 3)
	for _, a := range args[1:min(len(args), 4)] {
		preview = append(preview, "'"+string(a)+"'")
	}
	return func(w respWriter) {
		w.err(fmt.Sprintf("ERR unknown command '%s', with args beginning with: %s", string(args[0]), strings.Join(preview, " ")))
	}
}

// respKeys lists the keys a command touches.
func respKeys(args [][]byte) []string {
	if len(args) < 2 {
		return nil
	}
	switch strings.ToUpper(string(args[0])) {
	case "GET", "SET":
		return []string{string(args[1])}
	case "DEL", "EXISTS", "MGET":
		ks := make([]string, 0, len(args)-1)
		for _, a := range args[1:] {
			ks = append(ks, string(a))
		}
		return ks
	case "MSET":
		var ks []string
		for i := 1; i < len(args); i += 2 {
			ks = append(ks, string(args[i]))
		}
		return ks
	}
	return nil
}

var respCommands = []string{"get", "set", "del", "exists", "mget", "mset", "ping", "echo", "info", "command", "config", "select", "client", "cluster", "quit"}

func (n *Node) respInfo() string {
	st := n.KVStats()
	r := n.kv.ring.Load()
	keys, bytes := n.eng.kvCount()
	return fmt.Sprintf("# Server\r\nredis_version:7.0.0\r\ntide_version:dev\r\nredis_mode:tide\r\ntcp_port:%s\r\n"+
		"# Replication\r\nrole:master\r\ntide_replicas:%d\r\ntide_write_quorum:%d\r\ntide_read_quorum:%d\r\ntide_ring_members:%d\r\n"+
		"# Stats\r\ntide_writes:%d\r\ntide_reads:%d\r\ntide_write_failures:%d\r\ntide_read_failures:%d\r\ntide_read_repairs:%d\r\ntide_hints_held:%d\r\n"+
		"# Keyspace\r\ndb0:keys=%d,bytes=%d\r\n",
		portOf(n.respAddr), n.cfg.KV.N, n.cfg.KV.W, n.cfg.KV.R, len(r.members),
		st.Writes, st.Reads, st.WriteFailures, st.ReadFailures, st.ReadRepairs, st.HintsHeld, keys, bytes)
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
