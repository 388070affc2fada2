// Authentication and authorization: AUTH, HELLO ... AUTH, and users with
// key patterns and command categories, in the subset of Redis's ACL syntax
// that a key-value store needs.

package resp

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"os"
	"path"
	"strings"
)

// User is a RESP user: who may log in with which passwords, and which
// keys and commands it may use.
type User struct {
	Name string
	// On says the user may log in (Redis's on and off).
	On bool
	// NoPass lets any password log in (Redis's nopass).
	NoPass bool
	// Passwords are the SHA-256 digests of the passwords that log in.
	Passwords [][32]byte
	// Keys are the glob patterns (~pattern) of the keys it may touch; "*"
	// is every key (allkeys).
	Keys []string
	// Read and Write are the command categories it may run (+@read,
	// +@write; +@all is both). Connection commands (PING, INFO, ...)
	// need neither.
	Read, Write bool
}

// ACL is the users of a server. An ACL with no users leaves the server
// open, as Redis without requirepass.
type ACL struct {
	Users map[string]*User
}

// RequirePass is the ACL of --requirepass: the user "default", with
// password pass, every key and every command (as Redis's requirepass).
func RequirePass(pass string) *ACL {
	return &ACL{Users: map[string]*User{"default": {Name: "default", On: true, Passwords: [][32]byte{sha256.Sum256([]byte(pass))},
		Keys: []string{"*"}, Read: true, Write: true}}}
}

// LoadACL reads an ACL file of Redis's syntax, one user a line:
//
//	user NAME [on|off] [>password ...] [nopass] [~pattern ...] [allkeys] [+@all|+@read|+@write ...] [allcommands]
//
// Blank lines and lines starting with # are skipped. Other rules of
// Redis's ACL (selectors, single commands, channels) are refused with
// the line they are on.
func LoadACL(file string) (*ACL, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("acl file: %w", err)
	}
	defer f.Close()
	acl := &ACL{Users: map[string]*User{}}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		u, err := ParseUser(s)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", file, line, err)
		}
		acl.Users[u.Name] = u
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("acl file %s: %w", file, err)
	}
	if len(acl.Users) == 0 {
		return nil, fmt.Errorf("acl file %s defines no user", file)
	}
	return acl, nil
}

// ParseUser reads one "user NAME rules..." line.
func ParseUser(line string) (*User, error) {
	fields := strings.Fields(line)
	if len(fields) < 2 || fields[0] != "user" {
		return nil, fmt.Errorf("want user NAME rules..., got %q", line)
	}
	u := &User{Name: fields[1]}
	for _, r := range fields[2:] {
		switch {
		case r == "on":
			u.On = true
		case r == "off":
			u.On = false
		case r == "nopass":
			u.NoPass = true
		case strings.HasPrefix(r, ">") && len(r) > 1:
			u.Passwords = append(u.Passwords, sha256.Sum256([]byte(r[1:])))
		case r == "allkeys":
			u.Keys = append(u.Keys, "*")
		case strings.HasPrefix(r, "~") && len(r) > 1:
			if _, err := path.Match(r[1:], ""); err != nil {
				return nil, fmt.Errorf("user %s: key pattern %q: %w", u.Name, r[1:], err)
			}
			u.Keys = append(u.Keys, r[1:])
		case r == "+@all" || r == "allcommands":
			u.Read, u.Write = true, true
		case r == "+@read":
			u.Read = true
		case r == "+@write":
			u.Write = true
		case r == "-@write":
			u.Write = false
		case r == "-@read":
			u.Read = false
		default:
			return nil, fmt.Errorf("user %s: rule %q is not supported by tide (on, off, >password, nopass, ~pattern, allkeys, +@all, +@read, +@write, -@read, -@write)", u.Name, r)
		}
	}
	if u.On && !u.NoPass && len(u.Passwords) == 0 {
		return nil, fmt.Errorf("user %s is on but has no >password and no nopass: nobody could log in as it", u.Name)
	}
	return u, nil
}

// login returns the user name and password log in as, or nil.
func (a *ACL) login(name, pass string) *User {
	u := a.Users[name]
	if u == nil || !u.On {
		return nil
	}
	if u.NoPass {
		return u
	}
	sum := sha256.Sum256([]byte(pass))
	ok := 0
	for _, p := range u.Passwords {
		ok |= subtle.ConstantTimeCompare(p[:], sum[:])
	}
	if ok == 1 {
		return u
	}
	return nil
}

// category is what a command needs: "" for connection and server
// commands (any logged-in user), "read" for those that only read keys,
// and "write" for every other: a command added later is a write until
// it is listed here.
func category(name string) string {
	switch name {
	case "PING", "ECHO", "INFO", "COMMAND", "CONFIG", "SELECT", "CLIENT", "CLUSTER", "QUIT":
		return ""
	case "GET", "MGET", "EXISTS", "TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME", "STRLEN", "TYPE", "SCAN", "KEYS", "DBSIZE":
		return "read"
	}
	return "write"
}

