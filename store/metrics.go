package store

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"tide/kv"
)

// metrics are one node's Prometheus series. Each node has its own registry
// so several nodes can share a process in tests.
type metrics struct {
	reg          *prometheus.Registry
	rpcReceived  *prometheus.CounterVec
	authFailures *prometheus.CounterVec
	rpcSent      *prometheus.CounterVec
	requests     *prometheus.CounterVec
	pushed       prometheus.Counter
	dropped      prometheus.Counter
	repairRuns   prometheus.Counter
	replFailures prometheus.Counter
	// standIns counts uploads stored standing in for an unreachable owner.
	standIns prometheus.Counter
	// readsResumed counts relayed reads finished from another copy.
	readsResumed prometheus.Counter
	// kvSync times the KV write-ahead log's fsyncs (group commits).
	kvSync prometheus.Histogram
	// kvRound counts the messages each round of the KV driver stepped.
	kvRound prometheus.Histogram
	// latency times client requests: api "kv" (reads and writes this node
	// coordinated, over HTTP or RESP) and "files".
	latency *prometheus.HistogramVec
	// waits counts the writes POST /kv-wait waited for, by how: "mark"
	// (another region's watermark passed it), "read" (reads at quorum).
	waits       *prometheus.CounterVec
	kvLatency   prometheus.Observer
	fileLatency prometheus.Observer
}

