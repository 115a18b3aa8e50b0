package main

// A raw SCTP client (RFC 9260, over UDP as RFC 6951 frames it: the UDP payload is the SCTP packet). Just enough
// of the protocol for a benchmark against mux: the four-way handshake (no parameters, so no extensions and no
// I-DATA), DATA on stream 0 with retransmission after a timeout, SACK with gap blocks, HEARTBEAT-ACK, ABORT, and
// the graceful close. One connected UDP socket per association, so the peer sees many UDP ports.

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand"
	"net"
	"os"
	"runtime"
	"sort"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

const (
	chunkData             = 0
	chunkInit             = 1
	chunkInitAck          = 2
	chunkSack             = 3
	chunkHeartbeat        = 4
	chunkHeartbeatAck     = 5
	chunkAbort            = 6
	chunkShutdown         = 7
	chunkShutdownAck      = 8
	chunkCookieEcho       = 10
	chunkCookieAck        = 11
	chunkShutdownComplete = 14
	paramStateCookie      = 7
	// our advertised receive window and stream counts
	ourRwnd    = 1 << 20
	ourStreams = 16
	// how long a handshake step waits before it sends its packet again, and how often it does
	stepTimeout  = time.Second
	stepAttempts = 4
	// DATA not acknowledged for this long goes again (mux's delayed SACK takes up to 200 ms)
	dataTimeout = 500 * time.Millisecond
)

var (
	castagnoli   = crc32.MakeTable(crc32.Castagnoli)
	errAborted   = errors.New("the server aborted the association")
	errNoAnswer  = errors.New("no answer")
	errMalformed = errors.New("malformed packet")
)

// sctpAssoc is one association's client side and its socket.
type sctpAssoc struct {
	conn    *net.UDPConn
	file    *os.File // with fd: the socket, taken from conn for the echo loop's epoll
	fd      int      // -1 while conn does the I/O
	rng     *rand.Rand
	srcPort uint16
	dstPort uint16
	myTag   uint32
	peerTag uint32
	nextTSN uint32 // the TSN our next DATA gets
	peerCum uint32 // the last TSN of the peer's received in order
	above   map[uint32]struct{}
	ssn     uint16
	out     []byte
	in      []byte
	cookie  []byte
}

func newSctpAssoc(addr *net.UDPAddr, sctpPort int, rng *rand.Rand) (*sctpAssoc, error) {
	conn, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		return nil, err
	}
	_ = conn.SetReadBuffer(1 << 20)
	return &sctpAssoc{
		conn:    conn,
		fd:      -1,
		rng:     rng,
		dstPort: uint16(sctpPort),
		out:     make([]byte, 0, 1500),
		in:      make([]byte, 2048),
		above:   map[uint32]struct{}{},
	}, nil
}

// -- packets out --------------------------------------------------------------------------------------------------

func (a *sctpAssoc) begin(vtag uint32) []byte {
	b := a.out[:12]
	binary.BigEndian.PutUint16(b[0:], a.srcPort)
	binary.BigEndian.PutUint16(b[2:], a.dstPort)
	binary.BigEndian.PutUint32(b[4:], vtag)
	binary.BigEndian.PutUint32(b[8:], 0)
	return b
}

func (a *sctpAssoc) send(b []byte) error {
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b, castagnoli))
	a.out = b[:0]
	if a.fd >= 0 {
		return rawWrite(a.fd, b)
	}
	_, err := a.conn.Write(b)
	return err
}

func appendChunkHeader(b []byte, kind, flags byte, length int) []byte {
	return append(b, kind, flags, byte(length>>8), byte(length))
}

func pad(b []byte) []byte {
	for len(b)&3 != 0 {
		b = append(b, 0)
	}
	return b
}

func (a *sctpAssoc) appendSack(b []byte) []byte {
	var gaps []uint32 // offsets from peerCum of what arrived above it, sorted
	for tsn := range a.above {
		gaps = append(gaps, tsn-a.peerCum)
	}
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	var blocks [][2]uint32
	for _, off := range gaps {
		if n := len(blocks); n > 0 && blocks[n-1][1]+1 == off {
			blocks[n-1][1] = off
		} else if len(blocks) < 64 {
			blocks = append(blocks, [2]uint32{off, off})
		}
	}
	b = appendChunkHeader(b, chunkSack, 0, 16+4*len(blocks))
	b = binary.BigEndian.AppendUint32(b, a.peerCum)
	b = binary.BigEndian.AppendUint32(b, ourRwnd)
	b = binary.BigEndian.AppendUint16(b, uint16(len(blocks)))
	b = binary.BigEndian.AppendUint16(b, 0)
	for _, blk := range blocks {
		b = binary.BigEndian.AppendUint16(b, uint16(blk[0]))
		b = binary.BigEndian.AppendUint16(b, uint16(blk[1]))
	}
	return b
}

