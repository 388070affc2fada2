// The CLUSTER commands, for Redis Cluster clients.

package resp

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

// HashSlots is the number of Redis Cluster hash slots.
const HashSlots = 16384

type slotRange struct {
	from, to int
	m        Member
	id       string
	host     string // of the member's RESP address
	port     int
}

// clusterID is the 40-hex-digit node ID of the node with KV peer address
// peer, stable for its address.
func clusterID(peer string) string {
	sum := sha1.Sum([]byte(peer))
	return hex.EncodeToString(sum[:])
}

// slotTable splits the slots among the members with a RESP address.
func (srv *Server) slotTable() []slotRange {
	ms := srv.kv.Members()
	out := make([]slotRange, 0, len(ms))
	for i, m := range ms {
		host, port, _ := net.SplitHostPort(m.RESPAddr)
		p, _ := strconv.Atoi(port)
		out = append(out, slotRange{from: i * HashSlots / len(ms), to: (i+1)*HashSlots/len(ms) - 1, m: m, id: clusterID(m.PeerAddr), host: host, port: p})
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
	return int(crc16(key)) % HashSlots
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
func (srv *Server) execCluster(args [][]byte) reply {
	if len(args) < 2 {
		return func(w writer) { w.err("ERR wrong number of arguments for 'cluster' command") }
	}
	sub := strings.ToUpper(string(args[1]))
	switch sub {
	case "NODES":
		var b strings.Builder
		for i, s := range srv.slotTable() {
			flags := "master"
			if s.m.Self {
				flags = "myself,master"
			}
			fmt.Fprintf(&b, "%s %s:%d@%d %s - 0 0 %d connected %d-%d\n", s.id, s.host, s.port, s.port, flags, i+1, s.from, s.to)
		}
		out := b.String()
		return func(w writer) { w.bulk([]byte(out)) }
	case "SLOTS":
		table := srv.slotTable()
		return func(w writer) {
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
		table := srv.slotTable()
		return func(w writer) {
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
		table := srv.slotTable()
		info := fmt.Sprintf("cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:%d\r\ncluster_slots_ok:%d\r\n"+
			"cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:%d\r\ncluster_size:%d\r\ncluster_current_epoch:%d\r\ncluster_my_epoch:0\r\n",
			HashSlots, HashSlots, len(table), len(table), len(table))
		return func(w writer) { w.bulk([]byte(info)) }
	case "MYID":
		id := clusterID(srv.cfg.PeerAddr)
		return func(w writer) { w.bulk([]byte(id)) }
	case "KEYSLOT":
		if len(args) != 3 {
			return func(w writer) { w.err("ERR wrong number of arguments for 'cluster|keyslot' command") }
		}
		slot := keySlot(args[2])
		return func(w writer) { w.int(int64(slot)) }
	}
	return func(w writer) {
		w.err(fmt.Sprintf("ERR unknown subcommand '%s'. tide answers CLUSTER NODES, SLOTS, SHARDS, INFO, MYID and KEYSLOT", string(args[1])))
	}
}
