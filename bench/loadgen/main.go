// Command loadgen is bench/workers.py's load generator: handshakes or echo messages against a mux server, over
// SCTP (sctp.go: a raw client that builds its own packets, over UDP as RFC 6951 frames them) or QUIC (quic.go:
// quic-go, built with -tags quicgo). It costs a fraction of the server's CPU per operation, so that on a machine
// whose cores the clients share with the server the server stays the bottleneck (see bench/workers.py).
//
// Build (Debian golang-go; for QUIC also golang-github-lucas-clemente-quic-go-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -tags quicgo -o loadgen ./bench/loadgen
//
// Usage: loadgen -transport sctp|quic -workload handshake|echo -addr host:port -start-at UNIX -seconds S
// [-concurrency C] [-window W]. Handshakes: C loops of connect and close, each its own UDP socket. Echo: C
// connections set up before -start-at, each with W 64-byte messages in flight (SCTP: W messages on stream 0 of
// one association; QUIC: W streams of one connection, one message in flight on each), counting the echoes.
// Only operations completed between -start-at and -start-at + -seconds count. One JSON line on stdout:
//
//	{"ok": N, "failed": F, "cpu_us": U, "retransmits": R}
//
// cpu_us is this process's user + system CPU time within that window.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
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
	workload := flag.String("workload", "handshake", "handshake or echo")
	addr := flag.String("addr", "127.0.0.1:5000", "the server's UDP address")
	startAt := flag.Float64("start-at", 0, "the window's start, in Unix seconds (0: one second from now)")
	seconds := flag.Float64("seconds", 2, "the window's length")
	concurrency := flag.Int("concurrency", 64, "handshake loops, or echo connections")
	window := flag.Int("window", 4, "echo: messages in flight per connection")
	sctpPort := flag.Int("sctp-port", 7, "the server's SCTP port (mux's sctp_port option), inside UDP")
	closeHow := flag.String("close", "shutdown", "SCTP handshakes end with a graceful shutdown or an abort")
	flag.Parse()
	debug.SetGCPercent(400) // fewer collections: the heap stays small either way
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
		Start:       start,
		Stop:        start.Add(time.Duration(*seconds * 1e9)),
	}
	cpu := make(chan time.Duration, 1)
	go func() {
		time.Sleep(time.Until(run.Start))
		begun := cpuNow()
		time.Sleep(time.Until(run.Stop))
		cpu <- cpuNow() - begun
	}()
	var err error
	switch *transport + " " + *workload {
	case "sctp handshake":
		err = sctpHandshakes(run)
	case "sctp echo":
		err = sctpEchoes(run)
	case "quic handshake":
		err = quicHandshakes(run)
	case "quic echo":
		err = quicEchoes(run)
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
