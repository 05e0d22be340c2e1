package distributed

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// DefaultTimeout is how long ConnectTCP waits for every rank when
// TCPOptions.Timeout is 0 (torch's default store timeout is 30 minutes;
// ranks of one job start within a minute or two of each other).
const DefaultTimeout = 5 * time.Minute

// TCPOptions says how to reach the group.
type TCPOptions struct {
	// Addr is rank 0's "host:port" (Endpoint: MASTER_ADDR:MASTER_PORT).
	// Rank 0 listens on that port on every interface; the others connect
	// to Addr.
	Addr       string
	Rank, Size int
	// Timeout bounds the rendezvous: rank 0 waits that long for every
	// other rank to connect, the others retry connecting that long.
	Timeout time.Duration
	Log     *slog.Logger // nil: no logging
}

// TCP is one rank of a group connected in a star through rank 0: each
// collective sends every rank's data to rank 0, which reduces it in rank
// order and sends the result back. Made for small payloads (LoRA gradients,
// flags, NCCL's unique id) and tests: it is not a bandwidth-optimal ring.
type TCP struct {
	rank, size int
	peers      []*peer // rank 0: peers[r] for r >= 1; others: peers[0] is rank 0
	mu         sync.Mutex
	broken     error
}

var _ Communicator = (*TCP)(nil)

type peer struct {
	rank int
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
}

// magic opens every hello, so a stray connection to the port is told apart.
const magic = "rella-distributed/1"

const (
	kindHello byte = iota + 1
	kindWelcome
	kindError
	kindData
)

const (
	opSum32 byte = iota + 1
	opSum64
	opBarrier
	opBroadcast
)

var opNames = map[byte]string{opSum32: "AllReduceSumFloat32", opSum64: "AllReduceSumFloat64", opBarrier: "Barrier", opBroadcast: "Broadcast"}

// frame is one message: a 22-byte header (kind, op, root, count, body
// length: little endian) and the body.
type frame struct {
	kind  byte
	op    byte
	root  uint32
	count uint64
	body  []byte
}

// maxBroadcast bounds a broadcast's size (rank 0 does not know it ahead).
const maxBroadcast = 1 << 30

func writeFrame(p *peer, f frame) error {
	var h [22]byte
	h[0], h[1] = f.kind, f.op
	binary.LittleEndian.PutUint32(h[2:], f.root)
	binary.LittleEndian.PutUint64(h[6:], f.count)
	binary.LittleEndian.PutUint64(h[14:], uint64(len(f.body)))
	if _, err := p.w.Write(h[:]); err != nil {
		return err
	}
	if _, err := p.w.Write(f.body); err != nil {
		return err
	}
	return p.w.Flush()
}

// readFrame reads one frame whose body is at most max bytes (checked before
// anything is allocated; error messages may have up to 64 KiB).
func readFrame(p *peer, max uint64) (frame, error) {
	f, n, err := readHeader(p)
	if err != nil {
		return frame{}, err
	}
	if f.kind == kindError {
		max = 1 << 16
	}
	if n > max {
		return frame{}, fmt.Errorf("message of %d bytes, expected at most %d (kind %d)", n, max, f.kind)
	}
	return f, readBody(p, &f, n)
}

// readHeader reads a frame's header; n is its body's length.
func readHeader(p *peer) (f frame, n uint64, err error) {
	var h [22]byte
	if _, err := io.ReadFull(p.r, h[:]); err != nil {
		return frame{}, 0, err
	}
	f = frame{kind: h[0], op: h[1], root: binary.LittleEndian.Uint32(h[2:]), count: binary.LittleEndian.Uint64(h[6:])}
	return f, binary.LittleEndian.Uint64(h[14:]), nil
}

func readBody(p *peer, f *frame, n uint64) error {
	f.body = make([]byte, n)
	_, err := io.ReadFull(p.r, f.body)
	return err
}

