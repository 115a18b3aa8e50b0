//go:build quicgo

package main

// QUIC through quic-go (Debian's golang-github-lucas-clemente-quic-go-dev, 0.29): certificate verification off,
// ALPN "echo", no session cache (every handshake is a full one, as bench/workers.py's Python clients make them).

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	quic "github.com/lucas-clemente/quic-go"
)

func quicTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"echo"}}
}

func quicConfig() *quic.Config {
	return &quic.Config{HandshakeIdleTimeout: 10 * time.Second, MaxIdleTimeout: 30 * time.Second}
}

// quicHandshakes: each loop dials from its own UDP socket, counts the completed handshake and closes.
func quicHandshakes(run *Run) error {
	var wg sync.WaitGroup
	tlsConf, conf := quicTLS(), quicConfig()
	addr, err := net.ResolveUDPAddr("udp", run.Addr)
	if err != nil {
		return err
	}
	for i := 0; i < run.Concurrency; i++ {
		pconn, err := net.ListenUDP("udp", nil)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer pconn.Close()
			time.Sleep(time.Until(run.Start))
			for !run.Over() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				conn, err := quic.DialContext(ctx, pconn, addr, "localhost", tlsConf, conf)
				cancel()
				if err != nil {
					run.failed.Add(1)
					continue
				}
				run.Done(time.Now())
				_ = conn.CloseWithError(0, "")
			}
		}()
	}
	wg.Wait()
	return nil
}

// quicEchoes: run.Concurrency connections with run.Window streams each, one 64-byte message in flight per stream.
func quicEchoes(run *Run) error {
	var wg sync.WaitGroup
	tlsConf, conf := quicTLS(), quicConfig()
	payload := make([]byte, messageSize)
	for i := range payload {
		payload[i] = 'm'
	}
	for i := 0; i < run.Concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			conn, err := quic.DialAddrContext(ctx, run.Addr, tlsConf, conf)
			if err != nil {
				run.failed.Add(int64(run.Window))
				return
			}
			defer conn.CloseWithError(0, "")
			var streams sync.WaitGroup
			for s := 0; s < run.Window; s++ {
				stream, err := conn.OpenStreamSync(ctx)
				if err != nil {
					run.failed.Add(1)
					continue
				}
				streams.Add(1)
				go func() {
					defer streams.Done()
					back := make([]byte, messageSize)
					time.Sleep(time.Until(run.Start))
					for !run.Over() {
						if _, err := stream.Write(payload); err != nil {
							run.failed.Add(1)
							return
						}
						_ = stream.SetReadDeadline(time.Now().Add(10 * time.Second))
						if _, err := io.ReadFull(stream, back); err != nil {
							run.failed.Add(1)
							return
						}
						run.Done(time.Now())
					}
				}()
			}
			streams.Wait()
		}()
	}
	wg.Wait()
	return nil
}

// quicIdle: run.Concurrency connections, each from its own UDP socket, set up before the window (32 handshakes at
// a time) and then left idle. quic-go's keep-alive PINGs every 15 s (half the 30 s idle timeout both sides
// announce) keep the server from timing them out: what the server spends on them is its idle cost
// (bench/idle_cost.py). ok counts the connections still up at the window's end.
func quicIdle(run *Run) error {
	tlsConf, conf := quicTLS(), quicConfig()
	conf.KeepAlivePeriod = 15 * time.Second
	conns := make([]quic.Connection, run.Concurrency)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(conns) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				conn, err := quic.DialAddrContext(ctx, run.Addr, tlsConf, conf)
				cancel()
				if err != nil {
					run.failed.Add(1)
					continue
				}
				conns[i] = conn
			}
		}()
	}
	wg.Wait()
	fmt.Fprintf(os.Stderr, "loadgen: %d idle connections up\n", len(conns)-int(run.failed.Load()))
	time.Sleep(time.Until(run.Stop))
	for _, conn := range conns {
		if conn == nil {
			continue
		}
		select {
		case <-conn.Context().Done():
			run.failed.Add(1)
		default:
			run.ok.Add(1)
		}
	}
	for _, conn := range conns {
		if conn != nil {
			_ = conn.CloseWithError(0, "")
		}
	}
	return nil
}
