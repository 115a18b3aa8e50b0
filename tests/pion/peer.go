// Command peer is a pion/sctp peer for mux's interop tests (tests/test_sctp_pion.py): SCTP over a plain UDP socket
// (RFC 6951 framing: the SCTP common header is the UDP payload), as client or server.
//
// Build (Debian golang-go and golang-github-pion-sctp-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o peer tests/pion/peer.go
//
// Client (-remote host:port): connects from a fresh UDP socket per association, opens stream -stream, sends -count
// messages of -size bytes, with -echo reads each one back, waits until everything it sent is acknowledged, then
// closes gracefully (Association.Shutdown: SHUTDOWN, not ABORT). -cycles repeats all that.
//
// Server (-mode server): listens on -listen (port 0: any; prints "listening port=N" first), accepts one
// association, with -echo sends every message back on its stream, and either waits for the peer to shut down
// (-close peer) or, after -count messages, shuts down itself (-close local).
//
// Message k (from 0) of a run is -size bytes, byte i of it being (k*131 + i*7 + -seed) & 0xff, so both ends can
// check every byte without sending anything else.
//
// Output on stdout, one line per association once it has ended:
//
//	result cycle=1 sent_msgs=N sent_bytes=B recv_msgs=N recv_bytes=B bad_msgs=0 end=graceful skipped_params=1 ms=12.3 err=-
//
// end is "graceful" (it ended without an ABORT), "aborted" (an ABORT came: pion's readLoop ended with ErrChunk),
// "timeout" or "error" (err= says what, spaces as _). bad_msgs counts received messages that were not the expected
// bytes. skipped_params: see peerConn. Then, once its socket is closed (see -linger):
//
//	linger cycle=1 shutdown_acks_answered=0
//
// The exit status is 0 only if every association ended gracefully with every message right.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/logging"
	"github.com/pion/sctp"
)

var (
	mode        = flag.String("mode", "client", "client or server")
	remote      = flag.String("remote", "", "client: the server's UDP host:port")
	listen      = flag.String("listen", "127.0.0.1:0", "server: the UDP host:port to listen on")
	count       = flag.Int("count", 10, "messages to send (client), or to receive before a local close (server)")
	size        = flag.Int("size", 1000, "bytes per message")
	echo        = flag.Bool("echo", false, "client: expect every message back; server: send every message back")
	cycles      = flag.Int("cycles", 1, "client: associations one after another")
	streamID    = flag.Int("stream", 1, "client: the stream id to open")
	closeHow    = flag.String("close", "peer", "server: peer (wait for its SHUTDOWN) or local (Shutdown after -count)")
	seed        = flag.Int("seed", 0, "added to every byte of the pattern")
	timeout     = flag.Duration("timeout", 30*time.Second, "the most one association may take")
	linger      = flag.Duration("linger", 3*time.Second, "how long a socket outlives its association (see peerConn)")
	skipUnknown = flag.Bool("skip-unknown-params", false,
		"drop INIT/INIT-ACK parameters pion cannot parse whose type says skip (RFC 9260 §3.2.1), see peerConn")
	logLevel = flag.String("log", "error", "pion's log level: error, warn, info, debug, trace")
)

const readBuffer = 1 << 16

func pattern(k int) []byte {
	msg := make([]byte, *size)
	for i := range msg {
		msg[i] = byte(k*131 + i*7 + *seed)
	}
	return msg
}

func loggerFactory() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	levels := map[string]logging.LogLevel{
		"error": logging.LogLevelError, "warn": logging.LogLevelWarn, "info": logging.LogLevelInfo,
		"debug": logging.LogLevelDebug, "trace": logging.LogLevelTrace,
	}
	if level, ok := levels[*logLevel]; ok {
		f.DefaultLogLevel = level
	}
	f.Writer = os.Stderr
	return f
}

// packetConn makes an unconnected UDP socket a net.Conn for pion's Server: it answers wherever the last packet
// came from (the way pion's own ping-pong example does).
type packetConn struct {
	mu    sync.RWMutex
	peer  net.Addr
	pconn net.PacketConn
}

