package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"tide/autoscale"
	"tide/paxos"
	"tide/paxos/node"
)

// LogControl starts and stops the role processes of a local tide log and
// changes its configuration through the log: it is what `tide log up`
// serves to `tide log scale` and `tide log replace`.
type LogControl struct {
	Roles   RoleHost
	DepPath string // the deployment file, rewritten after each change
	// Client is the interface reconfiguration clients bind; empty picks
	// the one that reaches the roles (node.ReplyHost).
	Client string

	mu sync.Mutex // one change at a time
	d  node.Deployment
	// http reaches the roles' HTTP ports with d.Certs.
	http *http.Client
}

// Roles are the compartments `tide log scale` changes, with the kind of
// role process each one runs.
var Roles = map[string]string{
	"batchers": "batcher", "leaders": "leader", "proxy-leaders": "proxy",
	"acceptor-groups": "acceptor", "replicas": "replica", "unbatchers": "unbatcher",
}

// RoleNames lists Roles' keys in a fixed order, for help and errors.
var RoleNames = []string{"batchers", "leaders", "proxy-leaders", "acceptor-groups", "replicas", "unbatchers"}

// NewLogControl manages deployment d, whose roles run on roles.
func NewLogControl(roles RoleHost, d node.Deployment, depPath string) *LogControl {
	return &LogControl{Roles: roles, DepPath: depPath, d: d, http: d.HTTPClient(2 * time.Second)}
}

func (c *LogControl) client() string { return c.Client }

// Current asks the role processes for the newest configuration any of
// them knows.
func (c *LogControl) Current() (node.Deployment, error) {
	return Newest(c.d)
}

// Newest asks every role process of d (as d and its configuration know
// them) for its configuration and returns d with the newest.
func Newest(d node.Deployment) (node.Deployment, error) {
	hc := d.HTTPClient(2 * time.Second)
	best := d
	answered := false
	var lastErr error
	seen := map[string]bool{}
	queue := []node.Deployment{d}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for _, h := range sortedValues(cur.HTTPMap()) {
			if seen[h] {
				continue
			}
			seen[h] = true
			resp, err := hc.Get("http://" + h + "/deployment")
			if err != nil {
				lastErr = err
				continue
			}
			var got node.Deployment
			err = json.NewDecoder(resp.Body).Decode(&got)
			resp.Body.Close()
			if err != nil || got.Log.Validate() != nil {
				continue
			}
			answered = true
			best.TLS = best.TLS || got.TLS
			if got.Log.Epoch > best.Log.Epoch {
				best.Log = got.Log
				queue = append(queue, got) // its configuration may name new roles
			}
		}
	}
	if !answered {
		if lastErr != nil {
			// A refused handshake says more than "no member".
			return d, fmt.Errorf("%w; the last one tried: %v", node.ErrNoMember, lastErr)
		}
		return d, node.ErrNoMember
	}
	best.HTTP = best.HTTPMap()
	return best, nil
}

func sortedValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

// list returns a pointer to the address list of a role kind.
func list(cfg *paxos.Config, kind string) *[]string {
	switch kind {
	case "batcher":
		return &cfg.Batchers
	case "proxy":
		return &cfg.ProxyLeaders
	case "replica":
		return &cfg.Replicas
	case "unbatcher":
		return &cfg.Unbatchers
	}
	return nil
}

