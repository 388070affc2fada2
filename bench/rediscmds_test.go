package bench

import "testing"

func TestParseBenchCSV(t *testing.T) {
	out := "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n" +
		"\"SET key:__rand_int__ x NX\",\"22222.22\",\"0.375\",\"0.024\",\"0.079\",\"0.151\",\"4.759\",\"38.463\"\n"
	rps, p50, p99, err := parseBenchCSV([]byte(out))
	if err != nil || rps != 22222.22 || p50 != 0.079 || p99 != 4.759 {
		t.Fatalf("got %v %v %v %v", rps, p50, p99, err)
	}
	if _, _, _, err := parseBenchCSV([]byte("Could not connect to Redis at 127.0.0.1:1: Connection refused\n")); err == nil {
		t.Fatal("no error for output without results")
	}
}