func (c *packetConn) Read(p []byte) (int, error) {
	n, addr, err := c.pconn.ReadFrom(p)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	c.peer = addr
	c.mu.Unlock()
	return n, nil
}

func (c *packetConn) Write(p []byte) (int, error) {
	c.mu.RLock()
	peer := c.peer
	c.mu.RUnlock()
	if peer == nil {
		return 0, errors.New("no peer yet")
	}
	return c.pconn.WriteTo(p, peer)
}

func (c *packetConn) Close() error                       { return c.pconn.Close() }
func (c *packetConn) LocalAddr() net.Addr                { return c.pconn.LocalAddr() }
func (c *packetConn) RemoteAddr() net.Addr               { c.mu.RLock(); defer c.mu.RUnlock(); return c.peer }
func (c *packetConn) SetDeadline(t time.Time) error      { return c.pconn.SetDeadline(t) }
func (c *packetConn) SetReadDeadline(t time.Time) error  { return c.pconn.SetReadDeadline(t) }
func (c *packetConn) SetWriteDeadline(t time.Time) error { return c.pconn.SetWriteDeadline(t) }

// peerConn is the net.Conn pion gets. It adds two things pion/sctp 1.8.6 (Debian's) lacks and an interop peer
// needs; both are counted in the output.
//
// Unknown parameters. pion 1.8.6 fails to parse an INIT or INIT-ACK holding any parameter it does not know,
// whatever the type's top two bits say (RFC 9260 §3.2.1: 10 and 11 mean skip it and go on); upstream fixed that in
// pion/sctp PR #298 (2024). mux offers an Adaptation Layer Indication (0xC006) in every INIT and INIT-ACK, so
// without this no association comes up at all. Read drops such parameters from incoming INIT and INIT-ACK chunks
// before pion parses them, as the newer pion skips them (skipped_params=).
//
// The host's stack after the association. pion's Close closes the socket, and the process may exit at once: if
// pion's SHUTDOWN-COMPLETE is lost, the peer's retransmitted SHUTDOWN-ACKs reach nobody, where an SCTP host
// answers them with a SHUTDOWN-COMPLETE with the T bit (RFC 9260 §8.4 item 5) and the peer's close completes.
// Close here only stops pion's reads; lingerOn then answers, for -linger, as that host would
// (shutdown_acks_answered=), and closes the socket.
type peerConn struct {
	net.Conn
	closed  atomic.Bool
	mu      sync.Mutex
	skipped int
}

func (c *peerConn) Read(p []byte) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	n, err := c.Conn.Read(p)
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	if err == nil && *skipUnknown {
		var skipped int
		n, skipped = skipUnknownParams(p[:n])
		if skipped > 0 {
			c.mu.Lock()
			c.skipped += skipped
			c.mu.Unlock()
		}
	}
	return n, err
}

// Close ends pion's use of the socket (its blocked Read returns) and leaves the socket to lingerOn.
func (c *peerConn) Close() error {
	if !c.closed.Swap(true) {
		_ = c.Conn.SetReadDeadline(time.Now())
	}
	return nil
}

func (c *peerConn) skippedParams() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.skipped
}

// lingerOn answers every SHUTDOWN-ACK that still comes, for d, with a SHUTDOWN-COMPLETE with the T bit (its tag
// is the one the SHUTDOWN-ACK carried), then closes the socket and returns how many it answered. Call it once pion
// is done with the socket (after Association.Close returned).
func (c *peerConn) lingerOn(d time.Duration) int {
	defer c.Conn.Close()
	answered := 0
	if err := c.Conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		return 0
	}
	buf := make([]byte, readBuffer)
	for {
		n, err := c.Conn.Read(buf)
		if err != nil {
			return answered
		}
		if n < 16 || buf[12] != 8 { // SHUTDOWN-ACK
			continue
		}
		out := make([]byte, 16)
		binary.BigEndian.PutUint16(out[0:], binary.BigEndian.Uint16(buf[2:])) // our port: where it went
		binary.BigEndian.PutUint16(out[2:], binary.BigEndian.Uint16(buf[0:]))
		copy(out[4:8], buf[4:8])                            // the tag it carried
		out[12], out[13] = 14, 1                            // SHUTDOWN-COMPLETE, T bit
		binary.BigEndian.PutUint16(out[14:], 4)             // chunk length
		binary.LittleEndian.PutUint32(out[8:], crc32c(out)) // as pion's packet.go does
		if _, err := c.Conn.Write(out); err == nil {
			answered++
		}
	}
}

