// Package rpc carries Chord over MessagePack-RPC on TCP, the wire contract of
// the seed system: a request is [0, msgid, method, [params]], a response is
// [1, msgid, error, result], a notification is [2, method, [params]], and a
// node is [ip, port, id].
package rpc

import (
	"bufio"
	"errors"
	"fmt"
	"math"

	"github.com/vmihailenco/msgpack/v5"

	"tide/chord"
	"tide/wire"
)

// MaxMessage bounds one decoded message. Chord messages are tiny; the bound
// keeps garbage on the port from costing memory or stack.
const MaxMessage = 64 << 10

const (
	typeRequest      = 0
	typeResponse     = 1
	typeNotification = 2
)

// ErrBadMessage wraps every malformed-input error.
var ErrBadMessage = errors.New("bad msgpack-rpc message")

// message is a decoded msgpack-rpc envelope.
type message struct {
	Type   int
	ID     uint32
	Method string
	Params []any
	Error  any
	Result any
}

// parseMessage checks the shape of a decoded value and returns the message
// it carries.
func parseMessage(v any) (message, error) {
	arr, ok := v.([]any)
	if !ok || len(arr) < 3 {
		return message{}, fmt.Errorf("%w: not an array of 3 or 4 elements", ErrBadMessage)
	}
	t, ok := asInt(arr[0])
	if !ok {
		return message{}, fmt.Errorf("%w: message type is not an integer", ErrBadMessage)
	}
	m := message{Type: int(t)}
	switch t {
	case typeRequest:
		if len(arr) != 4 {
			return m, fmt.Errorf("%w: request has %d elements, want 4", ErrBadMessage, len(arr))
		}
		id, ok := asInt(arr[1])
		if !ok || id < 0 || id > math.MaxUint32 {
			return m, fmt.Errorf("%w: bad msgid", ErrBadMessage)
		}
		m.ID = uint32(id)
		if m.Method, ok = asString(arr[2]); !ok {
			return m, fmt.Errorf("%w: method is not a string", ErrBadMessage)
		}
		m.Params, ok = asParams(arr[3])
		if !ok {
			return m, fmt.Errorf("%w: params is not an array", ErrBadMessage)
		}
	case typeResponse:
		if len(arr) != 4 {
			return m, fmt.Errorf("%w: response has %d elements, want 4", ErrBadMessage, len(arr))
		}
		id, ok := asInt(arr[1])
		if !ok || id < 0 || id > math.MaxUint32 {
			return m, fmt.Errorf("%w: bad msgid", ErrBadMessage)
		}
		m.ID = uint32(id)
		m.Error, m.Result = arr[2], arr[3]
	case typeNotification:
		if len(arr) != 3 {
			return m, fmt.Errorf("%w: notification has %d elements, want 3", ErrBadMessage, len(arr))
		}
		if m.Method, ok = asString(arr[1]); !ok {
			return m, fmt.Errorf("%w: method is not a string", ErrBadMessage)
		}
		if m.Params, ok = asParams(arr[2]); !ok {
			return m, fmt.Errorf("%w: params is not an array", ErrBadMessage)
		}
	default:
		return m, fmt.Errorf("%w: unknown message type %d", ErrBadMessage, t)
	}
	return m, nil
}

func asParams(v any) ([]any, bool) {
	if v == nil {
		return nil, true
	}
	p, ok := v.([]any)
	return p, ok
}

// asInt accepts every msgpack integer width, signed or not.
func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int8:
		return int64(x), true
	case int16:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	case int:
		return int64(x), true
	case uint8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case uint64:
		if x > math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	case uint:
		return int64(x), true
	}
	return 0, false
}

// asString accepts both str and bin, since older msgpack clients send
// strings as raw bytes.
func asString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case []byte:
		return string(x), true
	}
	return "", false
}

// EncodeRef renders a node as [ip, port, id].
func EncodeRef(r chord.Ref) []any {
	return []any{r.IP, r.Port, uint32(r.ID)}
}

// DecodeRef parses [ip, port, id].
func DecodeRef(v any) (chord.Ref, error) {
	arr, ok := v.([]any)
	if !ok || len(arr) != 3 {
		return chord.Ref{}, fmt.Errorf("%w: node is not [ip, port, id]", ErrBadMessage)
	}
	ip, ok := asString(arr[0])
	if !ok {
		return chord.Ref{}, fmt.Errorf("%w: node ip is not a string", ErrBadMessage)
	}
	port, ok := asInt(arr[1])
	if !ok || port < 0 || port > 65535 {
		return chord.Ref{}, fmt.Errorf("%w: node port out of range", ErrBadMessage)
	}
	id, ok := asInt(arr[2])
	if !ok || id < 0 || id > math.MaxUint32 {
		return chord.Ref{}, fmt.Errorf("%w: node id is not a 32-bit unsigned integer", ErrBadMessage)
	}
	if ip == "" && port == 0 {
		return chord.Ref{}, nil
	}
	if ip == "" || port == 0 {
		return chord.Ref{}, fmt.Errorf("%w: node has an empty ip or port", ErrBadMessage)
	}
	return chord.Ref{IP: ip, Port: int(port), ID: chord.ID(id)}, nil
}

// DecodeRefs parses an array of nodes.
func DecodeRefs(v any) ([]chord.Ref, error) {
	arr, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: not an array of nodes", ErrBadMessage)
	}
	out := make([]chord.Ref, 0, len(arr))
	for _, x := range arr {
		r, err := DecodeRef(x)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func encodeRefs(rs []chord.Ref) []any {
	out := make([]any, len(rs))
	for i, r := range rs {
		out[i] = EncodeRef(r)
	}
	return out
}

// decodeFrame decodes a frame read by readFrame.
func decodeFrame(frame []byte) (any, error) {
	var v any
	if err := msgpack.Unmarshal(frame, &v); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	return v, nil
}

// readMessage reads and decodes the next message from a stream.
func readMessage(r *bufio.Reader) (any, error) {
	frame, err := wire.ReadValue(r, MaxMessage)
	if err != nil {
		if errors.Is(err, wire.ErrBad) {
			err = fmt.Errorf("%w: %v", ErrBadMessage, err)
		}
		return nil, err
	}
	return decodeFrame(frame)
}