// Scale makes compartment role (see Roles) have n instances: it starts
// new role processes and adds them, or removes the last ones, waits until
// they have drained (or, for acceptors, until their rounds are retired),
// and stops them. It reports progress to out.
func (c *LogControl) Scale(ctx context.Context, role string, n int, out io.Writer) error {
	kind, ok := Roles[role]
	if !ok {
		return fmt.Errorf("unknown role %q (want one of %s)", role, strings.Join(RoleNames, ", "))
	}
	if n < 0 {
		return fmt.Errorf("%s: count %d is negative", role, n)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	d, err := c.Current()
	if err != nil {
		return err
	}
	cfg := d.Log
	have := countOf(cfg, kind)
	switch {
	case n == have:
		fmt.Fprintf(out, "%s: already %d at epoch %d\n", role, n, cfg.Epoch)
		return nil
	case n == 0 && (kind == "leader" || kind == "acceptor" || kind == "replica" || kind == "proxy"):
		return fmt.Errorf("%s: at least one is needed", role)
	}
	if n > have {
		return c.grow(ctx, d, role, kind, n-have, out)
	}
	return c.shrink(ctx, d, role, kind, have-n, out)
}

// start runs a new role process of kind, joining through a member of d.
func (c *LogControl) start(ctx context.Context, d node.Deployment, kind string) (addr, httpAddr string, err error) {
	join := ""
	for _, h := range sortedValues(d.HTTPMap()) {
		if resp, err := d.HTTPClient(time.Second).Get("http://" + h + "/healthz"); err == nil {
			resp.Body.Close()
			join = h
			break
		}
	}
	if join == "" {
		return "", "", node.ErrNoMember
	}
	r, err := c.Roles.Start(ctx, RoleSpec{Kind: kind, Join: join, Control: d.Control})
	if err != nil {
		return "", "", err
	}
	return r.Addr, r.HTTP, nil
}

func describeKind(kind string) string {
	switch kind {
	case "proxy":
		return "proxy leader"
	case "acceptor":
		return "acceptor"
	}
	return kind
}

func (c *LogControl) grow(ctx context.Context, d node.Deployment, role, kind string, k int, out io.Writer) error {
	per := 1
	if kind == "acceptor" {
		per = len(d.Log.Groups[0].Acceptors) // a new group has the shape of the first
	}
	var added []string
	for range k * per {
		addr, h, err := c.start(ctx, d, kind)
		if err != nil {
			return fmt.Errorf("start a %s: %w", describeKind(kind), err)
		}
		if d.Log.HTTP == nil {
			d.Log.HTTP = map[string]string{}
		}
		d.Log.HTTP[addr] = h
		added = append(added, addr)
		fmt.Fprintf(out, "started %s %s (http %s)\n", describeKind(kind), addr, h)
	}
	build := func(cur paxos.Config) paxos.Config {
		next := cur.Next()
		if next.HTTP == nil {
			next.HTTP = map[string]string{}
		}
		for _, a := range added {
			next.HTTP[a] = d.Log.HTTP[a]
		}
		switch kind {
		case "leader":
			next = next.WithLeaders(append(slices.Clone(next.Leaders), added...))
		case "acceptor":
			shape := next.Groups[0]
			for i := 0; i < len(added); i += per {
				next.Groups = append(next.Groups, paxos.Group{Acceptors: slices.Clone(added[i : i+per]), Rows: shape.Rows, Cols: shape.Cols})
			}
		default:
			l := list(&next, kind)
			*l = append(*l, added...)
		}
		next.Record(fmt.Sprintf("add %s %s", describeKind(kind), strings.Join(added, ",")), "tide log scale "+role+" "+strconv.Itoa(countOf(next, kind)), time.Now().UnixMilli())
		return next
	}
	next, err := c.reconfigure(ctx, build, out)
	if err != nil {
		return err
	}
	if kind == "acceptor" {
		return c.awaitRetired(ctx, next, out)
	}
	return nil
}

func countOf(cfg paxos.Config, kind string) int {
	switch kind {
	case "leader":
		return len(cfg.Leaders)
	case "acceptor":
		return len(cfg.Groups)
	}
	return len(*list(&cfg, kind))
}

func (c *LogControl) shrink(ctx context.Context, d node.Deployment, role, kind string, k int, out io.Writer) error {
	var removed []string
	build := func(cur paxos.Config) paxos.Config {
		next := cur.Next()
		removed = nil
		switch kind {
		case "leader":
			removed = slices.Clone(next.Leaders[len(next.Leaders)-k:])
			next = next.WithLeaders(next.Leaders[:len(next.Leaders)-k])
		case "acceptor":
			for _, g := range next.Groups[len(next.Groups)-k:] {
				removed = append(removed, g.Acceptors...)
			}
			next.Groups = next.Groups[:len(next.Groups)-k]
		default:
			l := list(&next, kind)
			removed = slices.Clone((*l)[len(*l)-k:])
			*l = (*l)[:len(*l)-k]
		}
		next.Record(fmt.Sprintf("remove %s %s", describeKind(kind), strings.Join(removed, ",")), "tide log scale "+role+" "+strconv.Itoa(countOf(next, kind)), time.Now().UnixMilli())
		return next
	}
	next, err := c.reconfigure(ctx, build, out)
	if err != nil {
		return err
	}
	if kind == "acceptor" {
		if err := c.awaitRetired(ctx, next, out); err != nil {
			return err
		}
	}
	return c.retire(ctx, next, kind, removed, out)
}

// Remove takes the instance at addr out of the log: a batcher, leader
// (the active one hands leadership over), proxy leader, replica or
// unbatcher. It waits until the instance has drained and stops it.
// Acceptors leave by Replace or RemoveGroup, matchmakers not at all.
func (c *LogControl) Remove(ctx context.Context, addr string, out io.Writer) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, err := c.Current()
	if err != nil {
		return err
	}
	kind, _, err := d.RoleOf(addr)
	if err != nil {
		return fmt.Errorf("%s is not a role of epoch %d", addr, d.Log.Epoch)
	}
	switch kind {
	case "acceptor":
		return fmt.Errorf("%s is an acceptor: replace it (tide log replace) or remove its group (tide log scale acceptor-groups)", addr)
	case "matchmaker":
		return fmt.Errorf("%s is a matchmaker: matchmakers cannot change", addr)
	}
	build := func(cur paxos.Config) paxos.Config {
		next := cur.Next()
		if kind == "leader" {
			next = next.WithLeaders(slices.DeleteFunc(slices.Clone(next.Leaders), func(a string) bool { return a == addr }))
		} else {
			l := list(&next, kind)
			*l = slices.DeleteFunc(slices.Clone(*l), func(a string) bool { return a == addr })
		}
		next.Record(fmt.Sprintf("remove %s %s", describeKind(kind), addr), "tide log remove", time.Now().UnixMilli())
		return next
	}
	next, err := c.reconfigure(ctx, build, out)
	if err != nil {
		return err
	}
	return c.retire(ctx, next, kind, []string{addr}, out)
}

