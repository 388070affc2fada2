package chaos

import (
	"fmt"
	"strings"
	"time"
)

// Workloads every built-in scenario runs: a few clients on a small key
// set, and a few writers overwriting small files.
var (
	smallKV    = &KV{Clients: 4, KeysPerClient: 3}
	smallFiles = &Files{Clients: 2, Names: 4, Size: 64 << 10}
	smallLog   = &Log{Clients: 4, KeysPerClient: 2, Shared: 2}
)

// Scenarios are the built-in scenarios, in the order `tide chaos` runs
// them. Their times are the small version's; Options.Scale stretches
// them.
var Scenarios = []Scenario{
	{
		Name: "partition", About: "a replica cut off the network, then back",
		Nodes: 4, Duration: 16 * time.Second, KV: smallKV, Files: smallFiles,
		Steps: []Step{{At: 3 * time.Second, Fault: Partition("n2"), For: 7 * time.Second}},
	},
	{
		Name: "pause", About: "a replica frozen (docker pause), then thawed",
		Nodes: 4, Duration: 16 * time.Second, KV: smallKV, Files: smallFiles,
		Steps: []Step{{At: 3 * time.Second, Fault: Pause("n3"), For: 7 * time.Second}},
	},
	{
		Name: "kill", About: "kill -9 of a replica, started again on its data; a graceful restart of another",
		Nodes: 4, Duration: 18 * time.Second, KV: smallKV, Files: smallFiles,
		// Once found a KV history porcupine rejected: a crashed member
		// stopped counting in the ring views at once (fixed; see
		// kv.Node.MemberLeft and sim's TestKVRingFollowsFailures).
		// Seen again in a clean-clone make test at 46793d0 (2026-12-02):
		// for 1.4 s after n4's graceful restart, every read of c0-k0
		// through n2 (killed at 3 s, restarted at 8 s) answered the value
		// n2 held before its kill (219) while writes up to 543 had been
		// acknowledged; nothing acknowledged was lost. Seen again on
		// 2026-12-03, in 2 of 18 runs, after older ring views came to
		// retire only once every member settled on the new view
		// (kv/viewsync.go): reads through n4 right after its restart
		// answered not-found. Cause: a restarted node's first ring walk
		// can find it alone (its join answered with its own stale
		// entry), and that first table opened its KV layer to clients.
		// Fixed: the first table must hold the member the node joined
		// through (store's TestRestartedNodeWaitsForRing). Seen again in a
		// clean-clone make test at 2ff3fe5: a read through n4 right after
		// its restart answered 627, the value of when it went down, while
		// 651 had been acknowledged. Its first table held n1 but was
		// still partial, so the key's preference list named a node that
		// is not its replica, and the read asked that one and n4 itself.
		// Fixed: the first table must also hold every member a walk from
		// the member it joined through finds (store's TestFirstTable).
		// Seen again on 2026-12-04: a read through n4 right after its
		// restart answered 747 while 753 had been acknowledged. n4's join
		// took its own previous incarnation, which n1's lookup still
		// answered, as its successor, so n1's walk too found only n1 and
		// n4 for a moment, and n4's first table passed that check.
		// Fixed: a node that finds itself so takes the next node after it
		// (chord's TestRejoinAfterRestart).
		Steps: []Step{
			{At: 3 * time.Second, Fault: Kill("n2"), For: 5 * time.Second},
			{At: 11 * time.Second, Fault: Restart("n4")},
		},
	},
	{
		Name: "membership", About: "a join while a replica is paused, a graceful leave while another is partitioned",
		Nodes: 4, Duration: 24 * time.Second, KV: smallKV, Files: smallFiles,
		Steps: []Step{
			{At: 2 * time.Second, Fault: Pause("n4"), For: 5 * time.Second},
			{At: 3 * time.Second, Fault: Join()},
			{At: 10 * time.Second, Fault: Partition("n3"), For: 6 * time.Second},
			{At: 11 * time.Second, Fault: Leave("n2")},
		},
	},
	{
		Name: "autoscale", About: "tide's autoscaler adds a node while a replica is cut off, and drains one out while another is killed",
		Nodes: 4, Duration: 30 * time.Second, KV: smallKV, Files: smallFiles,
		Steps: []Step{
			{At: 2 * time.Second, Fault: Partition("n1"), For: 8 * time.Second},
			{At: 3 * time.Second, Fault: ScaleOut()},
			{At: 12 * time.Second, Fault: Kill("n2"), For: 10 * time.Second},
			{At: 13 * time.Second, Fault: ScaleIn("n3")},
		},
	},
	{
		Name: "disk-full", About: "every node's disk (a 32 MiB tmpfs) filled, then freed",
		Nodes: 3, DiskBytes: 32 << 20, Duration: 20 * time.Second, KV: smallKV, Files: smallFiles,
		Steps: []Step{{At: 3 * time.Second, Fault: FillDisk(), For: 10 * time.Second}},
	},
	{
		Name: "disk-enospc", About: "every node's disk (a 32 MiB tmpfs the nodes take for 1 GiB) filled until only the free-space reserve keeps writes from ENOSPC, then freed",
		Nodes: 3, DiskBytes: 32 << 20, Capacity: 1 << 30, Duration: 20 * time.Second, KV: smallKV, Files: smallFiles,
		Steps: []Step{{At: 3 * time.Second, Fault: FillDisk(), For: 10 * time.Second}},
	},
	{
		Name: "log", About: "a tide log (default shape, a container per role): kill -9 of an acceptor, a paused proxy leader, the active leader cut off, a paused replica",
		Duration: 30 * time.Second, Log: smallLog,
		Steps: []Step{
			{At: 3 * time.Second, Fault: Kill("acceptor1"), For: 5 * time.Second},
			{At: 10 * time.Second, Fault: Pause("proxy1"), For: 4 * time.Second},
			{At: 16 * time.Second, Fault: PartitionLeader(), For: 6 * time.Second},
			{At: 24 * time.Second, Fault: Pause("replica2"), For: 3 * time.Second},
		},
	},
	{
		Name: "log-reconfig", About: "the tide log reconfigured while it runs: proxy leaders added while an acceptor is down, an acceptor replaced while a replica is paused, replicas added and removed while the active leader is cut off",
		Duration: 36 * time.Second, Log: smallLog,
		Steps: []Step{
			{At: 2 * time.Second, Fault: Kill("acceptor2"), For: 6 * time.Second},
			{At: 3 * time.Second, Fault: LogScale("proxy-leaders", 3)},
			{At: 11 * time.Second, Fault: Pause("replica1"), For: 5 * time.Second},
			{At: 12 * time.Second, Fault: LogReplace("acceptor3")},
			{At: 21 * time.Second, Fault: PartitionLeader(), For: 6 * time.Second},
			{At: 22 * time.Second, Fault: LogScale("replicas", 3)},
			{At: 28 * time.Second, Fault: LogScale("replicas", 2)},
		},
	},
}

// Select returns the built-in scenarios named in names (all of them if
// names is empty).
func Select(names []string) ([]Scenario, error) {
	if len(names) == 0 {
		return Scenarios, nil
	}
	var out []Scenario
	for _, name := range names {
		found := false
		for _, sc := range Scenarios {
			if sc.Name == name {
				out, found = append(out, sc), true
			}
		}
		if !found {
			var all []string
			for _, sc := range Scenarios {
				all = append(all, sc.Name)
			}
			return nil, fmt.Errorf("chaos: no scenario %q (have %s)", name, strings.Join(all, ", "))
		}
	}
	return out, nil
}
