package paxos

import (
	"fmt"
	"math/bits"
	"strings"
	"testing"
)

// The tests in this file enumerate every subset of small acceptor groups, as
// etcd's quorum package does. A subset is a bitmask: bit i set means
// Acceptors[i] answered. The largest group has 9 acceptors, so every table
// below has at most 512 entries and every pair loop at most 512*512 steps.

// quorumGroups are the configurations checked exhaustively: majorities of 1 to
// 7 acceptors and every grid shape up to 3x3, plus a single row and column.
func quorumGroups() []Group {
	var gs []Group
	for n := 1; n <= 7; n++ {
		gs = append(gs, Group{Acceptors: testAcceptors(n)})
	}
	for _, s := range [][2]int{{1, 1}, {1, 2}, {2, 1}, {2, 2}, {2, 3}, {3, 2}, {3, 3}, {1, 4}, {4, 1}} {
		gs = append(gs, Group{Acceptors: testAcceptors(s[0] * s[1]), Rows: s[0], Cols: s[1]})
	}
	return gs
}

func testAcceptors(n int) []string {
	as := make([]string, n)
	for i := range as {
		as[i] = fmt.Sprintf("a%d", i)
	}
	return as
}

func groupName(g Group) string {
	if g.Rows == 0 && g.Cols == 0 {
		return fmt.Sprintf("majority-%d", len(g.Acceptors))
	}
	return fmt.Sprintf("grid-%dx%d", g.Rows, g.Cols)
}

// subset is the set of acceptors whose bit is set in mask, as the caller of
// IsReadQuorum and IsWriteQuorum would build it.
func subset(g Group, mask uint) map[string]bool {
	set := make(map[string]bool)
	for i, a := range g.Acceptors {
		if mask&(1<<i) != 0 {
			set[a] = true
		}
	}
	return set
}

// describeMask names the acceptors in mask, for failure messages.
func describeMask(g Group, mask uint) string {
	var names []string
	for i, a := range g.Acceptors {
		if mask&(1<<i) != 0 {
			names = append(names, a)
		}
	}
	return "{" + strings.Join(names, ",") + "}"
}

// oracleRead and oracleWrite decide quorums from the bitmask alone, by a route
// independent of quorum.go: a popcount for majorities, and mask arithmetic on
// row-major positions for grids.
func oracleRead(g Group, mask uint) bool {
	n := len(g.Acceptors)
	if g.Rows == 0 && g.Cols == 0 {
		return 2*bits.OnesCount(mask) > n
	}
	for r := 0; r < g.Rows; r++ {
		row := uint(1)<<g.Cols - 1
		row <<= r * g.Cols
		if mask&row == row {
			return true
		}
	}
	return false
}

func oracleWrite(g Group, mask uint) bool {
	n := len(g.Acceptors)
	if g.Rows == 0 && g.Cols == 0 {
		return 2*bits.OnesCount(mask) > n
	}
	for c := 0; c < g.Cols; c++ {
		var col uint
		for r := 0; r < g.Rows; r++ {
			col |= 1 << (r*g.Cols + c)
		}
		if mask&col == col {
			return true
		}
	}
	return false
}

// quorumTables evaluates IsReadQuorum and IsWriteQuorum on every subset of g.
func quorumTables(g Group) (read, write []bool) {
	size := 1 << len(g.Acceptors)
	read, write = make([]bool, size), make([]bool, size)
	for mask := range uint(size) {
		set := subset(g, mask)
		read[mask] = g.IsReadQuorum(set)
		write[mask] = g.IsWriteQuorum(set)
	}
	return read, write
}

// TestQuorumMatchesOracle compares both predicates with the oracle on every
// subset of every group.
func TestQuorumMatchesOracle(t *testing.T) {
	for _, g := range quorumGroups() {
		t.Run(groupName(g), func(t *testing.T) {
			if err := g.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			full := uint(1)<<len(g.Acceptors) - 1
			// Guard against a vacuous oracle: the whole group must be both
			// kinds of quorum, and nobody neither.
			if !oracleRead(g, full) || !oracleWrite(g, full) || oracleRead(g, 0) || oracleWrite(g, 0) {
				t.Fatalf("oracle is wrong about the full or the empty set")
			}
			read, write := quorumTables(g)
			for mask := range full + 1 {
				if want := oracleRead(g, mask); read[mask] != want {
					t.Fatalf("IsReadQuorum(%s) = %v, want %v", describeMask(g, mask), read[mask], want)
				}
				if want := oracleWrite(g, mask); write[mask] != want {
					t.Fatalf("IsWriteQuorum(%s) = %v, want %v", describeMask(g, mask), write[mask], want)
				}
			}
		})
	}
}

// TestQuorumIntersection checks the property Paxos rests on: every read
// quorum shares an acceptor with every write quorum. It checks every pair of
// subsets, and, as a second route to the same property, that no quorum's
// complement holds a quorum of the other kind.
func TestQuorumIntersection(t *testing.T) {
	pairs := 0
	for _, g := range quorumGroups() {
		t.Run(groupName(g), func(t *testing.T) {
			read, write := quorumTables(g)
			full := uint(1)<<len(g.Acceptors) - 1
			for r := range full + 1 {
				for w := range full + 1 {
					pairs++
					if read[r] && write[w] && r&w == 0 {
						t.Fatalf("read quorum %s and write quorum %s are disjoint", describeMask(g, r), describeMask(g, w))
					}
				}
			}
			for mask := range full + 1 {
				if read[mask] && write[full&^mask] {
					t.Fatalf("read quorum %s leaves write quorum %s", describeMask(g, mask), describeMask(g, full&^mask))
				}
				if write[mask] && read[full&^mask] {
					t.Fatalf("write quorum %s leaves read quorum %s", describeMask(g, mask), describeMask(g, full&^mask))
				}
			}
		})
	}
	t.Logf("checked %d (read, write) subset pairs", pairs)
}

