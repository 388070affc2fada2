//go:build race

package sim

// raceEnabled: the race detector slows the simulations about tenfold.
const raceEnabled = true
