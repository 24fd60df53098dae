package proc

import (
	"os"
	"testing"
	"time"
)

// TestCPU: this process's CPU time grows as it works; pid 0 is none; a missing process is an error.
func TestCPU(t *testing.T) {
	before, err := CPU(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	for deadline := time.Now().Add(100 * time.Millisecond); time.Now().Before(deadline); { // burn 100 ms
	}
	after, err := CPU(os.Getpid())
	if err != nil || after <= before {
		t.Fatalf("CPU before %v, after %v, %v", before, after, err)
	}
	if d, err := CPU(0); d != 0 || err != nil {
		t.Fatalf("pid 0: %v, %v", d, err)
	}
	if _, err := CPU(1 << 30); err == nil {
		t.Fatal("a process that does not exist has a CPU time")
	}
}
