// Package connlimit caps the connections a listener serves at once: one
// over the cap is told so in its protocol's words and closed, instead of
// waiting unseen in a queue or taking memory from the clients being
// served.
package connlimit

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Listener wraps a net.Listener with a cap.
type Listener struct {
	net.Listener
	// Max is the most connections open at once; 0 means no cap.
	Max int
	// Refuse, if set, writes a refusal to a connection over the cap
	// before it is closed (with a one-second write deadline).
	Refuse func(c net.Conn)
	// Refused counts the connections refused.
	Refused atomic.Int64

	open atomic.Int64
}

// Wrap caps ln at max open connections (0: ln unchanged).
func Wrap(ln net.Listener, max int, refuse func(net.Conn)) net.Listener {
	if max <= 0 {
		return ln
	}
	return &Listener{Listener: ln, Max: max, Refuse: refuse}
}

// Accept returns the next connection under the cap, refusing those over it.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > int64(l.Max) {
			l.open.Add(-1)
			l.Refused.Add(1)
			go func() {
				if l.Refuse != nil {
					c.SetWriteDeadline(time.Now().Add(time.Second))
					l.Refuse(c)
				}
				c.Close()
			}()
			continue
		}
		return &conn{Conn: c, l: l}, nil
	}
}

// Open is the number of connections open now.
func (l *Listener) Open() int { return int(l.open.Load()) }

type conn struct {
	net.Conn
	l    *Listener
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}

// HTTPRefusal is the Refuse of an HTTP listener: a 503 that says why.
func HTTPRefusal(c net.Conn) {
	const body = "too many connections: this node serves a limited number at once (--max-conns); retry later\n"
	c.Write([]byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: " +
		itoa(len(body)) + "\r\n\r\n" + body))
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
