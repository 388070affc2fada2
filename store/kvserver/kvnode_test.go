package kvserver

import (
	"context"
	"errors"
	"strings"
	"testing"

	"tide/kv"
)

// TestGaveUpWriteOutcome: a write the caller stopped waiting for after the
// coordinator took it may still take effect, and its error says so; a read
// given up on is just that.
func TestGaveUpWriteOutcome(t *testing.T) {
	err := gaveUp(kv.Message{Kind: kv.KindClientPut}, context.DeadlineExceeded)
	if !errors.Is(err, ErrQuorum) || !strings.Contains(err.Error(), "outcome unknown") {
		t.Fatalf("write given up on: %v, want an unknown outcome", err)
	}
	if err := gaveUp(kv.Message{Kind: kv.KindClientGet}, context.DeadlineExceeded); err != context.DeadlineExceeded {
		t.Fatalf("read given up on: %v", err)
	}
}
