// Package cpustat reads how busy the whole machine has been, for benchmarks
// whose work is spread over processes (Postfix, a milter, clients): their
// CPU time per operation is the machine's, not one process's.
package cpustat

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Busy returns the CPU time all cores have spent on anything but idling or
// waiting for I/O since boot, from the first line of /proc/stat. Differences
// between two calls are what counts.
func Busy() (time.Duration, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("cpustat: %w", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(fields) < 8 || fields[0] != "cpu" {
		return 0, fmt.Errorf("cpustat: unexpected first line of /proc/stat: %q", line)
	}
	var ticks int64
	for i, f := range fields[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpustat: /proc/stat: %q: %w", line, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / 100, nil // USER_HZ is 100 on Linux
}
