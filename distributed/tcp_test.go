package distributed

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// freeAddr returns a loopback address with a port nobody listens on.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// connectAll connects n TCP ranks in goroutines of this process.
func connectAll(t testing.TB, n int) []*TCP {
	t.Helper()
	addr := freeAddr(t)
	comms := make([]*TCP, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := n - 1; r >= 0; r-- { // rank 0 last: the others retry until it listens
		wg.Go(func() {
			comms[r], errs[r] = ConnectTCP(context.Background(), TCPOptions{Addr: addr, Rank: r, Size: n, Timeout: 20 * time.Second})
		})
		time.Sleep(10 * time.Millisecond)
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	t.Cleanup(func() {
		for _, c := range comms {
			c.Close()
		}
	})
	return comms
}

func TestTCPGoroutines(t *testing.T) {
	for _, n := range []int{1, 2, 4} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			tcp := connectAll(t, n)
			comms := make([]Communicator, n)
			for r := range comms {
				comms[r] = tcp[r]
			}
			checkResults(t, n, runAll(t, comms))
		})
	}
}

func TestTCPOutOfStep(t *testing.T) {
	c := connectAll(t, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	wg.Go(func() { errs[0] = c[0].AllReduceSumFloat32(context.Background(), make([]float32, 4)) })
	wg.Go(func() { errs[1] = c[1].AllReduceSumFloat32(context.Background(), make([]float32, 4)) })
	wg.Go(func() { errs[2] = c[2].AllReduceSumFloat32(context.Background(), make([]float32, 5)) })
	wg.Wait()
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "out of step: rank 0 called AllReduceSumFloat32 of 4 values, rank 2 AllReduceSumFloat32 of 5 values") {
			t.Errorf("rank %d: %v", r, err)
		}
	}
	if err := c[1].Barrier(context.Background()); err == nil {
		t.Error("a call after the group broke succeeded")
	}
}

// TestTCPRankLeaves: a rank that exits makes the others' next collective
// fail with an error naming it, not hang.
func TestTCPRankLeaves(t *testing.T) {
	c := connectAll(t, 3)
	c[2].Close()
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		wg.Go(func() { errs[r] = c[r].AllReduceSumFloat64(context.Background(), []float64{1, 2}) })
	}
	wg.Wait()
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "rank 2 closed its connection") {
			t.Errorf("rank %d: %v", r, err)
		}
	}

	// Rank 0 leaving: the others are told it closed.
	c = connectAll(t, 2)
	c[0].Close()
	if err := c[1].Barrier(context.Background()); err == nil || !strings.Contains(err.Error(), "rank 0 closed its connection") {
		t.Errorf("rank 1 after rank 0 left: %v", err)
	}
}

