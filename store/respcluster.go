package store

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Redis Cluster clients (redis-benchmark --cluster, redis-cli -c, the
// cluster clients of go-redis, Jedis, redis-py) learn from CLUSTER NODES or
// CLUSTER SLOTS which node serves each of the 16384 hash slots, and send
// each key to its slot's node. Every tide node coordinates every key, so
// the slot table answered here is a way to spread clients over the
// coordinators, not a placement: the slots are split evenly among the
// members that serve RESP, in token order. A key sent to any node is
// served; no MOVED redirection is ever needed.

const clusterSlots = 16384

type slotRange struct {
	from, to int
	m        member
	id       string
	host     string // of the member's RESP address
	port     int
}

// clusterID is a member's 40-hex-digit node ID, stable for its address.
func clusterID(m member) string {
	sum := sha1.Sum([]byte(m.addrs["peer"]))
	return hex.EncodeToString(sum[:])
}

// slotTable splits the slots among the members with a RESP address.
func (n *Node) slotTable() []slotRange {
	var ms []member
	for _, m := range n.kv.ring.Load().members {
		if m.addrs["resp"] != "" {
			ms = append(ms, m)
		}
	}
	out := make([]slotRange, 0, len(ms))
	for i, m := range ms {
		host, port, _ := net.SplitHostPort(m.addrs["resp"])
		p, _ := strconv.Atoi(port)
		out = append(out, slotRange{from: i * clusterSlots / len(ms), to: (i+1)*clusterSlots/len(ms) - 1, m: m, id: clusterID(m), host: host, port: p})
	}
	return out
}

// keySlot is Redis Cluster's hash slot of key: CRC16 (XMODEM) of the key,
// or of its hash tag (the text between the first { and the next }, when
// not empty), modulo 16384.
func keySlot(key []byte) int {
	if i := strings.IndexByte(string(key), '{'); i >= 0 {
		if j := strings.IndexByte(string(key[i+1:]), '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key)) % clusterSlots
}

func crc16(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc ^= uint16(c) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// execCluster answers CLUSTER subcommands.
func (n *Node) execCluster(args [][]byte) reply {
	if len(args) < 2 {
		return func(w respWriter) { w.err("ERR wrong number of arguments for 'cluster' command") }
	}
	sub := strings.ToUpper(string(args[1]))
	self := n.ring.Self()
	switch sub {
	case "NODES":
		var b strings.Builder
		for i, s := range n.slotTable() {
			flags := "master"
			if s.m.ref == self {
				flags = "myself,master"
			}
			fmt.Fprintf(&b, "%s %s:%d@%d %s - 0 0 %d connected %d-%d\n", s.id, s.host, s.port, s.port, flags, i+1, s.from, s.to)
		}
		out := b.String()
		return func(w respWriter) { w.bulk([]byte(out)) }
	case "SLOTS":
		table := n.slotTable()
		return func(w respWriter) {
			w.array(len(table))
			for _, s := range table {
				w.array(3)
				w.int(int64(s.from))
				w.int(int64(s.to))
				w.array(3)
				w.bulk([]byte(s.host))
				w.int(int64(s.port))
				w.bulk([]byte(s.id))
			}
		}
	case "SHARDS":
		table := n.slotTable()
		return func(w respWriter) {
			w.array(len(table))
			for _, s := range table {
				w.array(4)
				w.bulk([]byte("slots"))
				w.array(2)
				w.int(int64(s.from))
				w.int(int64(s.to))
				w.bulk([]byte("nodes"))
				w.array(1)
				w.array(14)
				w.bulk([]byte("id"))
				w.bulk([]byte(s.id))
				w.bulk([]byte("port"))
				w.int(int64(s.port))
				for _, kv := range [][2]string{{"ip", s.host}, {"endpoint", s.host}, {"role", "master"}} {
					w.bulk([]byte(kv[0]))
					w.bulk([]byte(kv[1]))
				}
				w.bulk([]byte("replication-offset"))
				w.int(0)
				w.bulk([]byte("health"))
				w.bulk([]byte("online"))
			}
		}
	case "INFO":
		table := n.slotTable()
		info := fmt.Sprintf("cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:%d\r\ncluster_slots_ok:%d\r\n"+
			"cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:%d\r\ncluster_size:%d\r\ncluster_current_epoch:%d\r\ncluster_my_epoch:0\r\n",
			clusterSlots, clusterSlots, len(table), len(table), len(table))
		return func(w respWriter) { w.bulk([]byte(info)) }
	case "MYID":
		id := clusterID(member{addrs: n.addrs()})
		return func(w respWriter) { w.bulk([]byte(id)) }
	case "KEYSLOT":
		if len(args) != 3 {
			return func(w respWriter) { w.err("ERR wrong number of arguments for 'cluster|keyslot' command") }
		}
		slot := keySlot(args[2])
		return func(w respWriter) { w.int(int64(slot)) }
	}
	return func(w respWriter) {
		w.err(fmt.Sprintf("ERR unknown subcommand '%s'. tide answers CLUSTER NODES, SLOTS, SHARDS, INFO, MYID and KEYSLOT", string(args[1])))
	}
}