// TestQuorumMonotone checks that adding an acceptor to a quorum leaves a
// quorum; by induction every superset of a quorum is one.
func TestQuorumMonotone(t *testing.T) {
	for _, g := range quorumGroups() {
		t.Run(groupName(g), func(t *testing.T) {
			read, write := quorumTables(g)
			n := len(g.Acceptors)
			for mask := range uint(1) << n {
				for i := range n {
					more := mask | 1<<i
					if read[mask] && !read[more] {
						t.Fatalf("read quorum %s, but not superset %s", describeMask(g, mask), describeMask(g, more))
					}
					if write[mask] && !write[more] {
						t.Fatalf("write quorum %s, but not superset %s", describeMask(g, mask), describeMask(g, more))
					}
				}
			}
		})
	}
}

// TestQuorumIgnoresOutsiders checks that only members marked true count:
// addresses outside the group (including ones that look like members) and
// members marked false never make a quorum.
func TestQuorumIgnoresOutsiders(t *testing.T) {
	outsiders := []string{"", "a99", "A0", "a0 ", " a1", "x"}
	for _, g := range quorumGroups() {
		t.Run(groupName(g), func(t *testing.T) {
			only := make(map[string]bool)
			for _, x := range outsiders {
				only[x] = true
			}
			for _, a := range g.Acceptors {
				only[a] = false
			}
			if g.IsReadQuorum(only) || g.IsWriteQuorum(only) {
				t.Fatalf("outsiders %q and members marked false form a quorum", outsiders)
			}
			n := len(g.Acceptors)
			for mask := range uint(1) << n {
				set := subset(g, mask)
				for i, a := range g.Acceptors {
					if mask&(1<<i) == 0 {
						set[a] = false
					}
				}
				for _, x := range outsiders {
					set[x] = true
				}
				if got, want := g.IsReadQuorum(set), oracleRead(g, mask); got != want {
					t.Fatalf("IsReadQuorum(%s plus outsiders) = %v, want %v", describeMask(g, mask), got, want)
				}
				if got, want := g.IsWriteQuorum(set), oracleWrite(g, mask); got != want {
					t.Fatalf("IsWriteQuorum(%s plus outsiders) = %v, want %v", describeMask(g, mask), got, want)
				}
			}
		})
	}
}

// TestQuorumNilSet checks that a nil set is no quorum.
func TestQuorumNilSet(t *testing.T) {
	for _, g := range quorumGroups() {
		if g.IsReadQuorum(nil) || g.IsWriteQuorum(nil) {
			t.Errorf("%s: nil set is a quorum", groupName(g))
		}
	}
}

func TestQuorumValidate(t *testing.T) {
	tests := []struct {
		name string
		g    Group
		// want is a substring of the error, or empty for a valid group.
		want string
	}{
		{"nil acceptors", Group{}, "no acceptors"},
		{"empty acceptors", Group{Acceptors: []string{}}, "no acceptors"},
		{"empty grid", Group{Rows: 2, Cols: 2}, "no acceptors"},
		{"grid too few", Group{Acceptors: testAcceptors(3), Rows: 2, Cols: 2}, "grid 2x2 needs 4 acceptors, has 3"},
		{"grid too many", Group{Acceptors: testAcceptors(5), Rows: 2, Cols: 2}, "grid 2x2 needs 4 acceptors, has 5"},
		{"grid transposed count", Group{Acceptors: testAcceptors(6), Rows: 3, Cols: 3}, "grid 3x3 needs 9 acceptors, has 6"},
		{"rows only", Group{Acceptors: testAcceptors(2), Rows: 2}, "grid 2x0 needs 0 acceptors, has 2"},
		{"cols only", Group{Acceptors: testAcceptors(3), Cols: 3}, "grid 0x3 needs 0 acceptors, has 3"},
		{"negative grid", Group{Acceptors: testAcceptors(2), Rows: -1, Cols: -2}, "grid -1x-2 has a negative side"},
		{"duplicate acceptor", Group{Acceptors: []string{"a0", "a0", "a1"}}, `acceptor "a0" listed twice`},
		{"majority 1", Group{Acceptors: testAcceptors(1)}, ""},
		{"majority 3", Group{Acceptors: testAcceptors(3)}, ""},
		{"majority 4", Group{Acceptors: testAcceptors(4)}, ""},
		{"majority 5", Group{Acceptors: testAcceptors(5)}, ""},
		{"grid 1x1", Group{Acceptors: testAcceptors(1), Rows: 1, Cols: 1}, ""},
		{"grid 2x3", Group{Acceptors: testAcceptors(6), Rows: 2, Cols: 3}, ""},
		{"grid 3x2", Group{Acceptors: testAcceptors(6), Rows: 3, Cols: 2}, ""},
		{"grid 3x3", Group{Acceptors: testAcceptors(9), Rows: 3, Cols: 3}, ""},
		{"grid 1x4", Group{Acceptors: testAcceptors(4), Rows: 1, Cols: 4}, ""},
		{"grid 4x1", Group{Acceptors: testAcceptors(4), Rows: 4, Cols: 1}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.g.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.want != "" && err == nil:
				t.Fatalf("Validate() = nil, want an error containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
