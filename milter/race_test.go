//go:build race

package milter

// raceEnabled: this test binary runs under the race detector, whose shadow
// memory would swamp a measure of resident memory.
const raceEnabled = true
