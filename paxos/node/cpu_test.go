package node

import "testing"

func TestParseCPUMax(t *testing.T) {
	for in, want := range map[string]float64{"25000 100000\n": 0.25, "max 100000": 0, "-1 100000": 0, "200000 100000": 2, "": 0, "x y": 0} {
		if got := parseCPUMax(in); got != want {
			t.Errorf("parseCPUMax(%q) = %v, want %v", in, got, want)
		}
	}
	before := processCPU()
	x := 0
	for i := range 20_000_000 {
		x += i % 7
	}
	if after := processCPU(); after <= before || x == 0 {
		t.Errorf("CPU time did not grow over a busy loop: %v then %v", before, after)
	}
}