// ConnectTCP joins the group: rank 0 listens on Addr's port and waits for
// every other rank; the others connect, retrying until rank 0 is up. It
// returns once all Size ranks are connected, or an error after Timeout that
// says which ranks never came (on rank 0) or what connecting last failed
// with (on the others). A rank that presents another world size or a rank
// already taken makes the rendezvous fail on every rank connected so far.
func ConnectTCP(ctx context.Context, o TCPOptions) (*TCP, error) {
	if o.Size < 1 || o.Rank < 0 || o.Rank >= o.Size {
		return nil, fmt.Errorf("rendezvous: rank %d of %d: the rank must be in 0..size-1", o.Rank, o.Size)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	c := &TCP{rank: o.Rank, size: o.Size}
	if o.Size == 1 {
		return c, nil
	}
	if o.Addr == "" {
		return nil, fmt.Errorf("rendezvous: rank %d of %d: no address for rank 0 (MASTER_ADDR:MASTER_PORT)", o.Rank, o.Size)
	}
	deadline := time.Now().Add(o.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var err error
	if o.Rank == 0 {
		c.peers, err = accept(ctx, o, deadline)
	} else {
		var p *peer
		p, err = dial(ctx, o, deadline)
		c.peers = []*peer{p}
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

func accept(ctx context.Context, o TCPOptions, deadline time.Time) ([]*peer, error) {
	_, port, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return nil, fmt.Errorf("rendezvous: address %q: %w", o.Addr, err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("", port))
	if err != nil {
		return nil, fmt.Errorf("rendezvous: rank 0 cannot listen on port %s (MASTER_PORT; in use by another job?): %w", port, err)
	}
	defer ln.Close()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	o.Log.Info("rendezvous: rank 0 waiting", "port", port, "ranks", o.Size-1, "timeout", o.Timeout)
	peers := make([]*peer, o.Size)
	got := 0
	fail := func(err error) ([]*peer, error) {
		for _, p := range peers {
			if p != nil {
				p.conn.SetDeadline(time.Now().Add(2 * time.Second))
				writeFrame(p, frame{kind: kindError, body: []byte("rank 0: " + err.Error())})
				p.conn.Close()
			}
		}
		return nil, err
	}
	for got < o.Size-1 {
		ln.(*net.TCPListener).SetDeadline(deadline)
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return fail(fmt.Errorf("rendezvous: rank 0 gave up: %w", ctx.Err()))
			}
			var missing []string
			for r := 1; r < o.Size; r++ {
				if peers[r] == nil {
					missing = append(missing, fmt.Sprint(r))
				}
			}
			if errors.Is(err, net.ErrClosed) || isTimeout(err) {
				return fail(fmt.Errorf("rendezvous on port %s: rank 0 of %d waited %s: %d of %d ranks connected, never came: ranks %s (were they started, with MASTER_ADDR pointing at this host?)",
					port, o.Size, o.Timeout.Round(time.Second), got, o.Size-1, strings.Join(missing, ", ")))
			}
			return fail(fmt.Errorf("rendezvous on port %s: accept: %w", port, err))
		}
		p := newPeer(conn)
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		hello, err := readFrame(p, 256)
		if err != nil || hello.kind != kindHello || string(hello.body) != magic {
			o.Log.Warn("rendezvous: ignoring a connection that is not a rella rank", "from", conn.RemoteAddr(), "err", err)
			conn.Close()
			continue
		}
		rank, size := int(hello.root), int(hello.count)
		switch {
		case size != o.Size:
			err = fmt.Errorf("rendezvous: rank %d (from %s) has world size %d, rank 0 has %d: the ranks were launched differently", rank, conn.RemoteAddr(), size, o.Size)
		case rank < 1 || rank >= o.Size:
			err = fmt.Errorf("rendezvous: a process from %s says it is rank %d, expected 1..%d", conn.RemoteAddr(), rank, o.Size-1)
		case peers[rank] != nil:
			err = fmt.Errorf("rendezvous: rank %d connected twice (from %s and %s)", rank, peers[rank].conn.RemoteAddr(), conn.RemoteAddr())
		}
		if err != nil {
			writeFrame(p, frame{kind: kindError, body: []byte("rank 0: " + err.Error())})
			conn.Close()
			return fail(err)
		}
		conn.SetDeadline(time.Time{})
		peers[rank] = p
		got++
		o.Log.Debug("rendezvous: rank connected", "rank", rank, "from", conn.RemoteAddr())
	}
	for r := 1; r < o.Size; r++ {
		if err := writeFrame(peers[r], frame{kind: kindWelcome}); err != nil {
			return fail(fmt.Errorf("rendezvous: rank %d: %w", r, err))
		}
	}
	o.Log.Info("rendezvous: every rank connected", "ranks", o.Size)
	return peers, nil
}

func dial(ctx context.Context, o TCPOptions, deadline time.Time) (*peer, error) {
	backoff := 50 * time.Millisecond
	var last error
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("rendezvous: rank %d of %d could not reach rank 0 at %s (MASTER_ADDR:MASTER_PORT) within %s; last error: %v",
				o.Rank, o.Size, o.Addr, o.Timeout.Round(time.Second), last)
		}
		d := net.Dialer{Timeout: min(left, 10*time.Second)}
		conn, err := d.DialContext(ctx, "tcp", o.Addr)
		if err == nil {
			p := newPeer(conn)
			conn.SetDeadline(deadline)
			stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
			err = writeFrame(p, frame{kind: kindHello, root: uint32(o.Rank), count: uint64(o.Size), body: []byte(magic)})
			var f frame
			if err == nil {
				f, err = readFrame(p, 0)
			}
			stop()
			switch {
			case err == nil && f.kind == kindWelcome:
				conn.SetDeadline(time.Time{})
				return p, nil
			case err == nil && f.kind == kindError:
				conn.Close()
				return nil, fmt.Errorf("rendezvous: rank %d: %s", o.Rank, f.body)
			case ctx.Err() != nil:
				conn.Close()
				return nil, fmt.Errorf("rendezvous: rank %d gave up: %w", o.Rank, ctx.Err())
			case isTimeout(err):
				conn.Close()
				return nil, fmt.Errorf("rendezvous: rank %d reached %s but not every rank arrived within %s", o.Rank, o.Addr, o.Timeout.Round(time.Second))
			}
			// Anything else (a reset, a stray server): retry.
			conn.Close()
			if err == nil {
				err = fmt.Errorf("unexpected reply of kind %d", f.kind)
			}
			last = err
		} else {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("rendezvous: rank %d gave up: %w", o.Rank, ctx.Err())
			}
			last = err
		}
		o.Log.Debug("rendezvous: rank 0 not reachable yet", "addr", o.Addr, "err", last)
		select {
		case <-time.After(min(backoff, time.Until(deadline))):
		case <-ctx.Done():
			return nil, fmt.Errorf("rendezvous: rank %d gave up: %w", o.Rank, ctx.Err())
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func newPeer(conn net.Conn) *peer {
	return &peer{conn: conn, r: bufio.NewReaderSize(conn, 1<<16), w: bufio.NewWriterSize(conn, 1<<16)}
}

// Rendezvous connects the group, hands rank 0's blob (NCCL's 128-byte
// unique id) to every rank, and closes the connections: what torch's
// TCPStore does before ncclCommInitRank. blob is ignored on ranks other
// than 0.
func Rendezvous(ctx context.Context, o TCPOptions, blob []byte) ([]byte, error) {
	c, err := ConnectTCP(ctx, o)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Broadcast(ctx, 0, blob)
}

func (c *TCP) Rank() int { return c.rank }
func (c *TCP) Size() int { return c.size }

// Close closes the connections; the other ranks' next calls fail.
func (c *TCP) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken == nil {
		c.broken = errors.New("communicator closed")
	}
	var errs []error
	for _, p := range c.peers {
		if p != nil {
			errs = append(errs, p.conn.Close())
		}
	}
	c.peers = nil
	return errors.Join(errs...)
}

func (c *TCP) AllReduceSumFloat32(ctx context.Context, x []float32) error {
	out, err := c.exchange(ctx, frame{kind: kindData, op: opSum32, count: uint64(len(x)), body: encode(x)})
	if err != nil {
		return err
	}
	decode(x, out)
	return nil
}

func (c *TCP) AllReduceSumFloat64(ctx context.Context, x []float64) error {
	out, err := c.exchange(ctx, frame{kind: kindData, op: opSum64, count: uint64(len(x)), body: encode(x)})
	if err != nil {
		return err
	}
	decode(x, out)
	return nil
}

func (c *TCP) Barrier(ctx context.Context) error {
	_, err := c.exchange(ctx, frame{kind: kindData, op: opBarrier})
	return err
}

func (c *TCP) Broadcast(ctx context.Context, root int, data []byte) ([]byte, error) {
	if root < 0 || root >= c.size {
		return nil, fmt.Errorf("broadcast from rank %d in a group of %d", root, c.size)
	}
	if c.rank != root {
		data = nil
	}
	if len(data) > maxBroadcast {
		return nil, fmt.Errorf("broadcast of %d bytes: at most %d", len(data), maxBroadcast)
	}
	out, err := c.exchange(ctx, frame{kind: kindData, op: opBroadcast, root: uint32(root), body: data})
	if err != nil {
		return nil, err
	}
	return append([]byte{}, out...), nil
}

// exchange runs one collective: every rank sends its frame to rank 0, rank
// 0 checks that they match, reduces them in rank order and sends the result
// to every rank. A failure breaks the communicator (later calls fail) and,
// from rank 0, is passed on to the other ranks.
func (c *TCP) exchange(ctx context.Context, mine frame) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	name := opNames[mine.op]
	if c.broken != nil {
		return nil, fmt.Errorf("rank %d: %s: %w", c.rank, name, c.broken)
	}
	if c.size == 1 {
		return mine.body, ctx.Err()
	}
	stop := context.AfterFunc(ctx, func() {
		for _, p := range c.peers {
			if p != nil {
				p.conn.SetDeadline(time.Unix(1, 0))
			}
		}
	})
	var out []byte
	var err error
	if c.rank == 0 {
		out, err = c.reduceAtRoot(mine)
	} else {
		out, err = c.sendToRoot(mine)
	}
	stop()
	if ctx.Err() != nil && err != nil {
		err = fmt.Errorf("rank %d gave up in %s: %w", c.rank, name, ctx.Err())
	}
	if err != nil {
		// The group is broken: rank 0 tells the others why, and every rank
		// closes its connections, so that a peer blocked sending or
		// receiving fails at once instead of waiting for its context.
		c.broken = err
		for _, p := range c.peers {
			if p != nil {
				if c.rank == 0 {
					p.conn.SetDeadline(time.Now().Add(2 * time.Second))
					writeFrame(p, frame{kind: kindError, body: []byte("rank 0: " + err.Error())})
				}
				p.conn.Close()
			}
		}
		return nil, err
	}
	return out, nil
}

