// Command loadgen is bench/workers.py's load generator: handshakes or echo messages against a mux server, over
// SCTP (sctp.go: a raw client that builds its own packets, over UDP as RFC 6951 frames them) or QUIC (quic.go:
// quic-go, built with -tags quicgo). It costs a fraction of the server's CPU per operation, so that on a machine
// whose cores the clients share with the server the server stays the bottleneck (see bench/workers.py).
//
// Build (Debian golang-go; for QUIC also golang-github-lucas-clemente-quic-go-dev):
//
//	cd bench/loadgen && GO111MODULE=off GOPATH=/usr/share/gocode go build -tags quicgo -o /tmp/loadgen .
//
// Usage: loadgen -transport sctp|quic -workload handshake|echo|idle -addr host:port -start-at UNIX -seconds S
// [-concurrency C] [-window W]. Handshakes: C loops of connect and close, each its own UDP socket. Echo: C
// connections set up before -start-at, each with W 64-byte messages in flight (SCTP: W messages on stream 0 of
// one association; QUIC: W streams of one connection, one message in flight on each), counting the echoes. Idle
// (idle.go, quic.go): C connections set up before -start-at and then left alone, for bench/idle_cost.py.
// Only operations completed between -start-at and -start-at + -seconds count. One JSON line on stdout:
//
//	{"ok": N, "failed": F, "cpu_us": U, "retransmits": R}
//
// cpu_us is this process's user + system CPU time within that window. Go runs on one thread (-procs 1): with two,
// the scheduler's hand-offs between them cost more than the work (measured: SCTP echo 20 us per message with two,
// 11 with one). SCTP's echo loop drives all its sockets from one epoll on that thread and lets packets gather for
// -batch between looks when few came: one wake-up per batch, not per packet.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sync/atomic"
	"syscall"
	"time"
)

// messageSize is the echo payload, as bench/workers.py's Python clients send it.
const messageSize = 64

// Run is what a workload needs to know and where it counts.
type Run struct {
	Addr        string
	Concurrency int
	Window      int
	Close       string
	SctpPort    int
	Batch       time.Duration
	Start       time.Time
	Stop        time.Time
	ok          atomic.Int64
	failed      atomic.Int64
	retransmits atomic.Int64
}

// Done counts one operation completed at now, if it falls inside the window.
func (r *Run) Done(now time.Time) {
	if !now.Before(r.Start) && now.Before(r.Stop) {
		r.ok.Add(1)
	}
}

// Over says whether the window has ended.
func (r *Run) Over() bool { return !time.Now().Before(r.Stop) }

func cpuNow() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func main() {
	transport := flag.String("transport", "sctp", "sctp or quic")
	workload := flag.String("workload", "handshake", "handshake, echo or idle")
	addr := flag.String("addr", "127.0.0.1:5000", "the server's UDP address")
	startAt := flag.Float64("start-at", 0, "the window's start, in Unix seconds (0: one second from now)")
	seconds := flag.Float64("seconds", 2, "the window's length")
	concurrency := flag.Int("concurrency", 64, "handshake loops, or echo connections")
	window := flag.Int("window", 4, "echo: messages in flight per connection")
	sctpPort := flag.Int("sctp-port", 7, "the server's SCTP port (mux's sctp_port option), inside UDP")
	batch := flag.Duration("batch", time.Millisecond, "SCTP echo: pause between looks at the sockets when few packets came")
	closeHow := flag.String("close", "shutdown", "SCTP handshakes end with a graceful shutdown or an abort")
	procs := flag.Int("procs", 1, "GOMAXPROCS: one thread runs Go code; a second cost more in hand-offs than it ran")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the window to this file")
	flag.Parse()
	runtime.GOMAXPROCS(*procs)
	// no collections until the heap reaches the limit: a run of a few seconds then seldom pays for any
	debug.SetGCPercent(-1)
	debug.SetMemoryLimit(1 << 30)
	start := time.Now().Add(time.Second)
	if *startAt > 0 {
		start = time.Unix(0, int64(*startAt*1e9))
	}
	run := &Run{
		Addr:        *addr,
		Concurrency: *concurrency,
		Window:      *window,
		Close:       *closeHow,
		SctpPort:    *sctpPort,
		Batch:       *batch,
		Start:       start,
		Stop:        start.Add(time.Duration(*seconds * 1e9)),
	}
	cpu := make(chan time.Duration, 1)
	go func() {
		time.Sleep(time.Until(run.Start))
		if *profile != "" {
			if f, err := os.Create(*profile); err == nil {
				_ = pprof.StartCPUProfile(f)
			}
		}
		begun := cpuNow()
		time.Sleep(time.Until(run.Stop))
		used := cpuNow() - begun
		pprof.StopCPUProfile() // a no-op without a profile
		cpu <- used
	}()
	var err error
	switch *transport + " " + *workload {
	case "sctp handshake":
		err = sctpHandshakes(run)
	case "sctp echo":
		err = sctpEchoes(run)
	case "sctp idle":
		err = sctpIdle(run)
	case "quic handshake":
		err = quicHandshakes(run)
	case "quic echo":
		err = quicEchoes(run)
	case "quic idle":
		err = quicIdle(run)
	default:
		err = fmt.Errorf("unknown transport or workload: %s %s", *transport, *workload)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	used := <-cpu
	out, _ := json.Marshal(map[string]int64{
		"ok":          run.ok.Load(),
		"failed":      run.failed.Load(),
		"cpu_us":      used.Microseconds(),
		"retransmits": run.retransmits.Load(),
	})
	fmt.Println(string(out))
}