// wholeKeyspace are the commands that list or count keys: only a user of
// every key (allkeys) may run them, as their answers name any key.
var wholeKeyspace = map[string]bool{"SCAN": true, "KEYS": true, "DBSIZE": true}

// allows reports whether u may run args; if not, why, as Redis words it.
func (u *User) allows(args [][]byte) (bool, string) {
	name := strings.ToUpper(string(args[0]))
	switch category(name) {
	case "read":
		if !u.Read {
			return false, fmt.Sprintf("NOPERM User %s has no permissions to run the '%s' command", u.Name, strings.ToLower(name))
		}
	case "write":
		if !u.Write {
			return false, fmt.Sprintf("NOPERM User %s has no permissions to run the '%s' command", u.Name, strings.ToLower(name))
		}
	}
	if wholeKeyspace[name] && !u.matches("\x00every key") {
		return false, "NOPERM No permissions to access a key"
	}
	for _, k := range keysOf(args) {
		if !u.matches(k) {
			return false, "NOPERM No permissions to access a key"
		}
	}
	return true, ""
}

func (u *User) matches(key string) bool {
	for _, p := range u.Keys {
		if p == "*" {
			return true
		}
		if ok, _ := path.Match(p, key); ok && key != "\x00every key" {
			return true
		}
	}
	return false
}

// Redis's replies, word for word: clients match on their prefixes.
const (
	errNoAuth    = "NOAUTH Authentication required."
	errWrongPass = "WRONGPASS invalid username-password pair or user is disabled."
)

// authorize answers AUTH and HELLO, and refuses a command the
// connection's user may not run (no user yet: NOAUTH). It returns nil for
// a command that may run. It runs in the pipeline's order, so an AUTH
// counts for the commands after it.
func (srv *Server) authorize(cs *connState, args [][]byte) reply {
	name := strings.ToUpper(string(args[0]))
	acl := srv.acl.Load()
	if cs.user != nil && cs.acl != acl {
		// The ACL was reloaded: the user's new rules apply, and a user
		// removed or turned off is logged out.
		if u := acl.Users[cs.user.Name]; u != nil && u.On {
			cs.user = u
		} else {
			cs.user = nil
		}
		cs.acl = acl
	}
	errReply := func(msg string) reply {
		if srv.cfg.OnAuthFailure != nil && (msg == errNoAuth || msg == errWrongPass || strings.HasPrefix(msg, "NOPERM")) {
			srv.cfg.OnAuthFailure()
		}
		return func(w writer) { w.err(msg) }
	}
	switch name {
	case "AUTH":
		var user, pass string
		switch len(args) {
		case 2:
			user, pass = "default", string(args[1])
		case 3:
			user, pass = string(args[1]), string(args[2])
		default:
			return errReply("ERR wrong number of arguments for 'auth' command")
		}
		u := acl.login(user, pass)
		if u == nil {
			return errReply(errWrongPass)
		}
		cs.user, cs.acl = u, acl
		return func(w writer) { w.simple("OK") }
	case "HELLO":
		i := 1
		if len(args) > 1 {
			if v := string(args[1]); v != "2" {
				if v == "3" {
					return errReply("NOPROTO unsupported protocol version: tide speaks RESP2")
				}
				return errReply("ERR Protocol version is not an integer or out of range")
			}
			i = 2
		}
		for i < len(args) {
			switch strings.ToUpper(string(args[i])) {
			case "AUTH":
				if i+2 >= len(args) {
					return errReply("ERR Syntax error in HELLO option 'auth'")
				}
				u := acl.login(string(args[i+1]), string(args[i+2]))
				if u == nil {
					return errReply(errWrongPass)
				}
				cs.user, cs.acl = u, acl
				i += 3
			case "SETNAME":
				if i+1 >= len(args) {
					return errReply("ERR Syntax error in HELLO option 'setname'")
				}
				i += 2
			default:
				return errReply(fmt.Sprintf("ERR Syntax error in HELLO option '%s'", args[i]))
			}
		}
		if cs.user == nil {
			return errReply("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
		}
		return func(w writer) {
			w.array(14)
			for _, kv := range [][2]string{{"server", "redis"}, {"version", "7.2.0"}, {"proto", ""}, {"id", ""}, {"mode", "cluster"}, {"role", "master"}, {"modules", ""}} {
				w.bulk([]byte(kv[0]))
				switch kv[0] {
				case "proto":
					w.int(2)
				case "id":
					w.int(1)
				case "modules":
					w.array(0)
				default:
					w.bulk([]byte(kv[1]))
				}
			}
		}
	}
	if cs.user == nil {
		return errReply(errNoAuth)
	}
	if ok, why := cs.user.allows(args); !ok {
		return errReply(why)
	}
	return nil
}
