package servertest

import (
	"os"
	"runtime/pprof"
	"syscall"
	"testing"
	"time"
)

// FanOut is the measured part of a fan-out benchmark whose receivers are already running: send
// sends one message, wait blocks until every receiver has it and returns how many responses that
// took, and got is where the receivers report (drained of stray responses between the warm-up and
// the clock). It sends 5 messages to warm up (caches, presence of everyone coming online, and its
// background work), then b.N timed ones, and reports the process's CPU time per message and per
// response, which other work on the machine changes much less than the wall time. cpuProfile,
// when set, is a file for a CPU profile of the timed part; around, when set, runs just before
// and just after it (say, to write allocation profiles).
func FanOut(b *testing.B, send func() error, wait func() int, got <-chan int, cpuProfile string, around func(after bool)) {
	for range 5 {
		if err := send(); err != nil {
			b.Fatal(err)
		}
		wait()
	}
	drain := time.After(3 * time.Second)
	for done := false; !done; {
		select {
		case <-got:
		case <-drain:
			done = true
		}
	}
	responses := 0
	cpu0 := processCPU()
	b.ResetTimer()
	if cpuProfile != "" {
		pf, err := os.Create(cpuProfile)
		if err != nil {
			b.Fatal(err)
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	if around != nil {
		around(false)
	}
	for range b.N {
		if err := send(); err != nil {
			b.Fatal(err)
		}
		responses += wait()
	}
	b.StopTimer()
	if around != nil {
		around(true)
	}
	cpu := processCPU() - cpu0
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N)/1000, "cpu-ms/msg")
	b.ReportMetric(float64(cpu.Microseconds())/float64(responses), "cpu-µs/resp")
	b.ReportMetric(float64(responses)/float64(b.N), "resp/msg")
}

// processCPU is the CPU time the process used so far (user and system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
