package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"

	"tide/chord"
)

// Token picking: a joining node's token is the middle of the ring's
// largest range, claimed at the member that owns it.

// errTokenClaimed is a token pickToken chose that another joining node
// claimed first: retryJoin retries, and the next pick, once that node is
// in the ring, is another token.
var errTokenClaimed = errors.New("another node claimed the token first; picking again")

// pickToken picks a joining node's token (halvingToken) and claims it at
// the member that owns it (chord.ClaimID), so that a node joining at the
// same moment, which sees the same ring and picks the same token, is
// refused and picks again once this one is in the ring. chordAddr and
// httpAddr are the node's listeners, from which its Chord address follows.
func (n *Node) pickToken(ctx context.Context, cfg Config, chordAddr, httpAddr string) (chord.ID, error) {
	via, t, err := n.halvingToken(ctx, cfg.Join)
	if err != nil {
		return 0, err
	}
	cfg.ID = &t
	self, _, err := advertised(cfg, n.pos, chordAddr, httpAddr)
	if err != nil {
		return 0, err
	}
	if _, err := chord.ClaimID(ctx, n.rpc, via, self); err != nil {
		if errors.Is(err, chord.ErrIDTaken) {
			if n.refused == nil {
				n.refused = map[chord.ID]bool{}
			}
			n.refused[t] = true
			// Not chord.ErrIDTaken itself, which retryJoin gives up on.
			return 0, fmt.Errorf("%w: token %d: %v", errTokenClaimed, t, err)
		}
		return 0, err
	}
	return t, nil
}

// halvingToken picks a joining node's token: the middle of the largest
// range between consecutive members of the ring it joins, so the new node
// relieves the node that owns the most, instead of landing at random. It
// returns the member join names, too.
func (n *Node) halvingToken(ctx context.Context, join string) (chord.Ref, chord.ID, error) {
	// Explore the ring live from the join node through predecessors and
	// successor lists, so a node that joined a moment ago is seen even
	// before every pointer around it has stabilized.
	start, err := n.rpc.CallRef(ctx, join, "get_info")
	if err != nil {
		return chord.Ref{}, 0, fmt.Errorf("join %s: %w", join, err)
	}
	seen := map[chord.Ref]bool{start: true}
	queue := []chord.Ref{start}
	for len(queue) > 0 && len(seen) < 4096 {
		cur := queue[0]
		queue = queue[1:]
		pred, succs, err := n.rpc.State(ctx, cur, chord.Ref{})
		if err != nil {
			continue
		}
		for _, r := range append(succs, pred) {
			if !r.IsZero() && !seen[r] {
				seen[r] = true
				queue = append(queue, r)
			}
		}
	}
	var tokens []uint32
	for r := range seen {
		tokens = append(tokens, uint32(r.ID))
	}
	slices.Sort(tokens)
	space := uint64(1) << 32
	if n.cfg.Partitioner == "md5-mod10000" {
		space = 10000
	}
	t := halve(tokens, space)
	if n.refused[chord.ID(t)] {
		// Refused before: a node joining at the same moment still holds
		// its claim, or a member the owner lost touch with (crashed, or
		// cut off) holds the token. Either may stay a while, and a member
		// lost for good would refuse it for ever: take a random token in
		// the middle half of the same range instead.
		t = jitter(tokens, space, t)
	}
	return start, chord.ID(t), nil
}

// jitter returns a random token other than mid (halve's pick) within a
// quarter of the largest gap either side of it.
func jitter(tokens []uint32, space uint64, mid uint32) uint32 {
	_, gap := gapOf(tokens, space)
	if gap < 4 {
		return mid
	}
	for {
		off := rand.Uint64N(gap/2) + 1
		t := uint32((uint64(mid) + space - gap/4 + off) % space)
		if t != mid {
			return t
		}
	}
}

// halve returns the midpoint of the largest gap between sorted tokens on a
// ring of the given size.
func halve(tokens []uint32, space uint64) uint32 {
	best, bestGap := gapOf(tokens, space)
	return uint32((best + bestGap/2) % space)
}

// gapOf returns where the largest gap between sorted tokens begins, and
// its size (the whole ring for one token; 0 for none).
func gapOf(tokens []uint32, space uint64) (start, size uint64) {
	for i, t := range tokens {
		next := uint64(tokens[(i+1)%len(tokens)])
		gap := (next + space - uint64(t)) % space
		if gap == 0 {
			gap = space
		}
		if gap > size {
			start, size = uint64(t), gap
		}
	}
	return start, size
}
