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
		// Seen once, in a clean-clone make test at 8e5781b (2026-12-02):
		// no acknowledged write lost, but porcupine found the KV history
		// not linearizable (4,825 of 4,838 operations acknowledged).
		Open: "a kill -9 of a replica and a restart of another once left a KV history porcupine found not linearizable; the cause, reproduced by sim's TestKVRingFollowsFailures: a member the ring walk drops (crashed) stops counting in every ring view at once, so a write it and one other replica acknowledged can be missed by a read of the new preference list",
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
		Name: "disk-full", About: "every node's disk (a 32 MiB tmpfs) filled, then freed",
		Nodes: 3, DiskBytes: 32 << 20, Duration: 20 * time.Second, KV: smallKV, Files: smallFiles,
		Steps: []Step{{At: 3 * time.Second, Fault: FillDisk(), For: 10 * time.Second}},
	},
	{
		Name: "disk-enospc", About: "every node's disk (a 32 MiB tmpfs the nodes take for 1 GiB) filled until only the free-space reserve keeps writes from ENOSPC, then freed",
		Nodes: 3, DiskBytes: 32 << 20, Capacity: 1 << 30, Duration: 20 * time.Second, KV: smallKV, Files: smallFiles,
		Steps: []Step{{At: 3 * time.Second, Fault: FillDisk(), For: 10 * time.Second}},
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
