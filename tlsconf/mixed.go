package tlsconf

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"
)

// FirstByteTimeout bounds how long a mixed listener waits for a new
// connection's first byte, from which it tells TLS from plain text.
const FirstByteTimeout = 10 * time.Second

// Mixed wraps ln so that one port serves TLS and plain text: a connection
// whose first byte opens a TLS handshake (0x16) is served as TLS with
// cfg (a *tls.Conn, whose peer Verified tells apart), any other as it is.
// The seed's clients (msgpack-rpc scripts, curl on http://) keep working
// beside tide's own mutual TLS. A nil Config returns ln.
func (c *Config) Mixed(ln net.Listener, cfg *tls.Config) net.Listener {
	if c == nil {
		return ln
	}
	m := &mixed{Listener: ln, cfg: cfg, ch: make(chan net.Conn), done: make(chan struct{})}
	go m.loop()
	return m
}

type mixed struct {
	net.Listener
	cfg  *tls.Config
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	mu   sync.Mutex
	err  error // the inner listener's, once it failed
}

func (m *mixed) loop() {
	for {
		c, err := m.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			m.mu.Lock()
			m.err = err
			m.mu.Unlock()
			m.Close()
			return
		}
		go m.classify(c)
	}
}

func (m *mixed) classify(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(FirstByteTimeout))
	br := bufio.NewReaderSize(c, 512)
	b, err := br.Peek(1)
	if err != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	var out net.Conn = &peeked{Conn: c, r: br}
	if b[0] == 0x16 {
		out = tls.Server(out, m.cfg)
	}
	select {
	case m.ch <- out:
	case <-m.done:
		c.Close()
	}
}

func (m *mixed) Accept() (net.Conn, error) {
	select {
	case c := <-m.ch:
		return c, nil
	case <-m.done:
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.err != nil && !errors.Is(m.err, net.ErrClosed) {
			return nil, m.err
		}
		return nil, net.ErrClosed
	}
}

func (m *mixed) Close() error {
	var err error
	m.once.Do(func() {
		close(m.done)
		err = m.Listener.Close()
	})
	return err
}

// peeked is a connection whose first bytes sit in a reader.
type peeked struct {
	net.Conn
	r *bufio.Reader
}

func (p *peeked) Read(b []byte) (int, error) {
	if p.r.Buffered() > 0 {
		return p.r.Read(b)
	}
	return p.Conn.Read(b)
}

// TCPConn lets callers reach the socket under the peeked bytes.
func (p *peeked) NetConn() net.Conn { return p.Conn }