func appendData(b []byte, tsn uint32, ssn uint16, payload []byte) []byte {
	b = appendChunkHeader(b, chunkData, 0x03, 16+len(payload)) // B and E: one whole message
	b = binary.BigEndian.AppendUint32(b, tsn)
	b = binary.BigEndian.AppendUint16(b, 0) // stream 0
	b = binary.BigEndian.AppendUint16(b, ssn)
	b = binary.BigEndian.AppendUint32(b, 0) // PPID
	return pad(append(b, payload...))
}

// -- packets in ---------------------------------------------------------------------------------------------------

// chunkFn sees each chunk of a packet: its type, flags and value (after the 4-byte chunk header).
type chunkFn func(kind, flags byte, value []byte) error

// read waits until deadline for a packet of this association and walks its chunks.
func (a *sctpAssoc) read(deadline time.Time, each chunkFn) error {
	_ = a.conn.SetReadDeadline(deadline)
	for {
		n, err := a.conn.Read(a.in)
		if err != nil {
			var timeout net.Error
			if errors.As(err, &timeout) && timeout.Timeout() {
				return errNoAnswer
			}
			return err
		}
		if ours, err := a.walk(a.in[:n], each); ours || err != nil {
			return err
		}
	}
}

// walk checks that p is this association's (its tag, its port, a good checksum), then gives each chunk to each.
func (a *sctpAssoc) walk(p []byte, each chunkFn) (bool, error) {
	n := len(p)
	if n < 16 || binary.BigEndian.Uint32(p[4:]) != a.myTag || binary.BigEndian.Uint16(p[2:]) != a.srcPort {
		return false, nil // a previous association's, or not for us
	}
	sum := binary.LittleEndian.Uint32(p[8:])
	binary.LittleEndian.PutUint32(p[8:], 0)
	if crc32.Checksum(p, castagnoli) != sum {
		return false, nil
	}
	for off := 12; off+4 <= n; {
		length := int(binary.BigEndian.Uint16(p[off+2:]))
		if length < 4 || off+length > n {
			return true, errMalformed
		}
		if err := each(p[off], p[off+1], p[off+4:off+length]); err != nil {
			return true, err
		}
		off += (length + 3) &^ 3
	}
	return true, nil
}

// detach moves the socket from conn to a non-blocking fd of our own, for the echo loop's epoll.
func (a *sctpAssoc) detach() error {
	file, err := a.conn.File() // a duplicate, in blocking mode
	if err != nil {
		return err
	}
	fd := int(file.Fd())
	if err := syscall.SetNonblock(fd, true); err != nil {
		return err
	}
	a.conn.Close()
	a.file, a.fd = file, fd
	return nil
}

// exchange sends what build makes until a packet brings a chunk of type want (or stepAttempts go unanswered).
func (a *sctpAssoc) exchange(run *Run, build func() []byte, want byte, got func(value []byte)) error {
	for attempt := 0; attempt < stepAttempts; attempt++ {
		if attempt > 0 {
			run.retransmits.Add(1)
		}
		if err := a.send(build()); err != nil {
			return err
		}
		deadline := time.Now().Add(stepTimeout)
		for {
			found := false
			err := a.read(deadline, func(kind, flags byte, value []byte) error {
				switch kind {
				case want:
					found = true
					if got != nil {
						got(value)
					}
				case chunkAbort:
					return errAborted
				}
				return nil
			})
			if err == errNoAnswer {
				break
			}
			if err != nil {
				return err
			}
			if found {
				return nil
			}
		}
	}
	return errNoAnswer
}

// connect runs the handshake from a new SCTP port with new tags: INIT, INIT-ACK, COOKIE-ECHO, COOKIE-ACK.
func (a *sctpAssoc) connect(run *Run) error {
	a.srcPort = uint16(1024 + a.rng.Intn(64000))
	a.myTag = a.rng.Uint32() | 1
	a.nextTSN = a.rng.Uint32()
	a.ssn = 0
	a.above = map[uint32]struct{}{}
	init := func() []byte {
		b := appendChunkHeader(a.begin(0), chunkInit, 0, 20)
		b = binary.BigEndian.AppendUint32(b, a.myTag)
		b = binary.BigEndian.AppendUint32(b, ourRwnd)
		b = binary.BigEndian.AppendUint16(b, ourStreams)
		b = binary.BigEndian.AppendUint16(b, ourStreams)
		return binary.BigEndian.AppendUint32(b, a.nextTSN)
	}
	a.cookie = a.cookie[:0]
	err := a.exchange(run, init, chunkInitAck, func(v []byte) {
		if len(v) < 16 {
			return
		}
		a.peerTag = binary.BigEndian.Uint32(v)
		a.peerCum = binary.BigEndian.Uint32(v[12:]) - 1
		for off := 16; off+4 <= len(v); {
			kind, length := binary.BigEndian.Uint16(v[off:]), int(binary.BigEndian.Uint16(v[off+2:]))
			if length < 4 || off+length > len(v) {
				return
			}
			if kind == paramStateCookie {
				a.cookie = append(a.cookie, v[off+4:off+length]...)
			}
			off += (length + 3) &^ 3
		}
	})
	if err != nil {
		return err
	}
	if len(a.cookie) == 0 {
		return errMalformed
	}
	echo := func() []byte {
		b := appendChunkHeader(a.begin(a.peerTag), chunkCookieEcho, 0, 4+len(a.cookie))
		return pad(append(b, a.cookie...))
	}
	return a.exchange(run, echo, chunkCookieAck, nil)
}