// RemoveGroup removes acceptor group i (counting from 0), waits until no
// slot depends on it, and stops its acceptors.
func (c *LogControl) RemoveGroup(ctx context.Context, i int, out io.Writer) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, err := c.Current()
	if err != nil {
		return err
	}
	if i < 0 || i >= len(d.Log.Groups) || len(d.Log.Groups) == 1 {
		return fmt.Errorf("cannot remove group %d of %d", i, len(d.Log.Groups))
	}
	removed := slices.Clone(d.Log.Groups[i].Acceptors)
	build := func(cur paxos.Config) paxos.Config {
		next := cur.Next()
		next.Groups = slices.DeleteFunc(next.Groups, func(g paxos.Group) bool { return slices.Equal(g.Acceptors, removed) })
		next.Record(fmt.Sprintf("remove acceptor group %s", strings.Join(removed, ",")), "remove group", time.Now().UnixMilli())
		return next
	}
	next, err := c.reconfigure(ctx, build, out)
	if err != nil {
		return err
	}
	if err := c.awaitRetired(ctx, next, out); err != nil {
		return err
	}
	return c.retire(ctx, next, "acceptor", removed, out)
}

// Replace swaps acceptor addr for a new one: the new acceptor joins its
// group, the old one leaves once its rounds are retired.
func (c *LogControl) Replace(ctx context.Context, addr string, out io.Writer) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, err := c.Current()
	if err != nil {
		return err
	}
	found := false
	for _, g := range d.Log.Groups {
		found = found || slices.Contains(g.Acceptors, addr)
	}
	if !found {
		return fmt.Errorf("%s is not an acceptor of epoch %d", addr, d.Log.Epoch)
	}
	fresh, h, err := c.start(ctx, d, "acceptor")
	if err != nil {
		return fmt.Errorf("start an acceptor: %w", err)
	}
	fmt.Fprintf(out, "started acceptor %s (http %s)\n", fresh, h)
	build := func(cur paxos.Config) paxos.Config {
		next := cur.Next()
		for gi, g := range next.Groups {
			if i := slices.Index(g.Acceptors, addr); i >= 0 {
				next.Groups[gi].Acceptors[i] = fresh
			}
		}
		if next.HTTP == nil {
			next.HTTP = map[string]string{}
		}
		next.HTTP[fresh] = h
		next.Record(fmt.Sprintf("replace acceptor %s with %s", addr, fresh), "tide log replace", time.Now().UnixMilli())
		return next
	}
	next, err := c.reconfigure(ctx, build, out)
	if err != nil {
		return err
	}
	if err := c.awaitRetired(ctx, next, out); err != nil {
		return err
	}
	return c.retire(ctx, next, "acceptor", []string{addr}, out)
}

