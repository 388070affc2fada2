package bench

import (
	"math"
	"slices"
)

func log2(x float64) float64 { return math.Log2(x) }

// Percentile returns the p-th percentile of xs (nearest rank).
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}