var pionParams = map[uint16]bool{ // the parameter types pion 1.8.6's buildParam parses
	1: true, 7: true, 13: true, 16: true, 0x8000: true, 0x8002: true, 0x8003: true, 0x8004: true, 0x8008: true,
	0xC000: true,
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is SCTP's checksum of packet b, computed with its checksum field as zeros.
func crc32c(b []byte) uint32 {
	sum := crc32.Update(0, castagnoli, b[:8])
	sum = crc32.Update(sum, castagnoli, []byte{0, 0, 0, 0})
	return crc32.Update(sum, castagnoli, b[12:])
}

// skipUnknownParams rewrites packet b in place when it is an INIT or INIT-ACK with parameters to skip (fixing the
// chunk length and the checksum), and returns its new length and how many parameters it dropped.
func skipUnknownParams(b []byte) (int, int) {
	const fixed = 12 + 4 + 16 // common header, chunk header, INIT's fixed fields
	if len(b) < fixed || (b[12] != 1 && b[12] != 2) {
		return len(b), 0
	}
	end := 12 + int(binary.BigEndian.Uint16(b[14:]))
	if end < fixed || end > len(b) {
		return len(b), 0
	}
	out := append(make([]byte, 0, len(b)), b[:fixed]...)
	skipped, lastPad := 0, 0
	for off := fixed; off+4 <= end; {
		ptype, plen := binary.BigEndian.Uint16(b[off:]), int(binary.BigEndian.Uint16(b[off+2:]))
		if plen < 4 || off+plen > end {
			return len(b), 0 // malformed: left to pion
		}
		padded := (plen + 3) &^ 3
		if off+padded > end {
			padded = end - off
		}
		if !pionParams[ptype] && ptype>>14 >= 2 {
			skipped++
		} else {
			out = append(out, b[off:off+padded]...)
			lastPad = padded - plen
		}
		off += padded
	}
	if skipped == 0 {
		return len(b), 0
	}
	binary.BigEndian.PutUint16(out[14:], uint16(len(out)-12-lastPad))
	if rest := (end + 3) &^ 3; rest < len(b) {
		out = append(out, b[rest:]...) // anything bundled after the chunk
	}
	binary.LittleEndian.PutUint32(out[8:], crc32c(out))
	return copy(b, out), skipped
}

type result struct {
	sentMsgs, sentBytes, recvMsgs, recvBytes, badMsgs int
	end, err                                          string
	started                                           time.Time
	conn                                              *peerConn
}

func (r *result) print(cycle int) bool {
	errText := "-"
	if r.err != "" {
		errText = strings.ReplaceAll(r.err, " ", "_")
	}
	skipped := 0
	if r.conn != nil {
		skipped = r.conn.skippedParams()
	}
	fmt.Printf("result cycle=%d sent_msgs=%d sent_bytes=%d recv_msgs=%d recv_bytes=%d bad_msgs=%d end=%s "+
		"skipped_params=%d ms=%.1f err=%s\n",
		cycle, r.sentMsgs, r.sentBytes, r.recvMsgs, r.recvBytes, r.badMsgs, r.end, skipped,
		float64(time.Since(r.started).Microseconds())/1000, errText)
	return r.end == "graceful" && r.badMsgs == 0
}

// endOf classifies the error pion's stream reads ended with: an ABORT ends its readLoop with ErrChunk; a graceful
// end (or our own Close) with the closed socket's error.
func endOf(err error) string {
	if errors.Is(err, sctp.ErrChunk) {
		return "aborted"
	}
	return "graceful"
}

// reader reads messages from a stream until the association ends, checking each against the pattern, and reports
// the error that ended it on done; got is signalled after each message.
type reader struct {
	r    *result
	mu   sync.Mutex
	got  chan struct{}
	done chan error
}

func startReader(s *sctp.Stream, r *result, onMessage func([]byte)) *reader {
	rd := &reader{r: r, got: make(chan struct{}, 1), done: make(chan error, 1)}
	go func() {
		buf := make([]byte, readBuffer)
		for {
			n, err := s.Read(buf)
			if err != nil {
				rd.done <- err
				return
			}
			rd.mu.Lock()
			k := r.recvMsgs
			r.recvMsgs++
			r.recvBytes += n
			if n != *size || string(buf[:n]) != string(pattern(k)) {
				r.badMsgs++
			}
			rd.mu.Unlock()
			if onMessage != nil {
				onMessage(buf[:n])
			}
			select {
			case rd.got <- struct{}{}:
			default:
			}
		}
	}()
	return rd
}

func (rd *reader) received() int {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	return rd.r.recvMsgs
}

// awaitMessages waits until the reader has n messages; false (r.end set) if the association ended or ctx expired.
func (rd *reader) awaitMessages(ctx context.Context, n int, r *result) bool {
	for rd.received() < n {
		select {
		case <-rd.got:
		case err := <-rd.done:
			r.end, r.err = endOf(err), fmt.Sprintf("ended after %d of %d messages: %v", rd.received(), n, err)
			return false
		case <-ctx.Done():
			r.end, r.err = "timeout", fmt.Sprintf("waiting for messages: %d of %d", rd.received(), n)
			return false
		}
	}
	return true
}

// drained waits until everything written on s has been acknowledged: pion's Shutdown would drop data still
// waiting to be sent (it only waits for what is in flight).
func drained(ctx context.Context, s *sctp.Stream) error {
	for s.BufferedAmount() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// shutdown closes a gracefully and classifies how it ended from the reader's last error.
func shutdown(ctx context.Context, a *sctp.Association, rd *reader, r *result) {
	if err := a.Shutdown(ctx); err != nil {
		r.end, r.err = "timeout", "shutdown: "+err.Error()
		return
	}
	select {
	case err := <-rd.done:
		if r.end = endOf(err); r.end != "graceful" {
			r.err = err.Error()
		}
	case <-time.After(5 * time.Second):
		r.end, r.err = "error", "the stream never ended after Shutdown"
	}
}

// done ends an association (a may be nil), prints its result, and lingers on its socket (see peerConn) in the
// background; wait on lingering before exiting.
var lingering sync.WaitGroup

func done(cycle int, a *sctp.Association, r *result) bool {
	if a != nil {
		a.Close() // returns once pion's readLoop has ended
	}
	ok := r.print(cycle)
	if r.conn != nil {
		conn := r.conn
		_ = conn.Close()
		lingering.Add(1)
		go func() {
			defer lingering.Done()
			fmt.Printf("linger cycle=%d shutdown_acks_answered=%d\n", cycle, conn.lingerOn(*linger))
		}()
	}
	return ok
}

func clientCycle(cycle int) bool {
	r := &result{started: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	raddr, err := net.ResolveUDPAddr("udp", *remote)
	if err != nil {
		r.end, r.err = "error", err.Error()
		return done(cycle, nil, r)
	}
	udp, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		r.end, r.err = "error", err.Error()
		return done(cycle, nil, r)
	}
	r.conn = &peerConn{Conn: udp}
	type made struct {
		a   *sctp.Association
		err error
	}
	ch := make(chan made, 1)
	go func() {
		a, err := sctp.Client(sctp.Config{NetConn: r.conn, LoggerFactory: loggerFactory()})
		ch <- made{a, err}
	}()
	var a *sctp.Association
	select {
	case m := <-ch:
		if m.err != nil {
			r.end, r.err = "error", "handshake: "+m.err.Error()
			return done(cycle, nil, r)
		}
		a = m.a
	case <-ctx.Done():
		_ = r.conn.Close() // pion's Client gives up once its reads fail
		r.end, r.err = "timeout", "handshake"
		return done(cycle, nil, r)
	}
	s, err := a.OpenStream(uint16(*streamID), sctp.PayloadTypeWebRTCBinary)
	if err != nil {
		r.end, r.err = "error", err.Error()
		return done(cycle, a, r)
	}
	rd := startReader(s, r, nil)
	for k := 0; k < *count; k++ {
		msg := pattern(k)
		if _, err := s.Write(msg); err != nil {
			r.end, r.err = "error", "write: "+err.Error()
			return done(cycle, a, r)
		}
		r.sentMsgs++
		r.sentBytes += len(msg)
		for s.BufferedAmount() > 1<<20 && ctx.Err() == nil { // pion queues every Write without limit
			time.Sleep(time.Millisecond)
		}
	}
	if *echo && !rd.awaitMessages(ctx, *count, r) {
		return done(cycle, a, r)
	}
	if err := drained(ctx, s); err != nil {
		r.end, r.err = "timeout", "waiting for our data to be acknowledged"
		return done(cycle, a, r)
	}
	shutdown(ctx, a, rd, r)
	return done(cycle, a, r)
}

func server() bool {
	r := &result{started: time.Now()}
	laddr, err := net.ResolveUDPAddr("udp", *listen)
	if err != nil {
		r.end, r.err = "error", err.Error()
		return done(1, nil, r)
	}
	udp, err := net.ListenUDP("udp", laddr)
	if err != nil {
		r.end, r.err = "error", err.Error()
		return done(1, nil, r)
	}
	fmt.Printf("listening port=%d\n", udp.LocalAddr().(*net.UDPAddr).Port)
	r.conn = &peerConn{Conn: &packetConn{pconn: udp}}
	a, err := sctp.Server(sctp.Config{NetConn: r.conn, LoggerFactory: loggerFactory()})
	if err != nil {
		r.end, r.err = "error", "handshake: "+err.Error()
		return done(1, nil, r)
	}
	r.started = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	s, err := a.AcceptStream()
	if err != nil {
		r.end, r.err = "error", "accept: "+err.Error()
		return done(1, a, r)
	}
	var writeErr error
	var onMessage func([]byte)
	if *echo {
		onMessage = func(msg []byte) { // on the reader's goroutine, like the counts it keeps
			if _, err := s.Write(append([]byte(nil), msg...)); err != nil {
				if writeErr == nil {
					writeErr = err
				}
				return
			}
			r.sentMsgs++
			r.sentBytes += len(msg)
		}
	}
	rd := startReader(s, r, onMessage)
	if *closeHow == "local" {
		if !rd.awaitMessages(ctx, *count, r) {
			return done(1, a, r)
		}
		if err := drained(ctx, s); err != nil {
			r.end, r.err = "timeout", "waiting for our data to be acknowledged"
			return done(1, a, r)
		}
		shutdown(ctx, a, rd, r)
	} else {
		select {
		case err := <-rd.done:
			r.end = endOf(err)
			if r.end != "graceful" || errors.Is(err, io.EOF) {
				r.err = err.Error()
			}
		case <-ctx.Done():
			r.end, r.err = "timeout", "waiting for the peer to shut down"
		}
	}
	if writeErr != nil && r.end == "graceful" {
		r.end, r.err = "error", "echo: "+writeErr.Error()
	}
	return done(1, a, r)
}

func main() {
	flag.Parse()
	ok := true
	switch *mode {
	case "client":
		if *remote == "" {
			fmt.Fprintln(os.Stderr, "-remote host:port is required")
			os.Exit(2)
		}
		for cycle := 1; cycle <= *cycles; cycle++ {
			if !clientCycle(cycle) {
				ok = false
			}
		}
	case "server":
		ok = server()
	default:
		fmt.Fprintln(os.Stderr, "-mode is client or server")
		os.Exit(2)
	}
	lingering.Wait()
	if !ok {
		os.Exit(1)
	}
}