// reconfigure proposes build(current) until it is chosen, rebuilding on a
// newer configuration when another change got in first.
func (c *LogControl) reconfigure(ctx context.Context, build func(paxos.Config) paxos.Config, out io.Writer) (paxos.Config, error) {
	for attempt := 0; ; attempt++ {
		d, err := c.Current()
		if err != nil {
			return paxos.Config{}, err
		}
		next := build(d.Log)
		if err := d.Log.ValidateChange(next); err != nil {
			return paxos.Config{}, err
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		got, err := node.Reconfigure(rctx, d.Log, next, c.client(), d.Certs)
		cancel()
		if errors.Is(err, paxos.ErrStaleConfig) && attempt < 5 {
			fmt.Fprintf(out, "epoch %d was taken by another change; retrying\n", next.Epoch)
			continue
		}
		if err != nil {
			return paxos.Config{}, err
		}
		c.d.Log = got
		c.d.HTTP = c.d.HTTPMap()
		if c.DepPath != "" {
			if err := c.d.Save(c.DepPath); err != nil {
				return got, fmt.Errorf("epoch %d chosen, but saving %s failed: %w", got.Epoch, c.DepPath, err)
			}
		}
		last := got.History[len(got.History)-1]
		fmt.Fprintf(out, "epoch %d: %s\n", got.Epoch, last.What)
		return got, nil
	}
}

// statusOf fetches the status of the roles of the process at httpAddr.
func (c *LogControl) statusOf(httpAddr string) ([]node.Status, error) {
	resp, err := c.http.Get("http://" + httpAddr + "/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st []node.Status
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// poll calls cond every 100 ms until it holds, ctx ends, or limit passes.
func poll(ctx context.Context, limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// awaitRetired waits until the active leader runs a round with cfg's
// acceptor groups and has retired every older round.
func (c *LogControl) awaitRetired(ctx context.Context, cfg paxos.Config, out io.Writer) error {
	fmt.Fprintf(out, "waiting for the leader to retire the old acceptor configuration...\n")
	err := poll(ctx, 2*time.Minute, func() bool {
		for _, l := range cfg.Leaders {
			st, err := c.statusOf(cfg.HTTP[l])
			if err != nil {
				continue
			}
			for _, s := range st {
				if s.Addr == l && s.Active && s.RoundEpoch >= cfg.Epoch && s.Live == 1 && !s.Retiring {
					return true
				}
			}
		}
		return false
	})
	if err != nil {
		return fmt.Errorf("old acceptor configuration not retired: %w", err)
	}
	fmt.Fprintf(out, "old acceptor configuration retired\n")
	return nil
}

// retire waits until each removed role has drained, then stops its
// process. Replicas leave once a majority of those that stay have
// executed (and snapshotted) the configuration that removed them.
func (c *LogControl) retire(ctx context.Context, cfg paxos.Config, kind string, removed []string, out io.Writer) error {
	for _, a := range removed {
		h := c.d.HTTPMap()[a]
		var cond func() bool
		switch kind {
		case "replica":
			cond = func() bool {
				n := 0
				for _, r := range cfg.Replicas {
					st, _ := c.statusOf(cfg.HTTP[r])
					for _, s := range st {
						if s.Addr == r && s.LogEpoch >= cfg.Epoch {
							n++
						}
					}
				}
				return n > len(cfg.Replicas)/2
			}
		case "leader":
			cond = func() bool {
				st, err := c.statusOf(h)
				if err != nil {
					return true
				}
				for _, s := range st {
					if s.Addr == a {
						return !s.Active && s.Epoch >= cfg.Epoch
					}
				}
				return true
			}
		case "acceptor":
			cond = func() bool { return true } // retired already
		default:
			cond = func() bool {
				st, err := c.statusOf(h)
				if err != nil {
					return true
				}
				for _, s := range st {
					if s.Addr == a {
						return s.Drained
					}
				}
				return true
			}
		}
		fmt.Fprintf(out, "draining %s %s...\n", describeKind(kind), a)
		if err := poll(ctx, time.Minute, cond); err != nil {
			return fmt.Errorf("%s %s did not drain: %w", describeKind(kind), a, err)
		}
		if err := c.Roles.Stop(ctx, a); err != nil {
			return fmt.Errorf("stop %s %s: %w", describeKind(kind), a, err)
		}
		fmt.Fprintf(out, "stopped %s %s\n", describeKind(kind), a)
	}
	return nil
}

// Handler serves POST /scale?role=R&n=N, POST /replace?addr=A and POST
// /remove?addr=A,
// streaming progress as text; the last line is "ok" or "error: ...".
func (c *LogControl) Handler() http.Handler {
	mux := http.NewServeMux()
	run := func(w http.ResponseWriter, r *http.Request, op func(io.Writer) error) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fw := flushWriter{w}
		if err := op(fw); err != nil {
			fmt.Fprintf(fw, "error: %v\n", err)
			return
		}
		fmt.Fprintln(fw, "ok")
	}
	mux.HandleFunc("POST /scale", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil {
			http.Error(w, "n must be a number", http.StatusBadRequest)
			return
		}
		role := r.URL.Query().Get("role")
		if _, ok := Roles[role]; !ok {
			http.Error(w, fmt.Sprintf("unknown role %q (want one of %s)", role, strings.Join(RoleNames, ", ")), http.StatusBadRequest)
			return
		}
		run(w, r, func(out io.Writer) error { return c.Scale(r.Context(), role, n, out) })
	})
	mux.HandleFunc("POST /replace", func(w http.ResponseWriter, r *http.Request) {
		addr := r.URL.Query().Get("addr")
		if addr == "" {
			http.Error(w, "addr is required", http.StatusBadRequest)
			return
		}
		run(w, r, func(out io.Writer) error { return c.Replace(r.Context(), addr, out) })
	})
	mux.HandleFunc("POST /remove", func(w http.ResponseWriter, r *http.Request) {
		addr := r.URL.Query().Get("addr")
		if addr == "" {
			http.Error(w, "addr is required", http.StatusBadRequest)
			return
		}
		run(w, r, func(out io.Writer) error { return c.Remove(r.Context(), addr, out) })
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	return mux
}

type flushWriter struct{ w http.ResponseWriter }

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
	return n, err
}

// Sample implements autoscale.LogTarget: every instance's cumulative
// count of messages received and its process's CPU seconds and limit, by
// role, from its /status (for acceptor-groups, each group's busiest
// acceptor). An instance that does not answer fails the sample: the
// policy must not act on a partial view. Instances are asked at once.
func (c *LogControl) Sample(ctx context.Context) (map[string]map[string]autoscale.LogCounters, error) {
	d, err := c.Current()
	if err != nil {
		return nil, err
	}
	cfg := d.Log
	httpOf := d.HTTPMap()
	type answer struct {
		c   autoscale.LogCounters
		err error
	}
	answers := map[string]*answer{}
	var wg sync.WaitGroup
	for _, role := range RoleNames {
		if role == "leaders" {
			continue
		}
		var addrs []string
		if role == "acceptor-groups" {
			for _, g := range cfg.Groups {
				addrs = append(addrs, g.Acceptors...)
			}
		} else {
			addrs = *list(&cfg, Roles[role])
		}
		for _, a := range addrs {
			ans := &answer{}
			answers[a] = ans
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := c.statusOf(httpOf[a])
				if err != nil {
					ans.err = fmt.Errorf("status of %s: %w", a, err)
					return
				}
				for _, s := range st {
					if s.Addr == a {
						ans.c = autoscale.LogCounters{Messages: float64(s.MessagesIn), CPUSeconds: s.CPUSeconds, CPULimit: s.CPULimit}
						return
					}
				}
				ans.err = fmt.Errorf("status of %s: role not listed", a)
			}()
		}
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, a := range slices.Sorted(maps.Keys(answers)) {
		if err := answers[a].err; err != nil {
			return nil, err
		}
	}
	out := map[string]map[string]autoscale.LogCounters{}
	for _, role := range RoleNames {
		if role == "leaders" {
			continue
		}
		out[role] = map[string]autoscale.LogCounters{}
		if role == "acceptor-groups" {
			for gi, g := range cfg.Groups {
				var busiest autoscale.LogCounters
				for _, a := range g.Acceptors {
					if c := answers[a].c; c.Messages >= busiest.Messages {
						busiest = c
					}
				}
				out[role][fmt.Sprintf("group%d:%s", gi, g.Acceptors[0])] = busiest
			}
			continue
		}
		for _, a := range *list(&cfg, Roles[role]) {
			out[role][a] = answers[a].c
		}
	}
	return out, nil
}