// bodyLimit is the largest body a rank may send for the collective mine.
func bodyLimit(mine frame) uint64 {
	if mine.op == opBroadcast {
		return maxBroadcast
	}
	return uint64(len(mine.body))
}

func (c *TCP) reduceAtRoot(mine frame) ([]byte, error) {
	frames := make([]frame, c.size)
	frames[0] = mine
	for r := 1; r < c.size; r++ {
		f, n, err := readHeader(c.peers[r])
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("rank 0: %s: rank %d closed its connection (did it exit?)", opNames[mine.op], r)
			}
			return nil, fmt.Errorf("rank 0: %s: receiving from rank %d: %w", opNames[mine.op], r, err)
		}
		if f.kind != kindData || f.op != mine.op || f.count != mine.count || f.root != mine.root ||
			(mine.op != opBroadcast && n != uint64(len(mine.body))) {
			return nil, fmt.Errorf("ranks out of step: rank 0 called %s, rank %d %s", describeOp(mine), r, describeOp(f))
		}
		if n > bodyLimit(mine) {
			return nil, fmt.Errorf("rank 0: %s: rank %d sent %d bytes, at most %d", opNames[mine.op], r, n, bodyLimit(mine))
		}
		if err := readBody(c.peers[r], &f, n); err != nil {
			return nil, fmt.Errorf("rank 0: %s: receiving from rank %d: %w", opNames[mine.op], r, err)
		}
		frames[r] = f
	}
	var out []byte
	switch mine.op {
	case opSum32:
		out = encode(sumRanks(decodeAll[float32](frames)))
	case opSum64:
		out = encode(sumRanks(decodeAll[float64](frames)))
	case opBroadcast:
		out = frames[mine.root].body
	}
	for r := 1; r < c.size; r++ {
		if err := writeFrame(c.peers[r], frame{kind: kindData, op: mine.op, count: mine.count, body: out}); err != nil {
			return nil, fmt.Errorf("rank 0: %s: sending to rank %d: %w", opNames[mine.op], r, err)
		}
	}
	return out, nil
}

