// Package sockopt gives every connection one node dials to another the
// same bound on how long its data may go unacknowledged.
//
// TCP resends unacknowledged data at doubling intervals: after a
// partition of 8 s, the next resend may come 5 s after the network
// healed, and every request queued behind it on the connection waits as
// long. A connection dialled here is dropped by the kernel once data it
// sent has gone unacknowledged for UnackedLimit (TCP_USER_TIMEOUT, on
// Linux), and its owner redials, as for any failed connection.
package sockopt

import (
	"net"
	"time"
)

// UnackedLimit is how long a dialled connection's data may go
// unacknowledged before the connection is dropped. An RTT or a peer's
// pause far below it costs nothing; a peer silent for longer is a peer
// whose requests have timed out anyway.
const UnackedLimit = time.Second

// Dialer returns a dialer that gives up after timeout and sets
// UnackedLimit on the connections it makes.
func Dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, Control: control}
}