func (a *sctpAssoc) abort() error {
	return a.send(appendChunkHeader(a.begin(a.peerTag), chunkAbort, 0, 4))
}

// shutdown closes gracefully: SHUTDOWN, SHUTDOWN-ACK, SHUTDOWN-COMPLETE (an ABORT if no SHUTDOWN-ACK comes).
func (a *sctpAssoc) shutdown(run *Run) error {
	build := func() []byte {
		b := appendChunkHeader(a.begin(a.peerTag), chunkShutdown, 0, 8)
		return binary.BigEndian.AppendUint32(b, a.peerCum)
	}
	if err := a.exchange(run, build, chunkShutdownAck, nil); err != nil {
		_ = a.abort()
		return err
	}
	return a.send(appendChunkHeader(a.begin(a.peerTag), chunkShutdownComplete, 0, 4))
}

// -- workloads ----------------------------------------------------------------------------------------------------

func sctpHandshakes(run *Run) error {
	addr, err := net.ResolveUDPAddr("udp", run.Addr)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	for i := 0; i < run.Concurrency; i++ {
		a, err := newSctpAssoc(addr, run.SctpPort, rand.New(rand.NewSource(time.Now().UnixNano()+int64(i))))
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer a.conn.Close()
			time.Sleep(time.Until(run.Start))
			for !run.Over() {
				if err := a.connect(run); err != nil {
					run.failed.Add(1)
					continue
				}
				run.Done(time.Now())
				if run.Close == "abort" {
					_ = a.abort()
				} else {
					_ = a.shutdown(run)
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

// sctpEchoes sets up run.Concurrency associations (concurrently), then drives them all from one thread: one
// epoll, one read and one write per packet, no scheduler between them (a goroutine per socket cost twice that).
func sctpEchoes(run *Run) error {
	addr, err := net.ResolveUDPAddr("udp", run.Addr)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var echoers []*echoer
	for i := 0; i < run.Concurrency; i++ {
		a, err := newSctpAssoc(addr, run.SctpPort, rand.New(rand.NewSource(time.Now().UnixNano()+int64(i))))
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.connect(run); err != nil {
				run.failed.Add(1)
				a.conn.Close()
				return
			}
			if err := a.detach(); err != nil {
				run.failed.Add(1)
				_ = a.abort()
				a.conn.Close()
				return
			}
			mu.Lock()
			echoers = append(echoers, newEchoer(a, run))
			mu.Unlock()
		}()
	}
	wg.Wait()
	defer func() {
		for _, e := range echoers {
			_ = e.a.abort()
			e.a.file.Close()
		}
	}()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	defer syscall.Close(epfd)
	byFd := map[int32]*echoer{}
	for _, e := range echoers {
		fd := int32(e.a.fd)
		byFd[fd] = e
		event := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: fd}
		if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, e.a.fd, &event); err != nil {
			return err
		}
	}
	time.Sleep(time.Until(run.Start))
	for _, e := range echoers {
		if err := e.start(); err != nil {
			e.fail()
		}
	}
	events := make([]syscall.EpollEvent, 256)
	buf := make([]byte, 2048)
	ticked := time.Now()
	for !run.Over() {
		n, err := rawEpollWait(epfd, events, 20)
		if err != nil && err != syscall.EINTR {
			return err
		}
		now := time.Now()
		for _, event := range events[:max(n, 0)] {
			e := byFd[event.Fd]
			got, err := rawRead(int(event.Fd), buf)
			if err == syscall.EAGAIN || e.failed {
				continue
			}
			if err != nil || e.handle(buf[:got], now) != nil {
				e.fail()
			}
		}
		if n < len(events)/4 && run.Batch > 0 {
			// let packets gather before the next look (interrupt coalescing): one wake-up per batch, not per
			// packet, which is most of what a packet costs us; the server, the bottleneck, always has work queued
			pause := syscall.NsecToTimespec(run.Batch.Nanoseconds())
			_, _, _ = syscall.RawSyscall(syscall.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&pause)), 0, 0)
		}
		if now.Sub(ticked) >= 20*time.Millisecond {
			ticked = now
			for _, e := range echoers {
				if !e.failed && e.tick(now) != nil {
					e.fail()
				}
			}
		}
	}
	return nil
}

