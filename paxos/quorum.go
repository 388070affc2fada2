package paxos

import "fmt"

// Group is one acceptor group: a set of acceptors with read quorums (for
// phase 1) and write quorums (for phase 2) such that every read quorum
// intersects every write quorum.
type Group struct {
	// Acceptors are the group's addresses. With Rows and Cols zero they form
	// a majority system of 2f+1; otherwise a Rows x Cols grid, row-major.
	Acceptors []string
	Rows      int
	Cols      int
}

// Validate checks the group's shape.
func (g Group) Validate() error {
	if len(g.Acceptors) == 0 {
		return fmt.Errorf("acceptor group has no acceptors")
	}
	if g.Rows < 0 || g.Cols < 0 {
		return fmt.Errorf("grid %dx%d has a negative side", g.Rows, g.Cols)
	}
	seen := map[string]bool{}
	for _, a := range g.Acceptors {
		if seen[a] {
			return fmt.Errorf("acceptor %q listed twice", a)
		}
		seen[a] = true
	}
	if g.Rows != 0 || g.Cols != 0 {
		if g.Rows*g.Cols != len(g.Acceptors) {
			return fmt.Errorf("grid %dx%d needs %d acceptors, has %d", g.Rows, g.Cols, g.Rows*g.Cols, len(g.Acceptors))
		}
	}
	return nil
}

func (g Group) index(a string) int {
	for i, x := range g.Acceptors {
		if x == a {
			return i
		}
	}
	return -1
}

// IsReadQuorum reports whether the acceptors in set form a phase 1 quorum:
// a majority, or one full row of the grid.
func (g Group) IsReadQuorum(set map[string]bool) bool {
	return g.quorum(set, g.Rows, g.Cols, func(line, k int) int { return line*g.Cols + k })
}

// IsWriteQuorum reports whether the acceptors in set form a phase 2 quorum:
// a majority, or one full column of the grid.
func (g Group) IsWriteQuorum(set map[string]bool) bool {
	return g.quorum(set, g.Cols, g.Rows, func(line, k int) int { return k*g.Cols + line })
}

// quorum reports whether set holds a majority (no grid), or every member of
// one of the grid's lines, a line being `length` acceptors at index(line, k).
func (g Group) quorum(set map[string]bool, lines, length int, index func(line, k int) int) bool {
	if g.Rows == 0 {
		return g.count(set) > len(g.Acceptors)/2
	}
	for line := range lines {
		full := true
		for k := range length {
			if !set[g.Acceptors[index(line, k)]] {
				full = false
				break
			}
		}
		if full {
			return true
		}
	}
	return false
}

func (g Group) count(set map[string]bool) int {
	n := 0
	for _, a := range g.Acceptors {
		if set[a] {
			n++
		}
	}
	return n
}
