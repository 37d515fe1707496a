package cpustat

import (
	"testing"
	"time"
)

// Spinning for a while shows up as about that much busy time.
func TestBusyCountsWork(t *testing.T) {
	before, err := Busy()
	if err != nil {
		t.Fatal(err)
	}
	const spin = 300 * time.Millisecond
	for start := time.Now(); time.Since(start) < spin; {
	}
	after, err := Busy()
	if err != nil {
		t.Fatal(err)
	}
	// At least most of the spin (ticks are 10 ms), and not wildly more
	// than every core busy the whole time.
	if d := after - before; d < spin/2 || d > 64*spin {
		t.Errorf("busy time grew by %v over a %v spin", d, spin)
	}
}
