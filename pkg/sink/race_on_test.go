//go:build race

package sink

// raceDetector reports whether the tests run under -race.
const raceDetector = true