func (c *TCP) sendToRoot(mine frame) ([]byte, error) {
	p := c.peers[0]
	name := opNames[mine.op]
	if err := writeFrame(p, mine); err != nil {
		return nil, fmt.Errorf("rank %d: %s: sending to rank 0: %w", c.rank, name, err)
	}
	f, err := readFrame(p, bodyLimit(mine))
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("rank %d: %s: rank 0 closed its connection (did it exit?)", c.rank, name)
		}
		return nil, fmt.Errorf("rank %d: %s: receiving from rank 0: %w", c.rank, name, err)
	}
	if f.kind == kindError {
		return nil, fmt.Errorf("rank %d: %s: %s", c.rank, name, f.body)
	}
	if f.kind != kindData || f.op != mine.op || (mine.op != opBroadcast && len(f.body) != len(mine.body)) {
		return nil, fmt.Errorf("rank %d: %s: rank 0 answered %s", c.rank, name, describeOp(f))
	}
	return f.body, nil
}

func describeOp(f frame) string {
	switch f.op {
	case opSum32, opSum64:
		return fmt.Sprintf("%s of %d values", opNames[f.op], f.count)
	case opBroadcast:
		return fmt.Sprintf("Broadcast from rank %d", f.root)
	case opBarrier:
		return "Barrier"
	}
	return fmt.Sprintf("an unknown operation (kind %d, op %d)", f.kind, f.op)
}

// The wire holds float values little endian, IEEE 754 bits.

func encode[T float32 | float64](x []T) []byte {
	size := int(unsafe.Sizeof(T(0)))
	out := make([]byte, size*len(x))
	if littleEndian && len(x) > 0 {
		copy(out, unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), len(out)))
		return out
	}
	for i, v := range x {
		switch v := any(v).(type) {
		case float32:
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		case float64:
			binary.LittleEndian.PutUint64(out[8*i:], math.Float64bits(v))
		}
	}
	return out
}

// decode fills x from b (len(b) == len(x) * the element size).
func decode[T float32 | float64](x []T, b []byte) {
	if littleEndian && len(x) > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), len(b)), b)
		return
	}
	for i := range x {
		switch p := any(&x[i]).(type) {
		case *float32:
			*p = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		case *float64:
			*p = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		}
	}
}

func decodeAll[T float32 | float64](frames []frame) [][]T {
	xs := make([][]T, len(frames))
	for r, f := range frames {
		xs[r] = make([]T, f.count)
		decode(xs[r], f.body)
	}
	return xs
}

var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1