func TestTCPContext(t *testing.T) {
	c := connectAll(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	// Rank 1 never joins this barrier.
	if err := c[0].Barrier(ctx); err == nil || !strings.Contains(err.Error(), "rank 0 gave up in Barrier") {
		t.Errorf("rank 0: %v", err)
	}
	if err := c[1].Barrier(context.Background()); err == nil {
		t.Error("rank 1's barrier succeeded after rank 0 gave up")
	}
}

func TestRendezvousTimeouts(t *testing.T) {
	addr := freeAddr(t)
	// Rank 0 alone in a group of 3.
	start := time.Now()
	_, err := ConnectTCP(context.Background(), TCPOptions{Addr: addr, Rank: 0, Size: 3, Timeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "never came: ranks 1, 2") || !strings.Contains(err.Error(), "0 of 2 ranks connected") {
		t.Errorf("rank 0 alone: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("rank 0 waited %s for a 300ms timeout", d)
	}
	// Rank 1 with nobody listening.
	_, err = ConnectTCP(context.Background(), TCPOptions{Addr: addr, Rank: 1, Size: 2, Timeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "could not reach rank 0 at "+addr) || !strings.Contains(err.Error(), "refused") {
		t.Errorf("rank 1 alone: %v", err)
	}
	// A context that ends first.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err = ConnectTCP(ctx, TCPOptions{Addr: addr, Rank: 0, Size: 2, Timeout: time.Minute})
	if err == nil || !strings.Contains(err.Error(), "gave up") {
		t.Errorf("cancelled rank 0: %v", err)
	}
	// Rank 1 of 3 reaches rank 0, but rank 2 never comes.
	addr = freeAddr(t)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		wg.Go(func() {
			_, errs[r] = ConnectTCP(context.Background(), TCPOptions{Addr: addr, Rank: r, Size: 3, Timeout: 500 * time.Millisecond})
		})
	}
	wg.Wait()
	if errs[0] == nil || !strings.Contains(errs[0].Error(), "never came: ranks 2") {
		t.Errorf("rank 0: %v", errs[0])
	}
	if errs[1] == nil || !(strings.Contains(errs[1].Error(), "never came: ranks 2") || strings.Contains(errs[1].Error(), "not every rank arrived")) {
		t.Errorf("rank 1: %v", errs[1])
	}
}

// TestRendezvousMismatch: a rank launched with another world size, or a
// rank taken twice, fails the rendezvous on both sides with a message that
// says so.
func TestRendezvousMismatch(t *testing.T) {
	for _, c := range []struct {
		name  string
		ranks [][2]int // rank, size of each process besides rank 0 of 3
		say   string
	}{
		{"size", [][2]int{{1, 2}}, "rank 1 (from 127.0.0.1:"},
		{"twice", [][2]int{{1, 3}, {1, 3}}, "rank 1 connected twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := freeAddr(t)
			errs := make([]error, 1+len(c.ranks))
			var wg sync.WaitGroup
			wg.Go(func() {
				_, errs[0] = ConnectTCP(context.Background(), TCPOptions{Addr: addr, Rank: 0, Size: 3, Timeout: 10 * time.Second})
			})
			for i, rs := range c.ranks {
				wg.Go(func() {
					time.Sleep(time.Duration(i) * 100 * time.Millisecond)
					_, errs[i+1] = ConnectTCP(context.Background(), TCPOptions{Addr: addr, Rank: rs[0], Size: rs[1], Timeout: 2 * time.Second})
				})
			}
			wg.Wait()
			for i, err := range errs {
				if err == nil || !strings.Contains(err.Error(), c.say) {
					t.Errorf("process %d: %v, want %q", i, err, c.say)
				}
			}
		})
	}
}

// A stray connection (a port scanner, a health check) is ignored.
func TestRendezvousIgnoresStrangers(t *testing.T) {
	addr := freeAddr(t)
	done := make(chan error)
	go func() {
		c, err := ConnectTCP(context.Background(), TCPOptions{Addr: addr, Rank: 0, Size: 2, Timeout: 10 * time.Second})
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	var conn net.Conn
	for i := 0; i < 100; i++ {
		var err error
		if conn, err = net.Dial("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if conn == nil {
		t.Fatal("rank 0 never listened")
	}
	conn.Write([]byte("GET / HTTP/1.0\r\n\r\n" + strings.Repeat("x", 64)))
	conn.Close()
	c, err := ConnectTCP(context.Background(), TCPOptions{Addr: addr, Rank: 1, Size: 2, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// helperEnv marks a run of this test binary as one rank of
// TestRendezvousProcesses.
const helperEnv = "RELLA_DISTRIBUTED_TEST_RANK"

// TestHelperRank is not a test: run by TestRendezvousProcesses as a child
// process with the launcher's variables, it is one rank, reads who it is
// from the environment as rella train will, and prints what it got as JSON.
func TestHelperRank(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("child process of TestRendezvousProcesses")
	}
	fail := func(err error) {
		fmt.Fprintf(os.Stdout, "ERROR %v\n", err)
		os.Exit(3)
	}
	l, err := Detect(os.LookupEnv)
	if err != nil {
		fail(err)
	}
	addr, err := Endpoint(os.LookupEnv)
	if err != nil {
		fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o := TCPOptions{Addr: addr, Rank: l.Rank, Size: l.Size, Timeout: 30 * time.Second}
	// NCCL's unique id: 128 bytes made by rank 0.
	var id []byte
	if l.Rank == 0 {
		id = []byte(fmt.Sprintf("id-of-pid-%08d|", os.Getpid()))
		for i := len(id); i < 128; i++ {
			id = append(id, byte(i))
		}
	}
	got, err := Rendezvous(ctx, o, id)
	if err != nil {
		fail(err)
	}
	c, err := ConnectTCP(ctx, o)
	if err != nil {
		fail(err)
	}
	res := runCollectives(ctx, c)
	if err := c.Close(); err != nil {
		fail(err)
	}
	out, _ := json.Marshal(struct {
		Launch Launch
		ID     []byte
		Result rankResult
	}{l, got, res})
	fmt.Fprintf(os.Stdout, "RESULT %s\n", out)
	os.Exit(0)
}

// TestRendezvousProcesses runs 2 and 4 OS processes (this test binary,
// re-executed) as torchrun, Slurm or Open MPI would start them, over
// loopback: rank 0 hands its 128-byte id to all, then every collective is
// checked against the rank-order sums.
func TestRendezvousProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	for _, c := range []struct {
		n        int
		launcher string
		vars     func(r, n int) []string
	}{
		{2, "torchrun", func(r, n int) []string {
			return []string{fmt.Sprintf("RANK=%d", r), fmt.Sprintf("WORLD_SIZE=%d", n), fmt.Sprintf("LOCAL_RANK=%d", r)}
		}},
		{4, "slurm", func(r, n int) []string {
			return []string{fmt.Sprintf("SLURM_PROCID=%d", r), fmt.Sprintf("SLURM_NTASKS=%d", n), fmt.Sprintf("SLURM_LOCALID=%d", r%2)}
		}},
		{3, "openmpi", func(r, n int) []string {
			return []string{fmt.Sprintf("OMPI_COMM_WORLD_RANK=%d", r), fmt.Sprintf("OMPI_COMM_WORLD_SIZE=%d", n), fmt.Sprintf("OMPI_COMM_WORLD_LOCAL_RANK=%d", r)}
		}},
	} {
		t.Run(fmt.Sprintf("%s-%d", c.launcher, c.n), func(t *testing.T) {
			host, port, _ := net.SplitHostPort(freeAddr(t))
			outs := make([]bytes.Buffer, c.n)
			cmds := make([]*exec.Cmd, c.n)
			var base []string
			for _, kv := range os.Environ() {
				k, _, _ := strings.Cut(kv, "=")
				switch k {
				case "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT":
				default:
					if !strings.HasPrefix(k, "SLURM_") && !strings.HasPrefix(k, "OMPI_") {
						base = append(base, kv)
					}
				}
			}
			// Rank 0 starts last, so the others exercise the retry.
			for r := c.n - 1; r >= 0; r-- {
				cmd := exec.Command(os.Args[0], "-test.run=^TestHelperRank$", "-test.count=1")
				cmd.Env = append(append([]string{}, base...), helperEnv+"=1", "MASTER_ADDR="+host, "MASTER_PORT="+port)
				cmd.Env = append(cmd.Env, c.vars(r, c.n)...)
				cmd.Stdout, cmd.Stderr = &outs[r], &outs[r]
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				cmds[r] = cmd
				time.Sleep(50 * time.Millisecond)
			}
			results := make([]rankResult, c.n)
			var id0 []byte
			for r, cmd := range cmds {
				err := cmd.Wait()
				out := outs[r].String()
				i := strings.Index(out, "RESULT ")
				if err != nil || i < 0 {
					t.Fatalf("rank %d: %v\n%s", r, err, out)
				}
				var got struct {
					Launch Launch
					ID     []byte
					Result rankResult
				}
				line, _, _ := strings.Cut(out[i+len("RESULT "):], "\n")
				if err := json.Unmarshal([]byte(line), &got); err != nil {
					t.Fatalf("rank %d: %v\n%s", r, err, out)
				}
				if got.Launch.Rank != r || got.Launch.Size != c.n || got.Launch.Launcher != c.launcher {
					t.Fatalf("rank %d detected %+v", r, got.Launch)
				}
				if len(got.ID) != 128 || !strings.HasPrefix(string(got.ID), "id-of-pid-") {
					t.Fatalf("rank %d got id %q", r, got.ID)
				}
				if r == 0 {
					id0 = got.ID
					if want := fmt.Sprintf("id-of-pid-%08d|", cmd.Process.Pid); !strings.HasPrefix(string(id0), want) {
						t.Fatalf("rank 0's id %q is not its own (%q)", id0, want)
					}
				} else if !bytes.Equal(got.ID, id0) {
					t.Fatalf("rank %d got id %q, rank 0 made %q", r, got.ID, id0)
				}
				results[r] = got.Result
			}
			checkResults(t, c.n, results)
		})
	}
}

// BenchmarkTCPAllReduce: one all-reduce of the LoRA gradients of a 13B
// LLaMA with r=8 on q_proj and v_proj (40 layers x 2 matrices x
// (5120x8 + 8x5120) = 6,553,600 float32, 26 MB) over loopback.
func BenchmarkTCPAllReduce(b *testing.B) {
	for _, n := range []int{2, 4} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			comms := connectAll(b, n)
			const size = 40 * 2 * (5120*8 + 8*5120)
			bufs := make([][]float32, n)
			for r := range bufs {
				bufs[r] = make([]float32, size)
			}
			b.SetBytes(4 * size)
			b.ResetTimer()
			for range b.N {
				var wg sync.WaitGroup
				for r, c := range comms {
					wg.Go(func() {
						if err := c.AllReduceSumFloat32(context.Background(), bufs[r]); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
			}
		})
	}
}

// TestWireEncoding: the native little-endian fast path and the portable
// path write and read the same bytes.
func TestWireEncoding(t *testing.T) {
	x32, x64 := rankData32(5, 99), rankData64(5, 99)
	fast32, fast64 := encode(x32), encode(x64)
	saved := littleEndian
	littleEndian = false
	slow32, slow64 := encode(x32), encode(x64)
	back32, back64 := make([]float32, 99), make([]float64, 99)
	decode(back32, fast32)
	decode(back64, fast64)
	littleEndian = saved
	if !bytes.Equal(fast32, slow32) || !bytes.Equal(fast64, slow64) {
		t.Fatal("the fast and portable encodings differ")
	}
	for i := range x32 {
		if back32[i] != x32[i] || back64[i] != x64[i] {
			t.Fatalf("[%d]: decoded %g %g, want %g %g", i, back32[i], back64[i], x32[i], x64[i])
		}
	}
	if !saved {
		t.Log("big-endian machine: only the portable path ran")
	}
}