func newMetrics(n *Node) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.rpcReceived = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tide_chord_rpc_received_total", Help: "Chord RPC requests received, by method.",
	}, []string{"method"})
	m.authFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tide_auth_failures_total", Help: "Requests refused for missing or wrong credentials, by protocol (http, resp).",
	}, []string{"proto"})
	m.rpcSent = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tide_chord_rpc_sent_total", Help: "Chord RPC requests sent, by method.",
	}, []string{"method"})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tide_http_requests_total", Help: "File service requests, by operation and status code.",
	}, []string{"op", "code"})
	m.pushed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tide_repair_files_pushed_total", Help: "Files and tombstones copied to other nodes by repair and migration.",
	})
	m.dropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tide_repair_files_dropped_total", Help: "Local copies removed after being handed to their new owners.",
	})
	m.repairRuns = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tide_repair_runs_total", Help: "Repair passes over the local files.",
	})
	m.replFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tide_replication_failures_total", Help: "Replica writes that failed during an upload.",
	})
	m.standIns = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tide_files_stand_ins_total", Help: "Uploads and deletes this node stored standing in for their owner, which the node they were sent to could not reach.",
	})
	m.readsResumed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tide_files_reads_resumed_total", Help: "Reads this node relayed whose sender stopped part way, finished from another node's copy of the same version.",
	})
	m.kvSync = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "tide_kv_wal_sync_seconds",
		Help:    "KV write-ahead log fsyncs (each a group commit of the rounds committed while the last one ran), by duration.",
		Buckets: prometheus.ExponentialBuckets(50e-6, 2, 14), // 50µs to 0.4s
	})
	m.kvRound = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "tide_kv_round_messages",
		Help:    "Messages (client requests, peers' requests and answers) each round of the KV driver stepped before persisting and sending.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 8), // 1 to 16384
	})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tide_request_duration_seconds",
		Help:    "Client requests this node served, by API (kv: reads and writes it coordinated, over HTTP or RESP; files: the file service), by duration.",
		Buckets: prometheus.ExponentialBuckets(100e-6, 2, 17), // 100µs to 6.5s
	}, []string{"api"})
	m.waits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tide_kv_waits_total",
		Help: "Writes POST /kv-wait (antipode's barriers) waited for, by how the wait was answered: mark (the write's origin's replication watermark passed it, with no read) or read (reads at the region's quorum: no origin given, or no moving watermark of it).",
	}, []string{"how"})
	m.kvLatency, m.fileLatency = m.latency.WithLabelValues("kv"), m.latency.WithLabelValues("files")
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	// kvCounter is a counter read from the KV layer's stats (0 until it runs).
	kvCounter := func(name, help string, f func(kv.Stats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 {
			if n.kv == nil {
				return 0
			}
			return f(n.kv.Stats())
		})
	}
	m.reg.MustRegister(m.rpcReceived, m.authFailures, m.rpcSent, m.requests, m.pushed, m.dropped, m.repairRuns, m.replFailures, m.standIns, m.readsResumed, m.kvSync, m.kvRound, m.latency, m.waits,
		newRegionCollector(n), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		gauge("tide_disk_used_bytes", "Bytes used: stored file bytes with --capacity, else the filesystem's used bytes.",
			func() float64 { u, _ := n.files.Disk(); return float64(u) }),
		gauge("tide_disk_capacity_bytes", "Capacity: --capacity, else the filesystem's size.",
			func() float64 { _, c := n.files.Disk(); return float64(c) }),
		gauge("tide_disk_used_percent", "Used bytes as a percentage of capacity.",
			func() float64 {
				u, c := n.files.Disk()
				if c == 0 {
					return 0
				}
				return 100 * float64(u) / float64(c)
			}),
		kvCounter("tide_kv_requests_total", "KV reads and writes this node coordinated.",
			func(st kv.Stats) float64 { return float64(st.Reads + st.Writes) }),
		gauge("tide_kv_hints_held", "KV writes held for replicas that did not acknowledge them (hinted hand-off), awaiting delivery.",
			func() float64 { return float64(n.eng.HintCount()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tide_kv_rounds_committed_total", Help: "Rounds of the KV driver that wrote to storage (one storage batch each); their fsyncs are shared, see tide_kv_wal_sync_seconds."},
			func() float64 {
				if n.kv == nil {
					return 0
				}
				return float64(n.kv.Committed())
			}),
		kvCounter("tide_kv_resends_total", "KV requests this node coordinated and sent to a replica again because it had not answered within 200 ms (then 400 ms, 800 ms, ...).",
			func(st kv.Stats) float64 { return float64(st.Resends) }),
		kvCounter("tide_kv_hints_delivered_total", "Held KV hints delivered to their replicas.",
			func(st kv.Stats) float64 { return float64(st.HintsDelivered) }),
		kvCounter("tide_kv_hints_dropped_total", "Held KV hints dropped because their replica had been out of the ring for 5 minutes (it left, was removed, or crashed and was dropped); current replicas converge by anti-entropy.",
			func(st kv.Stats) float64 { return float64(st.HintsDropped) }),
		kvCounter("tide_kv_cas_ops_total", "Conditional writes and counters (SET NX, INCR, ...) this node ran Paxos for as their key's leader.",
			func(st kv.Stats) float64 { return float64(st.CasOps) }),
		kvCounter("tide_kv_cas_writes_total", "Values chosen by this node's lightweight transactions and written to the key's replicas.",
			func(st kv.Stats) float64 { return float64(st.CasWrites) }),
		kvCounter("tide_kv_cas_retries_total", "Ballots of this node's lightweight transactions refused by a replica that had promised a higher one (contention between leaders).",
			func(st kv.Stats) float64 { return float64(st.CasRetries) }),
		kvCounter("tide_kv_cas_leaders_suspected_total", "Times this node forwarded a conditional op to its key's leader, heard nothing back in time, and turned to the next replica.",
			func(st kv.Stats) float64 { return float64(st.LeadersSuspected) }),
		gauge("tide_kv_ring_views", "Ring views this node's KV quorums must be met in: 1, or more while a membership change is in transition (older views retire once every member runs with the new one and its data has moved).",
			func() float64 {
				if n.kv == nil {
					return 0
				}
				return float64(n.kv.Stats().Views)
			}),
		gauge("tide_kv_ring_transition", "How far this node's transition to its current ring view has come: 0 until every member runs with it, 1 once they do, 2 once this node has handed its data off and compared its primary range with its replicas, 3 once every member has (the older views then retire).",
			func() float64 {
				if n.kv == nil {
					return 0
				}
				return float64(n.kv.Stats().Transition)
			}),
		gauge("tide_kv_requests_held", "KV requests this node holds until every member of the ring has told it the views it runs with (after it starts or joins, it coordinates nothing until then).",
			func() float64 {
				if n.kv == nil {
					return 0
				}
				return float64(n.kv.Stats().Held)
			}),
		kvCounter("tide_kv_hints_rerouted_total", "Held KV hints for a replica that announced its leave, held instead for the key's current replicas (delivered to the leaving node, they would refill it as it empties).",
			func(st kv.Stats) float64 { return float64(st.HintsRerouted) }),
		hintsPending{n},
		gauge("tide_storage_free_bytes", "Free bytes on the filesystem of this node's data directory.",
			func() float64 { return float64(n.eng.FreeBytes()) }),
		gauge("tide_storage_reserve_bytes", "Free space below which this node refuses writes (--disk-reserve).",
			func() float64 { return float64(n.eng.DiskReserve()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tide_storage_writes_refused_total", Help: "Writes (files, KV from clients and replicas) refused because free disk space was below the reserve."},
			func() float64 { return float64(n.eng.WritesRefused()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tide_storage_write_stalls_total", Help: "Times the storage engine held writes back because flushes or compactions fell behind."},
			func() float64 { return float64(n.eng.Stalls()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tide_storage_write_stall_seconds_total", Help: "Seconds writes were held back by storage write stalls."},
			func() float64 { return n.eng.StallTime().Seconds() }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tide_kv_ingested_bytes_total", Help: "KV record bytes from range streams and hand-offs written as sstables and ingested, bypassing the write-ahead log and compactions."},
			func() float64 { return float64(n.eng.Ingested()) }),
		kvCounter("tide_kv_tombstones_collected_total", "KV delete tombstones removed after --tombstone-ttl.",
			func(st kv.Stats) float64 { return float64(st.TombstonesCollected) }),
		kvCounter("tide_kv_pushed_bytes_total", "KV record bytes this node sent to other replicas: range streams to nodes that lacked a range, anti-entropy repairs and hand-offs.",
			func(st kv.Stats) float64 { return float64(st.PushedBytes) }),
		kvCounter("tide_kv_range_streams_abandoned_total", "KV range streams this node gave up because a chunk went unacknowledged for 10 anti-entropy periods; the next comparison sends what is still missing.",
			func(st kv.Stats) float64 { return float64(st.RangesAbandoned) }),
		kvCounter("tide_kv_version_cache_hits_total", "KV writes whose version was compared with the one held from the version cache (--version-cache), without reading storage.",
			func(st kv.Stats) float64 { return float64(st.VersionHits) }),
		kvCounter("tide_kv_version_cache_misses_total", "KV writes that read storage to compare versions: the key was not in the version cache.",
			func(st kv.Stats) float64 { return float64(st.VersionMisses) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tide_kv_inbound_dropped_total", Help: "KV messages from peers dropped because this node's queue for them was full (client and replication traffic, or anti-entropy and hand-off); the senders' retries and anti-entropy recover them."},
			func() float64 {
				if n.kv == nil {
					return 0
				}
				return float64(n.kv.Dropped())
			}),
		gauge("tide_storage_compaction_debt_bytes", "Bytes the storage engine estimates it must compact to bring its levels back into shape (high after a bulk load).",
			func() float64 { return float64(n.eng.Compactions().EstimatedDebt) }),
		gauge("tide_storage_compactions_running", "Storage compactions under way.",
			func() float64 { return float64(n.eng.Compactions().NumInProgress) }),
		gauge("tide_kv_keys", "Live KV keys stored on this node (the copies it holds as one of each key's N replicas).",
			func() float64 { k, _ := n.eng.KVCount(); return float64(k) }),
		gauge("tide_store_files", "Live files stored on this node (owned and replicas).",
			func() float64 { return float64(n.eng.Files()) }),
		gauge("tide_store_bytes", "Bytes of live files stored on this node.",
			func() float64 { return float64(n.eng.Used()) }),
	)
	return m
}

// hintsPending reports the KV hints held for each target node, read from
// storage at every scrape.
type hintsPending struct{ n *Node }

var hintsPendingDesc = prometheus.NewDesc("tide_kv_hints_pending",
	"KV writes held for a replica that did not acknowledge them (hinted hand-off), by target node's peer address.", []string{"target"}, nil)

func (h hintsPending) Describe(ch chan<- *prometheus.Desc) { ch <- hintsPendingDesc }

func (h hintsPending) Collect(ch chan<- prometheus.Metric) {
	if h.n.eng == nil {
		return
	}
	for t, k := range h.n.eng.HintsByTarget() {
		ch <- prometheus.MustNewConstMetric(hintsPendingDesc, prometheus.GaugeValue, float64(k), t)
	}
}