// The echo loop's system calls, raw: the thread is ours (LockOSThread) and the scheduler need not hear of them.
// Through syscall.Syscall each blocking one let the runtime hand the thread's P to another thread and back, a
// context switch or two per packet, which cost more than the packet's own read and write.

func rawRead(fd int, b []byte) (int, error) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

func rawWrite(fd int, b []byte) error {
	_, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if errno != 0 {
		return errno
	}
	return nil
}

func rawEpollWait(epfd int, events []syscall.EpollEvent, msec int) (int, error) {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_WAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])),
		uintptr(len(events)), uintptr(msec), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

func max(a, b int) int {
	if a > b {
		return a
	}
	return b
}

type sent struct {
	tsn uint32
	ssn uint16
}

// echoer keeps run.Window messages in flight on one association until the window ends: a new one for each echo.
type echoer struct {
	a           *sctpAssoc
	run         *Run
	payload     []byte
	outstanding []sent // sent, not yet acknowledged, in TSN order
	progress    time.Time
	failed      bool
}

func newEchoer(a *sctpAssoc, run *Run) *echoer {
	payload := make([]byte, messageSize)
	for i := range payload {
		payload[i] = 'm'
	}
	return &echoer{a: a, run: run, payload: payload}
}

func (e *echoer) fail() {
	if !e.failed {
		e.failed = true
		e.run.failed.Add(1)
	}
}

func (e *echoer) start() error {
	e.progress = time.Now()
	for i := 0; i < e.run.Window; i++ {
		if err := e.sendNew(false); err != nil {
			return err
		}
	}
	return nil
}

func (e *echoer) sendNew(withSack bool) error {
	a := e.a
	b := a.begin(a.peerTag)
	if withSack {
		b = a.appendSack(b)
	}
	e.outstanding = append(e.outstanding, sent{a.nextTSN, a.ssn})
	b = appendData(b, a.nextTSN, a.ssn, e.payload)
	a.nextTSN++
	a.ssn++
	return a.send(b)
}

// handle takes one packet: SACKs free what was acknowledged, each echo counts and sends the next message, and the
// peer's DATA is acknowledged (in the next message's packet when there is one).
func (e *echoer) handle(p []byte, now time.Time) error {
	a := e.a
	echoes, sack := 0, false
	_, err := a.walk(p, func(kind, flags byte, v []byte) error {
		switch kind {
		case chunkData:
			if len(v) < 12 {
				return errMalformed
			}
			tsn := binary.BigEndian.Uint32(v)
			sack = true
			if int32(tsn-a.peerCum) <= 0 {
				return nil // a duplicate
			}
			if _, dup := a.above[tsn]; dup {
				return nil
			}
			if flags&0x01 != 0 {
				echoes++
			}
			if tsn != a.peerCum+1 {
				a.above[tsn] = struct{}{}
				return nil
			}
			a.peerCum = tsn
			for {
				if _, ok := a.above[a.peerCum+1]; !ok {
					break
				}
				delete(a.above, a.peerCum+1)
				a.peerCum++
			}
		case chunkSack:
			if len(v) < 12 {
				return errMalformed
			}
			cum := binary.BigEndian.Uint32(v)
			n := 0
			for n < len(e.outstanding) && int32(e.outstanding[n].tsn-cum) <= 0 {
				n++
			}
			if n > 0 {
				e.outstanding = e.outstanding[n:]
				e.progress = now
			}
		case chunkHeartbeat:
			b := appendChunkHeader(a.begin(a.peerTag), chunkHeartbeatAck, 0, 4+len(v))
			return a.send(pad(append(b, v...)))
		case chunkAbort:
			return errAborted
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := 0; i < echoes; i++ {
		e.run.Done(now)
	}
	if now.Before(e.run.Stop) {
		for i := 0; i < echoes; i++ {
			if err := e.sendNew(sack); err != nil {
				return err
			}
			sack = false
		}
	}
	if sack {
		return a.send(a.appendSack(a.begin(a.peerTag)))
	}
	return nil
}

// tick sends everything outstanding again when nothing was acknowledged for dataTimeout (a lost packet).
func (e *echoer) tick(now time.Time) error {
	if len(e.outstanding) == 0 || now.Sub(e.progress) < dataTimeout {
		return nil
	}
	for _, s := range e.outstanding {
		e.run.retransmits.Add(1)
		if err := e.a.send(appendData(e.a.begin(e.a.peerTag), s.tsn, s.ssn, e.payload)); err != nil {
			return err
		}
	}
	e.progress = now
	return nil
}
