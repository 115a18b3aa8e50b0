package main

// The idle workload: -concurrency SCTP associations, set up before the window and then left idle: each answers
// the server's HEARTBEATs and nothing else, so what the server spends on them is its idle cost
// (bench/idle_cost.py). ok counts the associations up at the window's end.

import (
	"math/rand"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

func sctpIdle(run *Run) error {
	addr, err := net.ResolveUDPAddr("udp", run.Addr)
	if err != nil {
		return err
	}
	assocs := make([]*sctpAssoc, run.Concurrency)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ { // handshakes 32 at a time: the set-up is not what is measured
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(time.Now().UnixNano() + int64(w)))
			for {
				i := int(next.Add(1) - 1)
				if i >= len(assocs) {
					return
				}
				a, err := newSctpAssoc(addr, run.SctpPort, rng)
				if err != nil {
					run.failed.Add(1)
					continue
				}
				_ = a.conn.SetReadBuffer(16 << 10)
				if err := a.connect(run); err != nil {
					run.failed.Add(1)
					a.conn.Close()
					continue
				}
				assocs[i] = a
			}
		}(w)
	}
	wg.Wait()
	var up sync.WaitGroup
	for _, a := range assocs {
		if a == nil {
			continue
		}
		up.Add(1)
		go func(a *sctpAssoc) {
			defer up.Done()
			alive := true
			for !run.Over() && alive {
				err := a.read(run.Stop, func(kind, flags byte, value []byte) error {
					switch kind {
					case chunkHeartbeat: // the ack carries the probe's information back as it came
						b := appendChunkHeader(a.begin(a.peerTag), chunkHeartbeatAck, 0, 4+len(value))
						return a.send(pad(append(b, value...)))
					case chunkAbort:
						alive = false
					}
					return nil
				})
				if err != nil && err != errNoAnswer {
					alive = false
				}
			}
			if alive {
				run.ok.Add(1)
				_ = a.abort()
			} else {
				run.failed.Add(1)
			}
			a.conn.Close()
		}(a)
	}
	up.Wait()
	return nil
}
